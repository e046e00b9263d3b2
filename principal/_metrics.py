"""The principal's Prometheus metrics, on a registry passed in (never the global one).

Every family comes from `proto.catalog`; this class only holds the replica's collectors.
"""

from __future__ import annotations

import os

import prometheus_client as prom

from proto import catalog, codec

__all__ = ["VERSION", "PrincipalMetrics"]

VERSION = codec.RELEASE


class PrincipalMetrics:
    def __init__(
        self, registry: prom.CollectorRegistry, *, replica_id: str, tls_dir: str | os.PathLike[str]
    ) -> None:
        self.registry = registry
        self.replica_id = replica_id
        catalog.identify(registry, catalog.Component.PRINCIPAL, version=VERSION, tls_dir=tls_dir)
        self.sessions_open = catalog.gauge(registry, catalog.SESSIONS_OPEN)
        self.standins_open = catalog.gauge(registry, catalog.STANDIN_SESSIONS_OPEN)
        self.agents_owned = catalog.gauge(registry, catalog.AGENTS_OWNED)
        self.agents_registered = catalog.gauge(registry, catalog.AGENTS_REGISTERED)
        self.sessions_rejected = catalog.counter(registry, catalog.SESSIONS_REJECTED)
        self.sessions_closed = catalog.counter(registry, catalog.SESSIONS_CLOSED)
        self.redirects = catalog.counter(registry, catalog.REDIRECTS)
        self.events_sent = catalog.counter(registry, catalog.EVENTS_SENT)
        self.events_received = catalog.counter(registry, catalog.EVENTS_RECEIVED)
        self.resync_seconds = catalog.histogram(registry, catalog.RESYNC_SECONDS)
        self.resync_events = catalog.counter(registry, catalog.RESYNC_EVENTS)
        self.ack_seconds = catalog.histogram(registry, catalog.EVENT_ACK_SECONDS)
        self.delivery_errors = catalog.counter(registry, catalog.DELIVERY_ERRORS)
        self.drift_repairs = catalog.counter(registry, catalog.DRIFT_REPAIRS)
        self.store_errors = catalog.counter(registry, catalog.STORE_ERRORS)
        self.registry_errors = catalog.counter(registry, catalog.REGISTRY_ERRORS)
        self.task_failures = catalog.counter(registry, catalog.TASK_FAILURES)
        self.handoffs = catalog.counter(registry, catalog.HANDOFFS)
        self.standins = catalog.counter(registry, catalog.STANDIN_SESSIONS)
        self.certificate_reload_failures = catalog.counter(
            registry, catalog.CERTIFICATE_RELOAD_FAILURES
        )
