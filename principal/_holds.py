"""Holding agents: a replica must hold an agent's session entry to serve it.

`RedisHolds` keeps the entries in the session registry (TTL + fencing token), beats
the replica's liveness key, renews the entries in one round trip per period, and
self-fences: a session whose entry is lost, or every session the moment the liveness
key goes unconfirmed too long, is closed. `LocalHolds` is for a lone replica without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

from principal import _errors as errors
from principal import _registry as registry
from proto import logfields

__all__ = ["HeldElsewhere", "LocalHolds", "RedisHolds"]

logger = logging.getLogger(__name__)


BEAT_FRACTION = 0.2
"""A replica beats its liveness key every this fraction of its TTL; a beat call may take
as long, so one failed beat is followed by another before the fence (75 %)."""
POLL_SECONDS = 0.1
"""How often a live holder's entry is asked for again while it hands the agent over."""
EXPIRY_MARGIN = 0.002
"""Seconds past a dead holder's liveness expiry before asking again (Redis expires on read)."""


class HeldElsewhere(errors.PrincipalError):
    def __init__(self, agent: str, holder: str) -> None:
        super().__init__(f"agent {agent} is still held by replica {holder}; retry shortly")
        self.holder = holder


class LocalHolds:
    """Tokens from a local counter: correct only while this is the only replica."""

    shared = False  # holds are not visible to other replicas: no stand-ins

    def __init__(self, replica: str) -> None:
        self.replica = replica
        self._token = 0

    async def acquire(self, agent: str, *, session: str, epoch: int, unreachable: str = "") -> int:
        self._token += 1
        return self._token

    async def release(self, agent: str, *, token: int) -> None:
        return None

    def is_fenced(self) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def run(self, on_lost: Callable[[str, int], None]) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class RedisHolds:
    shared = True  # every replica sees the same entries: stand-ins stay single-holder

    def __init__(
        self,
        reg: registry.SessionRegistry,
        *,
        replica: str,
        handoff_wait: float | None = None,  # seconds to wait for a previous holder to let go
        alive_ttl: float = 1.0,  # seconds our liveness key lives without a beat
        fence_at: float = 0.75,  # fraction of alive_ttl after an unconfirmed beat we fence at
        on_error: Callable[[], None] | None = None,  # each failed beat or renewal (any thread)
    ) -> None:
        if not 0 < fence_at < 1:
            raise ValueError("fence_at must be a fraction between 0 and 1")
        self.registry = reg
        self.replica = replica
        # Long enough to outwait a dead holder's liveness key (the TTL every replica uses).
        self.handoff_wait = handoff_wait if handoff_wait is not None else max(2.0, 2 * alive_ttl)
        self.alive_ttl = alive_ttl
        self.fence_after = alive_ttl * fence_at  # seconds since the last confirmed beat
        self.beat_every = alive_ttl * BEAT_FRACTION
        self.held: dict[str, int] = {}  # agent -> token
        # time.monotonic() at the start of the last confirmed beat: written by the beat
        # thread, so it and every reading against it (the fence) stay off the loop's clock.
        self.confirmed_at: float | None = None
        self.errors = 0
        self._on_error = on_error
        self._beating: threading.Thread | None = None
        self._halt = threading.Event()

    def is_fenced(self) -> bool:
        """True once our liveness is unconfirmed for too long: serve nobody."""
        return self.confirmed_at is None or time.monotonic() - self.confirmed_at > self.fence_after

    def _beat(self) -> None:
        started = time.monotonic()
        self.registry.beat_blocking(self.replica, ttl=self.alive_ttl)
        self.confirmed_at = started  # one float store: read by the loop without a lock

    def _beat_forever(self) -> None:
        """The beat thread. It shares nothing with the event loop but `confirmed_at`, so
        a loop busy with a reconnect storm (or a long GC pause of its tasks) cannot let
        the key lapse while the process is alive and reaches Redis. A stopped process or
        a lost Redis stops the beats, and then the key expires and the watchdog fences."""
        # A fixed rate from each beat's start (not a pause after it), so a failed beat
        # that took its whole timeout is still retried well before the fence.
        next_at = time.monotonic() + self.beat_every
        while not self._halt.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + self.beat_every, time.monotonic())
            try:
                self._beat()
            except Exception as err:
                self._failed("beat", err)

    async def start(self) -> None:
        """Beat once before serving (without our liveness key, others may take our
        entries), then keep beating on a thread of our own."""
        try:
            await asyncio.to_thread(self._beat)
        except registry.RegistryError as err:
            logger.warning(
                "session registry unreachable at start (agents wait): %s",
                err,
                extra=logfields.of(replica=self.replica, reason="registry", error=str(err)),
            )
        self._beating = threading.Thread(
            target=self._beat_forever, name=f"liveness:{self.replica}", daemon=True
        )
        self._beating.start()

    async def acquire(self, agent: str, *, session: str, epoch: int, unreachable: str = "") -> int:
        """Take the agent's entry, waiting up to handoff_wait for its holder to let go.

        A live holder releases as its session ends: poll every 0.1 s. A holder the agent
        cannot reach (`unreachable`) is dead or cut off: wait once for the moment its
        liveness key expires, which Redis tells us to the millisecond. If it is still
        alive then, it is only cut off from the agent and lets go when its own heartbeat
        timeout ends that session: poll again, so the entry is taken within 0.1 s of that.
        """
        if self.is_fenced():
            raise registry.RegistryError(
                "this replica's liveness is unconfirmed (Redis unreachable?)"
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.handoff_wait
        outwaited = False  # we waited once for the unreachable holder's liveness to expire
        while True:
            ok, holder, token, alive = await self.registry.acquire(
                agent, replica=self.replica, epoch=epoch, session=session
            )
            if ok:
                self.held[agent] = token
                if self.is_fenced():  # our liveness lapsed while we waited: hand it back
                    await self.release(agent, token=token)
                    raise registry.RegistryError(
                        "this replica's liveness lapsed while it waited for the entry"
                    )
                return token
            left = deadline - loop.time()
            if left <= 0:
                raise HeldElsewhere(agent, holder)
            wait = POLL_SECONDS
            if holder == unreachable and alive > 0 and not outwaited:
                wait = alive + EXPIRY_MARGIN
                outwaited = True
            await asyncio.sleep(min(wait, left))

    async def release(self, agent: str, *, token: int) -> None:
        if self.held.get(agent) == token:
            del self.held[agent]
        try:
            await self.registry.release(agent, replica=self.replica, token=token)
        except registry.RegistryError as err:
            # The entry expires by its TTL; nobody else can take it before then.
            logger.warning(
                "could not release agent %s (expires by TTL): %s",
                agent,
                err,
                extra=logfields.of(
                    agent=agent,
                    replica=self.replica,
                    fencing_token=token,
                    reason="registry",
                    error=str(err),
                ),
            )

    async def run(self, on_lost: Callable[[str, int], None]) -> None:
        """Renew held entries every ttl/3 and fence the moment liveness lapses (the
        liveness beat itself runs on its own thread, started by `start`)."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._renewals(on_lost), name=f"holds:{self.replica}:renew")
            group.create_task(self._watchdog(on_lost), name=f"holds:{self.replica}:fence")

    async def _renewals(self, on_lost: Callable[[str, int], None]) -> None:
        while True:
            await asyncio.sleep(self.registry.ttl / 3)
            if not self.is_fenced():
                await self._renew(on_lost)

    def _failed(self, call: str, err: Exception) -> None:
        """A beat or renewal failed (on any thread): count it and say so once."""
        self.errors += 1
        if self._on_error is not None:
            self._on_error()
        logger.warning(
            "session registry %s failed: %s",
            call,
            err,
            extra=logfields.of(replica=self.replica, reason="registry", error=str(err)),
        )

    async def _renew(self, on_lost: Callable[[str, int], None]) -> None:
        snapshot = dict(self.held)
        try:
            results = await self.registry.renew_many(snapshot, replica=self.replica)
        except registry.RegistryError as err:
            self._failed("renew", err)
            return
        for agent, still in results.items():
            if not still and self.held.get(agent) == snapshot[agent]:
                logger.warning(
                    "lost the session entry of agent %s",
                    agent,
                    extra=logfields.of(
                        agent=agent,
                        replica=self.replica,
                        fencing_token=snapshot[agent],
                        reason="self_fence",
                    ),
                )
                on_lost(agent, snapshot[agent])

    async def _watchdog(self, on_lost: Callable[[str, int], None]) -> None:
        """Close every held session at the exact moment our liveness lapses."""
        while True:
            confirmed = self.confirmed_at or time.monotonic()
            await asyncio.sleep(max(0.0, confirmed + self.fence_after - time.monotonic()) + 0.001)
            if self.is_fenced() and self.held:
                logger.warning(
                    "liveness unconfirmed for %.2fs: closing %d session(s) (self-fence)",
                    time.monotonic() - (self.confirmed_at or 0.0),
                    len(self.held),
                    extra=logfields.of(replica=self.replica, reason="self_fence"),
                )
                for agent, token in list(self.held.items()):
                    on_lost(agent, token)
                await asyncio.sleep(self.beat_every)

    async def close(self) -> None:
        self._halt.set()
        if self._beating is not None:
            await asyncio.to_thread(self._beating.join)
        self.registry.close_blocking()
        try:
            await self.registry.forget(self.replica)
        except registry.RegistryError:
            pass  # the key expires by its TTL
        await self.registry.close()
