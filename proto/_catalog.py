"""Every metric family Mooring exports, in one table that emitters and readers share.

Emitters create their collectors from here (`counter`, `gauge`, `histogram`), readers
(`mooring status`, the alert rules, the dashboards, their tests) name families by the
constants below, and `docs/metrics.md` is generated from `FAMILIES`
(`python -m mooring docs metrics`). A test scrapes every kind of process and fails on a
family exported but not listed here, or listed but never exported.

Names follow Prometheus' conventions: the `mooring_` prefix, base units (seconds),
counters end in `_total`, Unix timestamps end in `_timestamp_seconds`. No `_created`
companion series are exported.

Families a prometheus-client collector exports (`Family.collector`) keep the library's
names and help, so that the dashboards and alerts every Prometheus user has for a
process (`process_open_fds / process_max_fds`) work on Mooring's too: `identify`
registers the process collector, the catalog only declares what it exports.
"""

from __future__ import annotations

import os
from pathlib import Path

import prometheus_client as prom

from proto import _codec as codec
from proto import _collectors as collectors
from proto import _credentials as credentials
from proto import _family as family_

__all__ = [
    "FAMILIES",
    "Component",
    "Family",
    "counter",
    "gauge",
    "histogram",
    "identify",
    "register_process_collector",
]

# What a family is (proto/_family.py) and how a collector is made of one
# (proto/_collectors.py), named here where emitters and readers look for them.
Component = family_.Component
Family = family_.Family
P, A, BOTH = family_.P, family_.A, family_.BOTH
counter = collectors.counter
gauge = collectors.gauge
histogram = collectors.histogram
register_process_collector = collectors.register_process_collector

_SHORT = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

BUILD_INFO = Family(
    "mooring_build_info",
    "gauge",
    "Always 1; the labels say the release, the wire protocol range and the component.",
    labels=("version", "protocol", "component"),
    components=BOTH,
    cardinality="one series per process",
)
CERTIFICATE_EXPIRY = Family(
    "mooring_certificate_expiry_timestamp_seconds",
    "gauge",
    "When a certificate this process presents or trusts stops being valid (Unix time):"
    " certificate=serving|client|ca.",
    unit="seconds",
    labels=("certificate",),
    components=BOTH,
    cardinality="at most three series per process",
)
CERTIFICATE_RELOAD_FAILURES = Family(
    "mooring_certificate_reload_failures_total",
    "counter",
    "Changed TLS files (--tls-dir) this process could not take into use (invalid,"
    " half-written, a key that does not match its certificate), counted once per distinct"
    " state of the files; the previous certificate and CAs stay in use meanwhile.",
    components=BOTH,
)
# -- election and membership (principal) --
LEADER = Family(
    "mooring_leader",
    "gauge",
    "1 while this replica holds the leader lease within its local renew deadline.",
)
MEMBER = Family(
    "mooring_member",
    "gauge",
    "1 while this replica's member record is current (renewed within the renew deadline);"
    " a replica that is not a member serves no agent.",
)
MEMBERS_LIVE = Family(
    "mooring_members_live",
    "gauge",
    "Replicas whose member record this replica saw change within the lease duration.",
)
ELECTION_STATE = Family(
    "mooring_election_state",
    "gauge",
    "1 for the elector's current state (initial, follower, candidate, leader, stopped).",
    labels=("state",),
    cardinality="five states",
)
ELECTION_STATE_TRANSITIONS = Family(
    "mooring_election_state_transitions_total",
    "counter",
    "Elector state changes.",
    labels=("from_state", "to_state"),
    cardinality="the transitions table: ten pairs",
)
LEASE_TRANSITIONS = Family(
    "mooring_lease_transitions_total",
    "counter",
    "Lease takeovers by this replica (each one increments the lease's leaseTransitions).",
)
LEASE_RENEW_SECONDS = Family(
    "mooring_lease_renew_seconds",
    "histogram",
    "Duration of successful lease renewals.",
    unit="seconds",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LEASE_RENEW_FAILURES = Family(
    "mooring_lease_renew_failures_total",
    "counter",
    "Lease renewals that failed or timed out.",
)
SHARD_EPOCH = Family(
    "mooring_shard_epoch",
    "gauge",
    "Epoch of the shard map this replica has applied (0: none yet).",
)
# -- ownership and sessions (principal) --
AGENTS_REGISTERED = Family(
    "mooring_agents_registered",
    "gauge",
    "Agents in the hub's registry, as this replica last listed them.",
)
AGENTS_OWNED = Family(
    "mooring_agents_owned",
    "gauge",
    "Agents this replica owns under the shard map it has applied.",
)
AGENT_LAST_SEEN = Family(
    "mooring_agent_last_seen_timestamp_seconds",
    "gauge",
    "When an agent this replica owns was last connected to any replica (Unix time; now"
    " while connected; 0 when not seen within a day).",
    unit="seconds",
    labels=("agent",),
    cardinality="one series per agent, exported by its owner only: the fleet's size in all",
)
SESSIONS_OPEN = Family(
    "mooring_sessions_open",
    "gauge",
    "Agent sessions open on this replica.",
)
STANDIN_SESSIONS_OPEN = Family(
    "mooring_standin_sessions_open",
    "gauge",
    "Sessions open on this replica for agents another replica owns (stand-ins).",
)
STANDIN_SESSIONS = Family(
    "mooring_standin_sessions_total",
    "counter",
    "Sessions served for agents that could not reach their owner replica.",
)
SESSIONS_REJECTED = Family(
    "mooring_sessions_rejected_total",
    "counter",
    "Agent streams refused, by reason (identity_mismatch, revoked, not_registered, malformed,"
    " oversized, ...).",
    labels=("reason",),
    cardinality="a fixed set of refusal reasons",
    initial=(("identity_mismatch",), ("no_identity",), ("malformed",), ("oversized",)),
)
SESSIONS_CLOSED = Family(
    "mooring_sessions_closed_total",
    "counter",
    "Agent sessions closed, by reason (agent_gone, handoff, self_fence, shutdown, revoked, ...).",
    labels=("reason",),
    cardinality="a fixed set of close reasons",
    initial=(("self_fence",), ("heartbeat_timeout",), ("goodbye",), ("moved",), ("superseded",)),
)
HANDOFFS = Family(
    "mooring_handoffs_total",
    "counter",
    "Sessions handed to another replica after a shard-map change.",
)
REDIRECTS = Family(
    "mooring_redirects_total",
    "counter",
    "Redirects to an agent's owner replica (principal: sent; agent: followed).",
    components=BOTH,
)
REGISTRY_ERRORS = Family(
    "mooring_registry_errors_total",
    "counter",
    "Failed calls to the Redis session registry.",
)
STORE_ERRORS = Family(
    "mooring_store_errors_total",
    "counter",
    "Failed calls to the hub store (desired state, agent registry).",
)
TASK_FAILURES = Family(
    "mooring_task_failures_total",
    "counter",
    "Unexpected errors that ended one of a replica's long-lived tasks, by task: each is logged"
    " (`task NAME failed: ...`), then the task restarts after a backoff or the replica fences"
    " itself and exits with status 3 (then usually before this count is scraped).",
    labels=("task",),
    cardinality="one series per supervised task: nine, each created at 0 as it starts",
)
# -- sync (both ends) --
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
EVENTS_SENT = Family(
    "mooring_events_sent_total",
    "counter",
    "Envelopes sent to the other end (principal: to agents; agent: to the principal), by type.",
    labels=("type",),
    components=BOTH,
    cardinality="ten message types",
    initial=tuple((kind,) for kind in MESSAGE_TYPES),
)
EVENTS_RECEIVED = Family(
    "mooring_events_received_total",
    "counter",
    "Envelopes received from the other end, by type.",
    labels=("type",),
    components=BOTH,
    cardinality="ten message types",
    initial=tuple((kind,) for kind in MESSAGE_TYPES),
)
RESYNC_SECONDS = Family(
    "mooring_resync_seconds",
    "histogram",
    "Time from hello to the end of the resync phase.",
    unit="seconds",
    components=BOTH,
    buckets=_SHORT,
)
RESYNC_EVENTS = Family(
    "mooring_resync_events_total",
    "counter",
    "Resource events sent or requested during resync phases.",
    components=BOTH,
)
EVENT_ACK_SECONDS = Family(
    "mooring_event_ack_seconds",
    "histogram",
    "Time from sending a resource event to an agent to its acknowledgement.",
    unit="seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
DELIVERY_ERRORS = Family(
    "mooring_delivery_errors_total",
    "counter",
    "Resource events a managed agent acknowledged as refused by its cluster (schema,"
    " permissions, an object Mooring did not create); noted in the object's status.",
)
DRIFT_REPAIRS = Family(
    "mooring_drift_repairs_total",
    "counter",
    "Resyncs started because a copy was changed or deleted behind Mooring's back"
    " (principal: an autonomous agent's mirror on the hub; agent: a managed object on the"
    " workload cluster).",
    components=BOTH,
)
# -- agent --
AGENT_CONNECTED = Family(
    "mooring_agent_connected",
    "gauge",
    "1 while a session with the owner replica is open.",
    components=A,
)
AGENT_LINK_STATE = Family(
    "mooring_agent_link_state",
    "gauge",
    "1 for the state the agent's connection to the hub is in (agent/_link.py: idle,"
    " dialing, resyncing, live, backing_off, refused, stopped), 0 for the others.",
    labels=("state",),
    components=A,
    cardinality="the seven states of agent/_link.py",
)
SESSIONS = Family(
    "mooring_sessions_total",
    "counter",
    "Sessions welcomed by a principal replica.",
    components=A,
)
CONNECT_ERRORS = Family(
    "mooring_connect_errors_total",
    "counter",
    "Failed session attempts, by reason (tls, unavailable, rejected, timeout, protocol).",
    labels=("reason",),
    components=A,
    cardinality="five reasons",
    initial=(("tls",), ("unavailable",), ("rejected",), ("timeout",), ("protocol",)),
)
AGENT_REFUSED = Family(
    "mooring_agent_refused",
    "gauge",
    "1 for the refusal no retry can cure that the hub answers this agent with"
    " (identity_mismatch, mode_conflict, protocol_version, revoked, not_registered), from"
    " the refusal until the next welcome; 0 for the others.",
    labels=("reason",),
    components=A,
    cardinality="the five reasons of agent/_refusals.py",
)
FAILOVER_SECONDS = Family(
    "mooring_failover_seconds",
    "histogram",
    "Time from losing a session to being welcomed by an owner with resync done.",
    unit="seconds",
    components=A,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0),
)
EVENTS_APPLIED = Family(
    "mooring_events_applied_total",
    "counter",
    "Resource events that changed the local store (duplicates are not counted).",
    labels=("operation",),
    components=A,
    cardinality="upsert, delete",
    initial=(("upsert",), ("delete",)),
)
APPLY_ERRORS = Family(
    "mooring_apply_errors_total",
    "counter",
    "Resource events the local store refused (schema, permissions, an object Mooring did"
    " not create); each is acknowledged to the principal as an error.",
    components=A,
)

# -- the process itself (prometheus-client's ProcessCollector; Linux: /proc/self) --
PROCESS_CPU_SECONDS = Family(
    "process_cpu_seconds_total",
    "counter",
    "Total user and system CPU time spent in seconds.",
    unit="seconds",
    components=BOTH,
    collector="process",
)
PROCESS_OPEN_FDS = Family(
    "process_open_fds",
    "gauge",
    "Number of open file descriptors.",
    components=BOTH,
    collector="process",
)
PROCESS_MAX_FDS = Family(
    "process_max_fds",
    "gauge",
    "Maximum number of open file descriptors.",
    components=BOTH,
    collector="process",
)
PROCESS_RESIDENT_MEMORY = Family(
    "process_resident_memory_bytes",
    "gauge",
    "Resident memory size in bytes.",
    unit="bytes",
    components=BOTH,
    collector="process",
)
PROCESS_VIRTUAL_MEMORY = Family(
    "process_virtual_memory_bytes",
    "gauge",
    "Virtual memory size in bytes.",
    unit="bytes",
    components=BOTH,
    collector="process",
)
PROCESS_START_TIME = Family(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since unix epoch in seconds.",
    unit="seconds",
    components=BOTH,
    collector="process",
)

FAMILIES: tuple[Family, ...] = tuple(
    value for value in list(globals().values()) if isinstance(value, Family)
)
BY_NAME = {family.name: family for family in FAMILIES}


def identify(
    registry: prom.CollectorRegistry,
    component: Component,
    *,
    version: str,
    tls_dir: str | os.PathLike[str],
) -> None:
    """What every process exports about itself: mooring_build_info (release, wire
    protocol range, component), the process collector's families (`process_open_fds`,
    ...) and, read at each scrape, when its own certificate (certificate="serving" on a
    replica, "client" on an agent) and its CA expire."""
    register_process_collector(registry)
    protocol = f"{codec.PROTOCOL_MIN}-{codec.PROTOCOL_MAX}"
    gauge(registry, BUILD_INFO).labels(version, protocol, component.value).set(1)
    expiry = gauge(registry, CERTIFICATE_EXPIRY)
    own = "serving" if component is Component.PRINCIPAL else "client"
    leaf, ca = Path(tls_dir) / credentials.TLS_CERT, Path(tls_dir) / credentials.CA_CERT
    expiry.labels(own).set_function(lambda: credentials.not_after(leaf))
    expiry.labels("ca").set_function(lambda: credentials.not_after(ca, chain=True))
