"""Admission limits: how many streams a replica sets up at once, how often one agent may
start a stream, and when a refused agent should come back.

Setting a session up is a replica's expensive part (the registration read, the session
registry's entry, the resync's listing): at most `max_setting_up` streams may be between
their first byte and their welcome at once; more are refused `busy`. Each agent may
start `reconnect_burst` streams at once and `reconnect_rate` a second after that (a
token bucket per verified identity); more are refused `rate_limited`, so an agent stuck
in a reconnect loop costs its replica one refusal, not one resync, per attempt. Both
refusals name a time to come back (`codec.RETRY_AFTER_TRAILER`), which the agent waits
with jitter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable

import grpc

from principal._session import Rejection, RejectReason

__all__ = ["Admission", "AdmissionSettings"]


@dataclasses.dataclass(frozen=True)
class AdmissionSettings:
    max_setting_up: int = 256  # streams between their first byte and their welcome, at once
    reconnect_burst: int = 20  # streams one agent may start at once
    reconnect_rate: float = 1.0  # streams a second one agent may start after its burst
    busy_retry_after: float = 1.0  # seconds a `busy` refusal asks the agent to wait
    max_tracked: int = 100_000  # agents whose buckets are kept (full ones go first)

    def __post_init__(self) -> None:
        if self.max_setting_up < 1:
            raise ValueError(f"max_setting_up must be at least 1, got {self.max_setting_up}")
        if self.reconnect_burst < 1:
            raise ValueError(f"reconnect_burst must be at least 1, got {self.reconnect_burst}")
        if not (math.isfinite(self.reconnect_rate) and self.reconnect_rate > 0):
            raise ValueError(f"reconnect_rate must be positive, got {self.reconnect_rate:g}")


class Admission:
    """One replica's limits. Not thread-safe: used from the replica's event loop."""

    def __init__(
        self, settings: AdmissionSettings, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.settings = settings
        self._clock = clock or _loop_time  # seconds; the running loop's clock by default
        self.setting_up = 0
        self._buckets: dict[str, tuple[float, float]] = {}  # agent -> (tokens, at)

    def enter(self, agent: str) -> Callable[[], None]:
        """A stream from `agent` starts: Rejection `rate_limited` or `busy`, else it counts
        as being set up until the returned `leave()` (once it is welcomed, redirected or
        refused; calls after the first do nothing)."""
        self._take_token(agent)
        if self.setting_up >= self.settings.max_setting_up:
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE,
                f"busy: {self.setting_up} sessions are being set up on this replica;"
                f" retry in {self.settings.busy_retry_after:g}s",
                reason=RejectReason.BUSY,
                retry_after=self.settings.busy_retry_after,
            )
        self.setting_up += 1
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                self.setting_up -= 1

        return leave

    def _take_token(self, agent: str) -> None:
        s, now = self.settings, self._clock()
        tokens, at = self._buckets.get(agent, (float(s.reconnect_burst), now))
        tokens = min(float(s.reconnect_burst), tokens + (now - at) * s.reconnect_rate)
        if tokens < 1.0:
            wait = (1.0 - tokens) / s.reconnect_rate
            self._buckets[agent] = (tokens, now)
            raise Rejection(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"agent {agent} starts streams faster than {s.reconnect_rate:g}/s (after a"
                f" burst of {s.reconnect_burst}); retry in {wait:.1f}s",
                reason=RejectReason.RATE_LIMITED,
                retry_after=wait,
            )
        self._buckets[agent] = (tokens - 1.0, now)
        if len(self._buckets) > s.max_tracked:
            self._forget_full(now)

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they hold nothing a new one would not)."""
        s = self.settings
        self._buckets = {
            agent: (tokens, at)
            for agent, (tokens, at) in self._buckets.items()
            if tokens + (now - at) * s.reconnect_rate < s.reconnect_burst
        }


def _loop_time() -> float:
    return asyncio.get_running_loop().time()
