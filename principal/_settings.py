"""The principal's settings: one root dataclass, nested, validated, loaded explicitly."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

from election import etcd, etcdurl
from election import settings as election_settings
from principal import _admission as admission
from principal import _registry as registry
from principal import _session as session

__all__ = ["PrincipalSettings", "parse_hostport"]


def parse_hostport(value: str, *, what: str) -> tuple[str, int]:
    """ "HOST:PORT" -> (host, port); ValueError naming `what` when malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"bad {what} {value!r}: expected HOST:PORT")
    return host.strip("[]"), int(port)


def _etcd_url(url: str, *, what: str) -> None:
    """ValueError naming `what` unless `url` is etcd[s]://HOST:PORT[,HOST:PORT...][?...]
    (election/_etcdurl.py; its files are read when the store is opened)."""
    try:
        etcd.parse_endpoints(url)
    except ValueError as err:
        raise ValueError(f"bad {what} {etcdurl.redacted(url)[:80]!r}: {err}") from err


_ETCD = ("etcd://", "etcds://")


_REPLICA_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclasses.dataclass(frozen=True)
class PrincipalSettings:
    replica_id: str  # this replica's identity in the cluster
    listen: str  # HOST:PORT the agent gRPC server binds
    advertise: str  # HOST:PORT agents are redirected to for this replica
    # etcd://HOST:PORT[,HOST:PORT], etcds://...?ca=FILE&... (TLS, a user: election/_etcdurl.py)
    # or "kubernetes": where leases, members and the shard map live
    coordination: str
    tls_dir: Path  # folder with tls.crt, tls.key, ca.crt
    metrics: str | None = None  # HOST:PORT for /metrics, None = off
    health: str | None = None  # HOST:PORT of a plaintext grpc.health.v1 server, None = off
    # redis[s]://[[USER]:PASSWORD@]HOST:PORT[?ssl_ca_certs=FILE...] session registry (HA
    # only); out of repr, as it may hold a password
    redis: str | None = dataclasses.field(default=None, repr=False)
    store: str | None = None  # the hub store: etcd://... or kubernetes://...; default: coordination
    namespace: str = (
        "default"  # Kubernetes namespace of the Lease objects (coordination=kubernetes)
    )
    store_root: str = "/mooring/"  # key prefix of everything Mooring writes to etcd
    store_timeout: float = 2.0  # seconds per store call
    shutdown_grace: float = 2.0  # seconds to let sessions say goodbye on shutdown
    session: session.SessionSettings = dataclasses.field(default_factory=session.SessionSettings)
    admission: admission.AdmissionSettings = dataclasses.field(
        default_factory=admission.AdmissionSettings
    )
    election: election_settings.ElectionSettings = dataclasses.field(
        default_factory=election_settings.ElectionSettings
    )
    session_ttl: float = 6.0  # seconds a Redis session entry lives without renewal
    liveness_ttl: float = 1.0  # seconds our Redis liveness key lives without a beat
    history: Path | None = None  # JSON-lines file of session opens/closes (for the I1 checker)
    # Register an agent the hub does not know at its first hello, in the mode it says;
    # off: such an agent is refused (not_registered) until `mooring agent create` names it.
    auto_register: bool = False
    # Connections open at once on the agent port (sessions and pending handshakes); more
    # are closed at once. At least the agents this replica may serve, with room to spare.
    max_connections: int = 10_000

    @property
    def desired_store(self) -> str:
        """The hub store's URL (the coordination URL unless --store is given)."""
        return self.store or self.coordination

    def __post_init__(self) -> None:
        if not _REPLICA_ID.fullmatch(self.replica_id):
            raise ValueError(
                f"bad --id {self.replica_id[:80]!r}: a replica id is a lowercase DNS label"
                " (letters, digits and '-', at most 63; e.g. a pod name)"
            )
        parse_hostport(self.listen, what="--listen")
        host, port = parse_hostport(self.advertise, what="--advertise")
        if port == 0 or host in ("0.0.0.0", "::", ""):
            raise ValueError(
                f"--advertise {self.advertise} is not an address agents can dial: give"
                " --advertise HOST:PORT when --listen uses port 0 or a wildcard address"
            )
        if self.metrics:
            parse_hostport(self.metrics, what="--metrics")
        if self.health:
            parse_hostport(self.health, what="--health")
        if self.coordination != "kubernetes" and not self.coordination.startswith(_ETCD):
            raise ValueError(
                f"bad --coordination {etcdurl.redacted(self.coordination)[:80]!r}: expected"
                " etcd://HOST:PORT[,HOST:PORT], etcds://... (TLS) or kubernetes"
            )
        if self.coordination.startswith(_ETCD):
            _etcd_url(self.coordination, what="--coordination")
        if self.store is not None and not self.store.startswith((*_ETCD, "kubernetes://")):
            raise ValueError(
                f"bad --store {etcdurl.redacted(self.store)[:80]!r}: expected"
                " etcd://HOST:PORT[,HOST:PORT], etcds://... (TLS) or"
                " kubernetes://[?kubeconfig=PATH][&hub=NAME][&namespace-prefix=PREFIX]"
                "[&namespace=NS]"
            )
        if self.store is not None and self.store.startswith(_ETCD):
            _etcd_url(self.store, what="--store")
        if self.coordination == "kubernetes" and self.store is None:
            raise ValueError(
                "--coordination kubernetes needs --store: kubernetes:// (Argo CD's objects on"
                " the same cluster) or etcd://HOST:PORT"
            )
        if self.redis is not None:
            registry.check_url(self.redis)
        if self.max_connections < 1:
            raise ValueError(f"--max-connections must be at least 1, got {self.max_connections}")
        for flag, seconds in (
            ("store_timeout", self.store_timeout),
            ("--session-ttl", self.session_ttl),
            ("--liveness-ttl", self.liveness_ttl),
        ):
            if not (math.isfinite(seconds) and seconds > 0):
                raise ValueError(f"{flag} must be a positive number of seconds, got {seconds:g}")
        if not 0.5 <= self.liveness_ttl <= self.session_ttl / 2:
            raise ValueError(
                f"--liveness-ttl {self.liveness_ttl:g} must be between 0.5 s and half the "
                f"--session-ttl ({self.session_ttl / 2:g} s)"
            )
