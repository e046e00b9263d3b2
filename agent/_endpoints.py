"""The principal endpoints an agent may dial, each with a cooldown after a failure.

The owner learned from a welcome or a redirect is tried first; every other
endpoint not cooling down follows. A whole sweep that fails is what the caller
backs off on (with full jitter), never a single endpoint's failure.

An endpoint given by DNS name stands for every address the name resolves to (a
Kubernetes headless Service lists one per replica pod). Names are resolved at start,
again every `refresh_interval`, and after a sweep in which everything failed; each
resolved address is dialled directly and its certificate verified against the name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable

logger = logging.getLogger(__name__)

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_all(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, as dialable HOST:PORT strings (IPv6 bracketed)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    out: list[str] = []
    for family, _, _, _, sockaddr in infos:
        ip = str(sockaddr[0])
        out.append(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return list(dict.fromkeys(out))


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


__all__ = ["Endpoint", "EndpointSet"]


@dataclasses.dataclass
class Endpoint:
    address: str  # HOST:PORT
    server_name: str | None = None  # the DNS name the address came from (TLS verifies it)
    cooldown_until: float = 0.0  # seconds of the set's clock (the loop's)
    failures: int = 0
    timed_out: bool = False  # the last failure was a timeout (a black hole, not a refusal)
    timeouts: int = 0  # timeouts in a row

    def available(self, now: float) -> bool:
        return now >= self.cooldown_until


class EndpointSet:
    def __init__(
        self,
        addresses: Iterable[str],
        *,
        cooldown: float = 1.0,
        max_cooldown: float = 30.0,
        clock: Callable[[], float] | None = None,  # seconds; the running loop's by default
        resolver: Resolver = resolve_all,
        refresh_interval: float = 30.0,
    ) -> None:
        specs = list(dict.fromkeys(addresses))
        if not specs:
            raise ValueError("at least one principal endpoint is required")
        # DNS names are expanded by refresh(); until then they are dialled as given.
        self.names = {s for s in specs if not _is_ip(s.rpartition(":")[0])}
        self.endpoints = [Endpoint(a) for a in specs]
        self.cooldown = cooldown  # seconds an endpoint rests after a failure
        self.max_cooldown = max_cooldown  # seconds; the longest rest after repeated timeouts
        self.clock = clock or _loop_time
        self.resolver = resolver
        self.refresh_interval = refresh_interval  # seconds between DNS re-resolutions
        self.refreshed_at: float | None = None
        self.preferred: str | None = None

    def refresh_due(self) -> bool:
        return bool(self.names) and (
            self.refreshed_at is None or self.clock() - self.refreshed_at >= self.refresh_interval
        )

    async def refresh(self) -> None:
        """Re-resolve every DNS name; keep what still resolves, add what is new.

        A name that fails to resolve keeps its previous addresses (a DNS outage must
        not empty the set); literal addresses are never touched.
        """
        self.refreshed_at = self.clock()
        for spec in sorted(self.names):
            host, _, port = spec.rpartition(":")
            try:
                found = await self.resolver(host, int(port))
            except OSError as err:
                logger.warning("cannot resolve %s, keeping its last addresses: %s", spec, err)
                continue
            if not found:
                continue
            kept = [e for e in self.endpoints if e.server_name != host and e.address != spec]
            known = {e.address: e for e in self.endpoints if e.server_name == host}
            fresh = [known.get(a) or Endpoint(a, server_name=host) for a in found]
            self.endpoints = kept + fresh

    def server_name(self, address: str) -> str | None:
        for endpoint in self.endpoints:
            if endpoint.address == address:
                return endpoint.server_name
        return None

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
        """Rest the endpoint. Refusals rest it `cooldown`; repeated timeouts (a black hole,
        where every dial costs a whole connect timeout) double the rest up to `max_cooldown`."""
        endpoint = self._get(address)
        endpoint.failures += 1
        if timed_out:
            endpoint.timeouts += 1
            rest = min(self.cooldown * 2 ** (endpoint.timeouts - 1), self.max_cooldown)
        else:
            endpoint.timeouts = 0
            rest = self.cooldown
        endpoint.timed_out = timed_out
        endpoint.cooldown_until = self.clock() + rest
        if self.preferred == address:
            self.preferred = None

    def succeeded(self, address: str) -> None:
        endpoint = self._get(address)
        endpoint.failures = 0
        endpoint.timeouts = 0
        endpoint.timed_out = False
        endpoint.cooldown_until = 0.0
