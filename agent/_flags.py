"""`agent run`'s flags, as one table over AgentSettings (`proto.flagtable`, as
`principal._flags` is for `principal serve`): defaults from the dataclass,
`settings(namespace)`, `to_argv()`. The local store is given exactly once: --state FILE
or --store URL (the one-of group "store")."""

from __future__ import annotations

from pathlib import Path

from agent._settings import AgentSettings
from proto import flagtable

__all__ = ["FLAGS", "Flag", "add_to", "effective", "settings", "to_argv"]


Flag = flagtable.Flag


def _endpoints(value: str) -> tuple[str, ...]:
    return tuple(e.strip() for e in value.split(",") if e.strip())


FLAGS: tuple[Flag, ...] = (
    Flag("--name", "name", "the agent's name, as its certificate says", required=True),
    Flag(
        "--mode",
        "mode",
        "managed: the hub is the source of truth; autonomous: this cluster is",
        required=True,
        choices=("managed", "autonomous"),
    ),
    Flag("--endpoints", "endpoints", "HOST:PORT[,HOST:PORT]", type=_endpoints, required=True),
    Flag(
        "--tls-dir",
        "tls_dir",
        "its tls.crt, tls.key and ca.crt (`mooring pki issue agent`)",
        type=Path,
        required=True,
    ),
    Flag("--state", "state", "SQLite file of the local store", type=Path, one_of="store"),
    Flag(
        "--store",
        "store",
        "the local store: sqlite:///FILE, or kubernetes://[?kubeconfig=PATH][&namespace=NS] for"
        " Argo CD's namespace (default argocd) on the workload cluster",
        one_of="store",
    ),
    Flag("--metrics", "metrics", "HOST:PORT for /metrics"),
    Flag(
        "--drift-check-interval",
        "drift_check_interval",
        "seconds between full checks for objects changed on the workload cluster (managed)",
        type=float,
    ),
    Flag(
        "--refused-retry-interval",
        "refused_retry_interval",
        "seconds between retries while the hub refuses this agent for a reason no retry cures"
        " (identity_mismatch, mode_conflict, protocol_version), until an operator fixes it",
        type=float,
    ),
    Flag(
        "--connect-timeout",
        "connect_timeout",
        "seconds to dial a replica and be welcomed or redirected",
        type=float,
    ),
)


_TABLE = flagtable.Table(AgentSettings, FLAGS, float_format="g")

add_to = _TABLE.add_to
settings = _TABLE.settings
to_argv = _TABLE.to_argv
effective = _TABLE.effective
