"""The wait between failed sweeps, as a tenacity policy, and the sleep `stop()` interrupts.

Full-jitter exponential, capped; at least as long as a replica asked for (up to half
again), and the long `refused_retry_interval` after a refusal no retry cures.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

import tenacity

from agent import _errors as errors
from agent import _outcome as outcome_

__all__ = ["SweepFailed", "retrying", "sleep", "wait"]

Wait = Callable[[tenacity.RetryCallState], float]


class SweepFailed(errors.AgentError):
    """Every endpoint of one sweep failed; `refused` when one refused us for good;
    `retry_after` the longest wait a replica asked for (None: none asked)."""

    def __init__(
        self, message: str, *, refused: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.refused = refused
        self.retry_after = retry_after


def wait(*, base: float, cap: float, refused_interval: float) -> Wait:
    """tenacity's wait: full-jitter exponential after a failed sweep, but the long
    `refused_interval` after one in which a replica refused us for good."""
    jittered = tenacity.wait_random_exponential(multiplier=base, max=cap)

    def waited(state: tenacity.RetryCallState) -> float:
        failed = state.outcome.exception() if state.outcome is not None else None
        if isinstance(failed, SweepFailed) and failed.refused:
            return refused_interval
        wait = jittered(state)
        if isinstance(failed, SweepFailed) and failed.retry_after:
            # As long as asked, and up to half again: a crowd refused together
            # does not come back together.
            wait = max(wait, failed.retry_after * random.uniform(1.0, 1.5))
        return wait

    return waited


def retrying(waiting: Wait, *, sleep: Callable[[float], Awaitable[None]]) -> tenacity.AsyncRetrying:
    """Sweep again while a sweep raises SweepFailed, `waiting` between, asleep in `sleep`."""
    return tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(SweepFailed),
        wait=waiting,
        sleep=sleep,
        reraise=True,
    )


async def sleep(seconds: float, *, stop: asyncio.Event) -> None:
    """Sleep that `stop` wakes at once: then raise `Stopped`."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    if stop.is_set():
        raise outcome_.Stopped()
