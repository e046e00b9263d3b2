"""A replica's long-lived tasks, supervised: what happens when one fails unexpectedly.

Each task runs under a policy (the replica's table is `principal._server.POLICIES`):

- RESTART: the task starts again after a capped exponential backoff with jitter
  (`Backoff`); until it does, `down` names it and the replica is not ready.
- FATAL: the replica fences itself (`on_fatal`: it closes every session) and `fatal` is
  set; `principal serve` then stops the replica and exits with EXIT_FATAL, so that
  whatever runs it (systemd, Kubernetes) starts a fresh process.

Either way the failure is logged once, at ERROR with its traceback, the task's name and
the replica's id, and counted in `mooring_task_failures_total{task}`. Cancellation (a
shutdown) is no failure; a task that returns is done, and not restarted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import random
from collections.abc import Awaitable, Callable

import prometheus_client as prom

from proto import logfields

__all__ = ["EXIT_FATAL", "Backoff", "Policy", "Supervisor"]

logger = logging.getLogger(__name__)

EXIT_FATAL = 3
"""`principal serve`'s exit status once a FATAL task failed (1: it could not start)."""


class Policy(enum.Enum):
    RESTART = "restart"
    FATAL = "fatal"


@dataclasses.dataclass(frozen=True, slots=True)
class Backoff:
    """How long a failed RESTART task waits before it starts again."""

    first: float = 0.1
    """Seconds before the first restart."""
    cap: float = 5.0
    """Seconds: the longest wait (from the seventh failure in a row)."""
    reset_after: float = 30.0
    """Seconds a run must have lasted for its failure to count as a first one again."""

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.cap:
            raise ValueError(f"backoff needs 0 < first <= cap, got {self.first} and {self.cap}")
        if self.reset_after <= 0:
            raise ValueError(f"reset_after must be positive, got {self.reset_after}")

    def delay(self, failures: int) -> float:
        """Seconds before restart number `failures` (1, 2, ...): `first`, doubled at each
        failure up to `cap`, then between half and all of that at random, so that replicas
        hit by one cause do not restart in step."""
        base = min(self.cap, self.first * 2.0 ** min(failures - 1, 64))
        return random.uniform(base / 2, base)


def _describe(err: BaseException) -> str:
    """`Type: first line` of what failed, looking through task groups of one error."""
    while isinstance(err, BaseExceptionGroup) and len(err.exceptions) == 1:
        err = err.exceptions[0]
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


class Supervisor:
    """Starts a replica's long-lived tasks and applies each one's policy when it fails."""

    def __init__(
        self,
        *,
        replica: str,
        failures: prom.Counter,
        on_fatal: Callable[[str], None],
        backoff: Backoff | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.replica = replica
        self.backoff = backoff or Backoff()
        self._failures = failures  # mooring_task_failures_total, labelled by task
        self._on_fatal = on_fatal  # the name of the FATAL task that failed first
        self._sleep = sleep
        self._clock = clock  # seconds; the event loop's clock when None
        self.down: frozenset[str] = frozenset()
        """RESTART tasks between a failure and their restart. Replaced, never changed in
        place: the metrics server's thread reads it (for readiness)."""
        self.failed: str | None = None
        """The FATAL task that failed first, once one has."""
        self.fatal = asyncio.Event()
        """Set once a FATAL task has failed (after `on_fatal`)."""

    def supervise(
        self, name: str, factory: Callable[[], Awaitable[None]], *, policy: Policy
    ) -> asyncio.Task[None]:
        """Run `factory()` as task `name` under `policy` (its failures series starts at 0)."""
        self._failures.labels(name)
        return asyncio.create_task(self._keep(name, factory, policy), name=name)

    async def _keep(
        self, name: str, factory: Callable[[], Awaitable[None]], policy: Policy
    ) -> None:
        now = self._clock or asyncio.get_running_loop().time
        failures = 0
        while True:
            began = now()
            try:
                await factory()
            except asyncio.CancelledError as err:
                if _being_cancelled():
                    raise  # a shutdown
                failure: BaseException = err  # a cancellation of its own work leaked out
            except Exception as err:
                failure = err
            else:
                return
            failures = 1 if now() - began >= self.backoff.reset_after else failures + 1
            self._failures.labels(name).inc()
            what = _describe(failure)
            fields = logfields.of(replica=self.replica, task=name, reason=policy.value, error=what)
            if policy is Policy.FATAL:
                logger.error(
                    "task %s failed: %s; replica %s fences itself (closes every session)"
                    " and stops (exit status %d)",
                    name,
                    what,
                    self.replica,
                    EXIT_FATAL,
                    exc_info=failure,
                    extra=fields,
                )
                if self.failed is None:
                    self.failed = name
                    self._on_fatal(name)
                self.fatal.set()
                return
            delay = self.backoff.delay(failures)
            logger.error(
                "task %s failed: %s; restarting in %.2fs",
                name,
                what,
                delay,
                exc_info=failure,
                extra=fields,
            )
            self.down = self.down | {name}
            try:
                await self._sleep(delay)
            finally:
                self.down = self.down - {name}


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0
