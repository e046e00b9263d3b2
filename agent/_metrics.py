"""The agent's Prometheus metrics, on a registry passed in."""

from __future__ import annotations

import prometheus_client as prom

__all__ = ["AgentMetrics"]

VERSION = "0.1.0"


class AgentMetrics:
    def __init__(self, registry: prom.CollectorRegistry, *, agent: str) -> None:
        self.registry = registry
        prom.Gauge(
            "mooring_build_info",
            "Build information (always 1).",
            ["version", "component", "agent"],
            registry=registry,
        ).labels(VERSION, "agent", agent).set(1)
        self.connected = prom.Gauge(
            "mooring_agent_connected",
            "1 while a session with the owner replica is open.",
            registry=registry,
        )
        self.events_received = prom.Counter(
            "mooring_events_received_total",
            "Envelopes received from the principal, by type.",
            ["type"],
            registry=registry,
        )
        self.events_sent = prom.Counter(
            "mooring_events_sent_total",
            "Envelopes sent to the principal, by type.",
            ["type"],
            registry=registry,
        )
        self.events_applied = prom.Counter(
            "mooring_events_applied_total",
            "Resource events that changed the local store (duplicates are not counted).",
            ["operation"],
            registry=registry,
        )
        self.apply_errors = prom.Counter(
            "mooring_apply_errors_total",
            "Resource events the local store refused (schema, permissions, an object Mooring"
            " did not create); each is acknowledged to the principal as an error.",
            registry=registry,
        )
        self.drift_repairs = prom.Counter(
            "mooring_drift_repairs_total",
            "Resyncs started because a managed object was changed or deleted on the workload"
            " cluster behind Mooring's back.",
            registry=registry,
        )
        self.resync_events = prom.Counter(
            "mooring_resync_events_total",
            "Resource events received (managed) or sent (autonomous) during resync phases.",
            registry=registry,
        )
        self.resync_seconds = prom.Histogram(
            "mooring_resync_seconds",
            "Time from sending hello to the end of the resync phase.",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.failover_seconds = prom.Histogram(
            "mooring_failover_seconds",
            "Time from losing a session to being welcomed by an owner with resync done.",
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60),
        )
        self.connect_errors = prom.Counter(
            "mooring_connect_errors_total",
            "Failed session attempts, by reason (tls, unavailable, rejected, timeout, protocol).",
            ["reason"],
            registry=registry,
        )
        self.redirects = prom.Counter(
            "mooring_redirects_total", "Redirects followed to the owner replica.", registry=registry
        )
        self.sessions = prom.Counter(
            "mooring_sessions_total", "Sessions welcomed by a principal replica.", registry=registry
        )
