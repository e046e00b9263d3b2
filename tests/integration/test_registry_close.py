"""A registry closed while cancelled callers' commands are still in flight: close() lets
them finish, and leaves no connection of the registry open on the server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import redis

from mooring import _services as services
from principal import _registry as registry

pytestmark = pytest.mark.integration


async def test_close_waits_for_abandoned_commands_and_leaves_no_connection(
    redis_server: services.RedisServer,
) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    baseline = len(admin.client_list())
    reg = registry.SessionRegistry(redis_server.url, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    try:
        await reg.entries()  # one connection open in the pool
        assert len(admin.client_list()) == baseline + 1
        admin.execute_command("CLIENT", "PAUSE", 300, "ALL")  # commands wait 0.3 s
        calls: list[asyncio.Task[Any]] = [asyncio.ensure_future(reg.entries()) for _ in range(3)]
        await asyncio.sleep(0.05)
        for call in calls:
            call.cancel()  # the callers go; their commands stay in flight
        await asyncio.gather(*calls, return_exceptions=True)
        began = asyncio.get_running_loop().time()
        await reg.close()
        waited = asyncio.get_running_loop().time() - began
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    # close() waited for the paused commands rather than cut them off mid-flight (a
    # release abandoned at shutdown still frees its entry for the next replica).
    assert 0.15 < waited < reg.timeout + 0.5, waited
    await asyncio.sleep(0.1)
    assert len(admin.client_list()) == baseline, admin.client_list()
    admin.close()
