"""The principal endpoints an agent may dial, each with a cooldown after a failure.

The owner learned from a welcome or a redirect is tried first; every other
endpoint not cooling down follows. A whole sweep that fails is what the caller
backs off on (with full jitter), never a single endpoint's failure.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

__all__ = ["Endpoint", "EndpointSet"]


@dataclasses.dataclass
class Endpoint:
    address: str  # HOST:PORT
    cooldown_until: float = 0.0  # monotonic seconds
    failures: int = 0
    timed_out: bool = False  # the last failure was a timeout (a black hole, not a refusal)

    def available(self, now: float) -> bool:
        return now >= self.cooldown_until


class EndpointSet:
    def __init__(
        self,
        addresses: Iterable[str],
        *,
        cooldown: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = [Endpoint(a) for a in dict.fromkeys(addresses)]
        if not self.endpoints:
            raise ValueError("at least one principal endpoint is required")
        self.cooldown = cooldown  # seconds an endpoint rests after a failure
        self.clock = clock
        self.preferred: str | None = None

    def _get(self, address: str) -> Endpoint:
        for endpoint in self.endpoints:
            if endpoint.address == address:
                return endpoint
        endpoint = Endpoint(address)
        self.endpoints.append(endpoint)
        return endpoint

    def prefer(self, address: str) -> None:
        """Try this endpoint first from now on (the owner named by a redirect or welcome)."""
        endpoint = self._get(address)
        endpoint.cooldown_until = 0.0
        self.preferred = address

    def sweep(self) -> list[str]:
        """One pass over the endpoints: preferred first, then the others not cooling down."""
        now = self.clock()
        order = sorted(self.endpoints, key=lambda e: (e.address != self.preferred,))
        ready = [e.address for e in order if e.available(now)]
        # If everything is cooling down, still try the one that comes back first.
        return ready or [min(self.endpoints, key=lambda e: e.cooldown_until).address]

    def cooling(self, address: str) -> bool:
        """True while the endpoint rests after a recent failure."""
        return not self._get(address).available(self.clock())

    def black_holed(self, address: str) -> bool:
        """True while the endpoint rests after a timeout: dialing it again would hang."""
        endpoint = self._get(address)
        return endpoint.timed_out and not endpoint.available(self.clock())

    def failed(self, address: str, *, timed_out: bool = False) -> None:
        endpoint = self._get(address)
        endpoint.timed_out = timed_out
        endpoint.failures += 1
        endpoint.cooldown_until = self.clock() + self.cooldown
        if self.preferred == address:
            self.preferred = None

    def succeeded(self, address: str) -> None:
        endpoint = self._get(address)
        endpoint.failures = 0
        endpoint.timed_out = False
        endpoint.cooldown_until = 0.0
