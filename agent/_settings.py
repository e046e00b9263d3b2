"""The agent's settings: one validated dataclass, passed explicitly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

__all__ = ["AgentSettings"]


@dataclasses.dataclass(frozen=True)
class AgentSettings:
    name: str  # the agent's name; must equal the identity in its certificate
    mode: Literal["managed", "autonomous"]
    endpoints: tuple[str, ...]  # principal replicas, HOST:PORT each
    tls_dir: Path  # folder with tls.crt, tls.key, ca.crt
    state: Path | None = None  # SQLite file of the local store (`store` sqlite:///FILE)
    store: str | None = None  # the local store's URL: sqlite:///FILE or kubernetes://...
    metrics: str | None = None  # HOST:PORT for /metrics, None = off
    connect_timeout: float = 5.0  # seconds to dial and be welcomed or redirected
    heartbeat_timeout_factor: float = 3.0  # silence of this many heartbeat intervals ends a session
    poll_interval: float = 0.1  # seconds between checks of the local store for changes
    poll_interval_max: float = 1.0  # seconds; the check backs off to this while nothing changes
    drift_check_interval: float = 60.0  # seconds between full checks for local drift (managed)
    backoff_base: float = 0.2  # seconds; full-jitter exponential backoff after a failed sweep
    backoff_cap: float = (
        4.0  # seconds; the backoff never exceeds this (keeps recovery after an outage short)
    )
    endpoint_cooldown: float = 1.0  # seconds an endpoint rests after failing
    max_redirects: int = 3  # redirects followed in a row before the sweep moves on
    keepalive_time: float = 10.0  # seconds of idleness before a gRPC keepalive ping
    keepalive_timeout: float = 5.0  # seconds to wait for the ping's answer

    @property
    def store_url(self) -> str:
        """The local store's URL (`--store`, else the SQLite file `--state`)."""
        return self.store or f"sqlite:///{self.state}"

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("--name must not be empty")
        if (self.state is None) == (self.store is None):
            raise ValueError("give the local store as --store URL or --state FILE (one of them)")
        if self.mode not in ("managed", "autonomous"):
            raise ValueError(f"bad --mode {self.mode!r}: expected managed or autonomous")
        if not self.endpoints:
            raise ValueError("--endpoints needs at least one HOST:PORT")
        for endpoint in self.endpoints:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bad endpoint {endpoint!r}: expected HOST:PORT")
        if self.drift_check_interval <= 0:
            raise ValueError("--drift-check-interval must be positive")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError("backoff_base must be positive and at most backoff_cap")
        if self.keepalive_time < 5.0:
            raise ValueError("keepalive_time below 5 s would exceed the principal's ping allowance")
