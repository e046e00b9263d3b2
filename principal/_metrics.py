"""The principal's Prometheus metrics, on a registry passed in (never the global one)."""

from __future__ import annotations

import prometheus_client as prom

__all__ = ["VERSION", "PrincipalMetrics"]

VERSION = "0.1.0"
MESSAGE_TYPES = (
    "hello",
    "welcome",
    "redirect",
    "event",
    "status",
    "ack",
    "resync_request",
    "resync_done",
    "heartbeat",
    "goodbye",
)


class PrincipalMetrics:
    def __init__(self, registry: prom.CollectorRegistry, *, replica_id: str) -> None:
        self.registry = registry
        self.build_info = prom.Gauge(
            "mooring_build_info",
            "Build information (always 1).",
            ["version", "component", "replica"],
            registry=registry,
        )
        self.build_info.labels(VERSION, "principal", replica_id).set(1)
        self.sessions_open = prom.Gauge(
            "mooring_sessions_open", "Agent sessions open on this replica.", registry=registry
        )
        self.agents_owned = prom.Gauge(
            "mooring_agents_owned",
            "Agents this replica owns under its current epoch.",
            registry=registry,
        )
        self.sessions_rejected = prom.Counter(
            "mooring_sessions_rejected_total",
            "Agent streams refused, by reason (identity_mismatch, malformed, oversized, ...).",
            ["reason"],
            registry=registry,
        )
        self.redirects = prom.Counter(
            "mooring_redirects_total",
            "Agents redirected to their owner replica.",
            registry=registry,
        )
        self.events_sent = prom.Counter(
            "mooring_events_sent_total",
            "Envelopes sent to agents, by type.",
            ["type"],
            registry=registry,
        )
        self.events_received = prom.Counter(
            "mooring_events_received_total",
            "Envelopes received from agents, by type.",
            ["type"],
            registry=registry,
        )
        self.resync_seconds = prom.Histogram(
            "mooring_resync_seconds",
            "Time from hello to the end of the resync phase.",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.delivery_errors = prom.Counter(
            "mooring_delivery_errors_total",
            "Resource events a managed agent acknowledged as refused by its cluster (schema,"
            " permissions, an object Mooring did not create); noted in the object's status.",
            registry=registry,
        )
        self.drift_repairs = prom.Counter(
            "mooring_drift_repairs_total",
            "Resync requests sent to autonomous agents because their mirror on the hub was"
            " changed or deleted behind Mooring's back.",
            registry=registry,
        )
        self.resync_events = prom.Counter(
            "mooring_resync_events_total",
            "Events sent or requested during resync phases.",
            registry=registry,
        )
        self.ack_seconds = prom.Histogram(
            "mooring_event_ack_seconds",
            "Time from sending a resource event to its acknowledgement.",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.store_errors = prom.Counter(
            "mooring_store_errors_total",
            "Failed calls to the desired-state store.",
            registry=registry,
        )
        self.sessions_closed = prom.Counter(
            "mooring_sessions_closed_total",
            "Agent sessions closed, by reason.",
            ["reason"],
            registry=registry,
        )
        self.registry_errors = prom.Counter(
            "mooring_registry_errors_total",
            "Failed calls to the Redis session registry.",
            registry=registry,
        )
        self.handoffs = prom.Counter(
            "mooring_handoffs_total",
            "Sessions handed to another replica after a shard-map change.",
            registry=registry,
        )
        self.shard_epoch_applied = prom.Gauge(
            "mooring_shard_epoch_applied",
            "Shard-map epoch this replica has applied.",
            registry=registry,
        )
        self.standins = prom.Counter(
            "mooring_standin_sessions_total",
            "Sessions served for agents that could not reach their owner replica.",
            registry=registry,
        )
        for kind in MESSAGE_TYPES:
            self.events_sent.labels(kind)
            self.events_received.labels(kind)
