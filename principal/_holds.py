"""Holding agents: a replica must hold an agent's session entry to serve it.

`RedisHolds` keeps the entries in the session registry (TTL + fencing token),
renews them in one round trip per period, and self-fences: a session whose entry is
lost, or every session once Redis has not confirmed them within the local deadline,
is closed. `LocalHolds` is for a lone replica without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from principal import _registry as registry

__all__ = ["HeldElsewhere", "LocalHolds", "RedisHolds"]

logger = logging.getLogger(__name__)


class HeldElsewhere(Exception):
    def __init__(self, agent: str, holder: str) -> None:
        super().__init__(f"agent {agent} is still held by replica {holder}; retry shortly")
        self.holder = holder


class LocalHolds:
    """Tokens from a local counter: correct only while this is the only replica."""

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self._token = 0

    async def acquire(self, agent: str, *, session: str, epoch: int) -> int:
        self._token += 1
        return self._token

    async def release(self, agent: str, *, token: int) -> None:
        return None

    async def run(self, on_lost: Callable[[str, int], None]) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class RedisHolds:
    def __init__(
        self,
        reg: registry.SessionRegistry,
        *,
        replica: str,
        handoff_wait: float = 2.0,  # seconds to wait for a previous holder to release
        safety: float = 0.8,  # fraction of the TTL we trust an unconfirmed entry for
    ) -> None:
        self.registry = reg
        self.replica = replica
        self.handoff_wait = handoff_wait
        self.safety = safety
        self.held: dict[str, int] = {}  # agent -> token
        self.confirmed_at: float = time.monotonic()
        self.errors = 0

    async def acquire(self, agent: str, *, session: str, epoch: int) -> int:
        deadline = time.monotonic() + self.handoff_wait
        while True:
            ok, holder, token = await self.registry.acquire(
                agent, replica=self.replica, epoch=epoch, session=session
            )
            if ok:
                self.held[agent] = token
                await self.registry.touch(agent)
                return token
            if time.monotonic() > deadline:
                raise HeldElsewhere(agent, holder)
            await asyncio.sleep(0.05)

    async def release(self, agent: str, *, token: int) -> None:
        if self.held.get(agent) == token:
            del self.held[agent]
        try:
            await self.registry.release(agent, replica=self.replica, token=token)
        except registry.RegistryError as err:
            # The entry expires by its TTL; nobody else can take it before then.
            logger.warning("could not release agent %s (expires by TTL): %s", agent, err)

    def deadline_passed(self) -> bool:
        return time.monotonic() - self.confirmed_at > self.registry.ttl * self.safety

    async def run(self, on_lost: Callable[[str, int], None]) -> None:
        """Renew every held entry each ttl/3; report lost ones; self-fence on silence."""
        period = self.registry.ttl / 3
        while True:
            await asyncio.sleep(period)
            snapshot = dict(self.held)
            started = time.monotonic()
            try:
                results = await self.registry.renew_many(snapshot, replica=self.replica)
            except registry.RegistryError as err:
                self.errors += 1
                logger.warning("session registry renew failed: %s", err)
                if self.deadline_passed():
                    for agent, token in list(self.held.items()):
                        on_lost(agent, token)
                continue
            self.confirmed_at = started
            for agent, still in results.items():
                if not still and self.held.get(agent) == snapshot[agent]:
                    logger.warning("lost the session entry of agent %s", agent)
                    on_lost(agent, snapshot[agent])

    async def close(self) -> None:
        await self.registry.close()
