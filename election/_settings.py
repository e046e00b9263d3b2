"""Timing settings for leader election and membership, and the store retry policy built from them.

Every duration is in seconds of the *local monotonic* clock (the event loop's clock), never
wall-clock seconds: a peer's lease is judged by when we saw it change.

Defaults favour fast failover. client-go's conservative reference is lease 15 s, renew
deadline 10 s, retry 2 s and no request timeout; ours (4 / 3 / 0.5 s, 1 s per store call)
hand leadership over between lease_duration - retry_period and lease_duration + 2 x 1.2 x
retry_period (3 .. 5.2 s; measured on etcd p50 4.0 s, p99 4.5 s, see bench/bench_election.py) after a holder dies,
and at once (~retry_period) after a graceful release.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import tenacity

from election import _errors as errors

__all__ = ["JITTER_FACTOR", "RETRYABLE", "ElectionSettings", "store_retrying"]

# Followers wait retry_period * uniform(1, JITTER_FACTOR) between attempts (client-go's 1.2).
JITTER_FACTOR = 1.2

# The one table of store errors that are worth retrying. A ConflictError is not: the caller
# must re-read the record and decide again.
RETRYABLE: tuple[type[BaseException], ...] = (errors.StoreUnavailableError,)


@dataclasses.dataclass(frozen=True, slots=True)
class ElectionSettings:
    """Leader-election and membership timing (all in seconds)."""

    lease_duration: float = 4.0
    """Seconds a follower waits, from the moment it *saw* the lease record last change, before
    it may take the lease over. Also the liveness window of member records."""

    renew_deadline: float = 3.0
    """Seconds after the start of the leader's last successful renewal at which it stops its
    leader work and steps down if it has not renewed again."""

    retry_period: float = 0.5
    """Seconds between renewals by the leader and (jittered by up to x1.2) between attempts by
    followers; also the poll period of membership and the shard map."""

    request_timeout: float = 1.0
    """Seconds that one store call may take before it counts as failed."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value <= 0:
                shown = f"{value:g}" if number else repr(value)
                raise ValueError(f"{field.name} must be a positive number of seconds, got {shown}")
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(
                f"lease_duration ({self.lease_duration}s) must be greater than"
                f" renew_deadline ({self.renew_deadline}s)"
            )
        if not self.renew_deadline > JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"renew_deadline ({self.renew_deadline}s) must be greater than"
                f" {JITTER_FACTOR} x retry_period ({self.retry_period}s)"
            )
        if not self.request_timeout * 2 <= self.renew_deadline:
            raise ValueError(
                f"request_timeout ({self.request_timeout}s) must be at most half of"
                f" renew_deadline ({self.renew_deadline}s), so a renewal can be retried in time"
            )

    @property
    def member_heartbeat(self) -> float:
        """Seconds between a replica's writes of its own member record."""
        return max(self.retry_period, self.lease_duration / 4)


def store_retrying(settings: ElectionSettings, *, budget: float) -> tenacity.AsyncRetrying:
    """A policy for one logical store operation: retry the RETRYABLE errors with full jitter,
    waiting at most retry_period between attempts, for at most `budget` seconds in all."""
    kwargs: dict[str, Any] = {
        "retry": tenacity.retry_if_exception_type(RETRYABLE),
        "wait": tenacity.wait_random_exponential(
            multiplier=settings.retry_period / 4, max=settings.retry_period
        ),
        "stop": tenacity.stop_after_delay(budget),
        "reraise": True,
    }
    return tenacity.AsyncRetrying(**kwargs)
