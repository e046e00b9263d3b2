"""The agent's settings: one validated dataclass, passed explicitly."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from proto import codec

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
    refused_retry_interval: float = 60.0
    """Seconds between sweeps after a replica refused this agent for a reason no retry
    cures (identity_mismatch, mode_conflict, protocol_version: `agent._refusals`): it
    keeps trying that slowly, as an operator may fix its registration or certificate."""
    endpoint_cooldown: float = 1.0  # seconds an endpoint rests after failing
    max_redirects: int = 3  # redirects followed in a row before the sweep moves on
    keepalive_time: float = codec.KEEPALIVE_TIME_S  # seconds of idleness before a ping
    keepalive_timeout: float = codec.KEEPALIVE_TIMEOUT_S  # seconds to wait for its answer

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
                raise ValueError(f"bad --endpoints entry {endpoint[:80]!r}: expected HOST:PORT")
        if self.metrics is not None:
            host, sep, port = self.metrics.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bad --metrics {self.metrics[:80]!r}: expected HOST:PORT")
        for flag, seconds in (
            ("--drift-check-interval", self.drift_check_interval),
            ("--refused-retry-interval", self.refused_retry_interval),
        ):
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{flag} must be a positive number of seconds, got {seconds:g}")
        if not 0 < self.backoff_base <= self.backoff_cap:
            raise ValueError("backoff_base must be positive and at most backoff_cap")
        if self.keepalive_time < codec.MIN_PING_INTERVAL_S:
            raise ValueError(
                f"keepalive_time below {codec.MIN_PING_INTERVAL_S:g} s would exceed the"
                " principal's ping allowance"
            )
