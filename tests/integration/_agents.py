"""In-process replicas and agents, for the integration tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

from agent import _client as agent_client
from agent import _settings as agent_settings
from mooring import _services as services
from principal import _server as server
from tests import _procs as procs


@contextlib.asynccontextmanager
async def serving(
    pki_dir: Path, etcd: services.EtcdCluster, *, root: str, **settings: Any
) -> AsyncIterator[server.Replica]:
    """Replica p1 on `etcd` under store root `root` (PrincipalSettings `settings` beside),
    started, and stopped when the block ends."""
    replica = server.Replica(
        procs.replica_settings(
            "p1",
            coordination=etcd.url,
            store_root=root,
            tls_dir=pki_dir / "principals" / "p1",
            **settings,
        )
    )
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


@contextlib.asynccontextmanager
async def running(
    replica: server.Replica,
    name: str,
    tls_dir: Path,
    state: Path,
    *,
    mode: Literal["managed", "autonomous"] = "managed",
    interval: float = 1.0,
    **settings: Any,
) -> AsyncIterator[agent_client.Agent]:
    """Agent `name` with the certificate in `tls_dir`, dialling `replica`, until the block
    ends; `interval` is its refused_retry_interval (seconds), AgentSettings `settings`
    beside."""
    agent = agent_client.Agent(
        agent_settings.AgentSettings(
            name=name,
            mode=mode,
            endpoints=(f"127.0.0.1:{replica.port}",),
            tls_dir=tls_dir,
            state=state,
            refused_retry_interval=interval,
            **settings,
        )
    )
    task = asyncio.create_task(agent.run(), name=f"agent-{name}")
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def rejected(replica: server.Replica, reason: str) -> float:
    """Hellos the replica refused with `reason` (one per attempt of an agent)."""
    return float(replica.metrics.sessions_rejected.labels(reason)._value.get())
