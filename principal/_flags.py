"""`principal serve`'s flags, as one table over PrincipalSettings (`proto.flagtable`).

Each flag names the settings field it sets (a dotted path into the nested settings).
Its default is that field's default, so the CLI and the dataclasses cannot disagree;
`settings(namespace)` builds the settings from parsed flags and `to_argv(settings)` prints
the flags that give them back (what the launcher runs), with the secret fields left to
the environment (`to_env`). This module adds what is the principal's own: the heartbeat
timeout derived from --heartbeat-interval, and --advertise defaulting to --listen.
Flags that rewrite store URLs (`--etcd-*`, the Redis password file) are
`mooring._access`'s and are applied before this table is read.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from principal._settings import PrincipalSettings
from proto import flagtable

__all__ = ["FLAGS", "Flag", "add_to", "effective", "settings", "to_argv", "to_env"]

HEARTBEAT_TIMEOUT_FACTOR = 3
"""A session is dropped after this many heartbeat intervals of silence (both ends)."""


Flag = flagtable.Flag

FLAGS: tuple[Flag, ...] = (
    Flag("--id", "replica_id", "this replica's id, a DNS label (e.g. p1)", required=True),
    Flag("--listen", "listen", "HOST:PORT for agents", required=True),
    Flag("--advertise", "advertise", "HOST:PORT agents reach this replica on (default: --listen)"),
    Flag(
        "--coordination",
        "coordination",
        "etcd://HOST:PORT[,HOST:PORT], etcds://... (TLS: see --etcd-ca) or kubernetes (Leases)",
        required=True,
    ),
    Flag(
        "--store",
        "store",
        "the hub store: etcd[s]://HOST:PORT[,...] or kubernetes://[?kubeconfig=PATH]"
        "[&hub=NAME][&namespace-prefix=PREFIX] (default: --coordination)",
    ),
    Flag("--namespace", "namespace", "namespace of the Lease objects"),
    Flag(
        "--redis",
        "redis",
        "redis://HOST:PORT session registry; rediss://[USER@]HOST:PORT?ssl_ca_certs=FILE for"
        " TLS (ssl_certfile=, ssl_keyfile=: a client certificate)",
        secret=True,
    ),
    Flag(
        "--tls-dir",
        "tls_dir",
        "its tls.crt, tls.key and ca.crt (`mooring pki issue principal`)",
        type=Path,
        required=True,
    ),
    Flag("--metrics", "metrics", "HOST:PORT for /metrics, /healthz and /readyz"),
    Flag(
        "--health",
        "health",
        "HOST:PORT of a plaintext grpc.health.v1 server for probes (kubelet's gRPC probes"
        " cannot do mTLS): service `liveness` is SERVING while the process runs, `readiness`"
        ' (and "") while it is a member with a shard map applied',
    ),
    Flag(
        "--max-message-bytes",
        "session.max_message_bytes",
        "largest message accepted from an agent, bytes",
        type=int,
    ),
    Flag(
        "--max-resources-per-agent",
        "session.max_resources",
        "objects of one autonomous agent the hub mirrors, at most",
        type=int,
    ),
    Flag(
        "--max-connections",
        "max_connections",
        "connections open at once on the agent port (sessions and pending handshakes);"
        " more are closed at once: at least the agents this replica may serve",
        type=int,
    ),
    Flag(
        "--max-sessions-setting-up",
        "admission.max_setting_up",
        "agent streams between their first message and their welcome at once; more are"
        " refused busy with a time to retry",
        type=int,
    ),
    Flag(
        "--reconnect-burst",
        "admission.reconnect_burst",
        "streams one agent may start at once before --reconnect-rate applies",
        type=int,
    ),
    Flag(
        "--reconnect-rate",
        "admission.reconnect_rate",
        "streams a second one agent may start after its burst; more are refused rate_limited"
        " with a time to retry",
        type=float,
    ),
    Flag(
        "--heartbeat-interval",
        "session.heartbeat_interval",
        f"seconds between heartbeats; a silent agent is dropped after {HEARTBEAT_TIMEOUT_FACTOR}",
        type=float,
    ),
    Flag("--lease-duration", "election.lease_duration", "seconds (client-go: 15)", type=float),
    Flag("--renew-deadline", "election.renew_deadline", "seconds (client-go: 10)", type=float),
    Flag("--retry-period", "election.retry_period", "seconds (client-go: 2)", type=float),
    Flag("--request-timeout", "election.request_timeout", "seconds per store call", type=float),
    Flag("--session-ttl", "session_ttl", "seconds a Redis session entry lives", type=float),
    Flag(
        "--liveness-ttl",
        "liveness_ttl",
        "seconds this replica's Redis liveness key lives without a beat: a dead replica's"
        " agents are served elsewhere about this long after it stopped",
        type=float,
    ),
    Flag("--history", "history", "append session opens/closes (JSON lines) here", type=Path),
    Flag(
        "--auto-register",
        "auto_register",
        "register an agent the hub does not know at its first connect, in the mode it says"
        " (default: refuse it, not_registered, until `mooring agent create` names it)",
        switch=True,
    ),
    Flag("--store-root", "store_root", "etcd key prefix of everything Mooring writes"),
)

_TABLE = flagtable.Table(PrincipalSettings, FLAGS)

add_to = _TABLE.add_to
to_env = _TABLE.to_env


def settings(namespace: argparse.Namespace) -> PrincipalSettings:
    """The settings the parsed flags give; ValueError naming the flag when one is bad."""
    values = _TABLE.values(namespace)
    interval = values["session.heartbeat_interval"]
    if not (math.isfinite(interval) and interval > 0):
        # SessionSettings judges only the timeout derived from it
        raise ValueError(
            f"--heartbeat-interval must be a positive number of seconds, got {interval:g}"
        )
    values["session.heartbeat_timeout"] = interval * HEARTBEAT_TIMEOUT_FACTOR
    values["advertise"] = values["advertise"] or values["listen"]
    return _TABLE.build(values)


def to_argv(settings: PrincipalSettings) -> list[str]:
    """`principal serve`'s flags for `settings`: the required ones and every one whose
    value is not its default (--advertise not when it is --listen); secret ones are left
    out (see `to_env`)."""
    same = settings.advertise == settings.listen
    return _TABLE.to_argv(settings, omit=("--advertise",) if same else ())


def effective(settings: PrincipalSettings) -> dict[str, Any]:
    """Every flag's value in force (secrets masked), by flag name without dashes, and the
    derived heartbeat_timeout: what cluster.json records for tools and benches, instead
    of reading /proc."""
    return {
        **_TABLE.effective(settings),
        "heartbeat_timeout": settings.session.heartbeat_timeout,
    }
