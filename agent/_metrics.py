"""The agent's Prometheus metrics, on a registry passed in; families from `proto.catalog`."""

from __future__ import annotations

import os

import prometheus_client as prom

from agent import _link as link
from proto import catalog, codec

__all__ = ["AgentMetrics"]

VERSION = codec.RELEASE


class AgentMetrics:
    def __init__(
        self, registry: prom.CollectorRegistry, *, agent: str, tls_dir: str | os.PathLike[str]
    ) -> None:
        self.registry = registry
        self.agent = agent
        catalog.identify(registry, catalog.Component.AGENT, version=VERSION, tls_dir=tls_dir)
        self.connected = catalog.gauge(registry, catalog.AGENT_CONNECTED)
        self.link_state = catalog.gauge(registry, catalog.AGENT_LINK_STATE)
        for state in link.Link:  # every state's series exists, at 0 but the current one
            self.link_state.labels(str(state)).set(1 if state is link.Link.IDLE else 0)
        self.events_received = catalog.counter(registry, catalog.EVENTS_RECEIVED)
        self.events_sent = catalog.counter(registry, catalog.EVENTS_SENT)
        self.events_applied = catalog.counter(registry, catalog.EVENTS_APPLIED)
        self.apply_errors = catalog.counter(registry, catalog.APPLY_ERRORS)
        self.drift_repairs = catalog.counter(registry, catalog.DRIFT_REPAIRS)
        self.resync_events = catalog.counter(registry, catalog.RESYNC_EVENTS)
        self.resync_seconds = catalog.histogram(registry, catalog.RESYNC_SECONDS)
        self.failover_seconds = catalog.histogram(registry, catalog.FAILOVER_SECONDS)
        self.connect_errors = catalog.counter(registry, catalog.CONNECT_ERRORS)
        self.redirects = catalog.counter(registry, catalog.REDIRECTS)
        self.sessions = catalog.counter(registry, catalog.SESSIONS)
        self.refused = catalog.gauge(registry, catalog.AGENT_REFUSED)  # agent._refusals
        self.certificate_reload_failures = catalog.counter(
            registry, catalog.CERTIFICATE_RELOAD_FAILURES
        )
