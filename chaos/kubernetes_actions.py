"""chaostoolkit actions and probes for a real Kubernetes cluster running the charts.

The experiments in chaos/kubernetes/ use chaostoolkit-kubernetes (`chaosk8s`) wherever
it can do the job; this module does what it cannot: find and terminate the leader,
terminate every principal but one, cut the principals off Redis only, remove a
NetworkPolicy idempotently (rollbacks), and read Mooring's state on the cluster.

What a cluster holds, as the charts and the Lease record store write it
(election/_kube.py documents the encoding):
- the principal pods carry the chart's selector labels `app.kubernetes.io/name`,
  `app.kubernetes.io/instance` (the release) and `app.kubernetes.io/component`
  (`principal`; the bundled Redis `redis`; an agent `agent`);
- each replica's id is its pod name (`--id=$(POD_NAME)`), so the leader Lease
  `mooring-election-leader` in the release namespace names the leading pod in
  `spec.holderIdentity`;
- the shard map is Lease `mooring-election-shardmap` (annotations `mooring.io/epoch`,
  `mooring.io/members`, JSON), each member record a Lease whose annotation
  `store.mooring.io/name` is `/mooring/election/members/<pod>` (`mooring.io/appliedEpoch`);
- each replica's metrics port serves the catalog's gauges, read here through the API
  server's pod proxy.

Probes return a number of violations (tolerance 0), waiting up to `timeout` seconds for
it to reach 0, so the hypothesis after the method judges a cluster given time to heal.
Every API call carries a request timeout.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client.exceptions import ApiException

from chaos import _errors as errors
from chaos import _local as local

__all__ = [
    "deny_principal_egress_to_redis",
    "leadership_violations",
    "principal_labels",
    "redis_egress_policy",
    "remove_network_policy_if_present",
    "selector",
    "session_violations",
    "shard_map_violations",
    "terminate_all_principals_but_one",
    "terminate_leader",
    "workload_not_ready",
]

CHART = "mooring"  # app.kubernetes.io/name of the hub chart's pods (no nameOverride)
LEADER_LEASE = "mooring-election-leader"
SHARD_MAP_LEASE = "mooring-election-shardmap"
MEMBER_RECORD_PREFIX = "/mooring/election/members/"
NAME_ANNOTATION = "store.mooring.io/name"
FIELD_ANNOTATION = "mooring.io/"
REDIS_EGRESS_POLICY = "mooring-chaos-deny-redis-egress"
REQUEST_TIMEOUT = 10.0  # seconds, every API call
POLL = 1.0  # seconds between two looks while a probe waits


class ClusterStateError(errors.ChaosError, RuntimeError):
    """The cluster is not in a state an action can act on (no leader, no such pod)."""


def principal_labels(release: str, *, component: str = "principal") -> dict[str, str]:
    """The hub chart's selector labels of one component (`principal` or `redis`)."""
    return {
        "app.kubernetes.io/name": CHART,
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/component": component,
    }


def selector(labels: Mapping[str, str]) -> str:
    """An equality-based label selector string for `labels`."""
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _client(context: str) -> kubernetes.client.ApiClient:
    """From $KUBECONFIG or ~/.kube/config (`context`, or its current one when empty),
    else the in-cluster service account (as chaosk8s does)."""
    try:
        client: kubernetes.client.ApiClient = kubernetes.config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None, context=context or None
        )
        return client
    except kubernetes.config.ConfigException:
        if context:
            raise
        kubernetes.config.load_incluster_config()  # type: ignore[no-untyped-call]
        return kubernetes.client.ApiClient()


def _ready(pod: Any) -> bool:
    if pod.metadata.deletion_timestamp is not None:
        return False
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def _principal_pods(core: kubernetes.client.CoreV1Api, namespace: str, release: str) -> list[Any]:
    found = core.list_namespaced_pod(
        namespace,
        label_selector=selector(principal_labels(release)),
        _request_timeout=REQUEST_TIMEOUT,
    )
    return sorted(found.items, key=lambda p: str(p.metadata.name))


def _lease(
    coordination: kubernetes.client.CoordinationV1Api, namespace: str, name: str
) -> Any | None:
    try:
        return coordination.read_namespaced_lease(name, namespace, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def _field(lease: Any, key: str) -> Any:
    text = (lease.metadata.annotations or {}).get(FIELD_ANNOTATION + key)
    return None if text is None else json.loads(text)


def _leader(client: kubernetes.client.ApiClient, namespace: str) -> str:
    lease = _lease(kubernetes.client.CoordinationV1Api(client), namespace, LEADER_LEASE)
    holder = str(lease.spec.holder_identity or "") if lease is not None else ""
    return holder


def _delete(
    core: kubernetes.client.CoreV1Api, namespace: str, name: str, grace_period: int
) -> None:
    body = kubernetes.client.V1DeleteOptions(
        grace_period_seconds=grace_period if grace_period >= 0 else None
    )
    core.delete_namespaced_pod(name, namespace, body=body, _request_timeout=REQUEST_TIMEOUT)


def terminate_leader(
    namespace: str, release: str, *, grace_period: int = -1, context: str = ""
) -> str:
    """Delete the pod the leader Lease names (grace_period < 0: the pod's own); its name."""
    with _client(context) as client:
        core = kubernetes.client.CoreV1Api(client)
        leader = _leader(client, namespace)
        pods = {p.metadata.name for p in _principal_pods(core, namespace, release)}
        if not leader:
            raise ClusterStateError(f"no leader: Lease {namespace}/{LEADER_LEASE} has no holder")
        if leader not in pods:
            raise ClusterStateError(
                f"the leader {leader!r} is not a principal pod of release {release!r}"
            )
        _delete(core, namespace, leader, grace_period)
        return leader


def terminate_all_principals_but_one(
    namespace: str, release: str, *, grace_period: int = -1, context: str = ""
) -> list[str]:
    """Delete every principal pod but one that does not lead (so leadership moves too)."""
    with _client(context) as client:
        core = kubernetes.client.CoreV1Api(client)
        leader = _leader(client, namespace)
        names = [p.metadata.name for p in _principal_pods(core, namespace, release)]
        if len(names) < 2:
            raise ClusterStateError(f"{len(names)} principal pod(s): nothing to leave standing")
        keep = next((n for n in names if n != leader), names[0])
        doomed = [n for n in names if n != keep]
        for name in doomed:
            _delete(core, namespace, name, grace_period)
        return doomed


def redis_egress_policy(release: str, *, redis_port: int = 6379) -> dict[str, Any]:
    """A NetworkPolicy letting the principals reach anything but port `redis_port`.

    NetworkPolicies only allow; once one selects a pod for Egress, whatever no policy
    allows is denied. So this allows every TCP port but Redis' (two ranges) and all UDP.
    Another policy allowing Redis egress (the chart's own, networkPolicy.enabled) undoes it.
    """
    ranges = [(1, redis_port - 1), (redis_port + 1, 65535)]
    ports: list[dict[str, Any]] = [
        {"protocol": "TCP", "port": low, "endPort": high} for low, high in ranges if low <= high
    ]
    ports.append({"protocol": "UDP", "port": 1, "endPort": 65535})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": REDIS_EGRESS_POLICY,
            "labels": {"app.kubernetes.io/part-of": "mooring", "mooring.io/chaos": "true"},
        },
        "spec": {
            "podSelector": {"matchLabels": principal_labels(release)},
            "policyTypes": ["Egress"],
            "egress": [{"ports": ports}],
        },
    }


def deny_principal_egress_to_redis(
    namespace: str, release: str, *, redis_port: int = 6379, context: str = ""
) -> str:
    """Create `redis_egress_policy`; its name."""
    body: Any = redis_egress_policy(release, redis_port=redis_port)  # the client takes dicts
    with _client(context) as client:
        kubernetes.client.NetworkingV1Api(client).create_namespaced_network_policy(
            namespace, body, _request_timeout=REQUEST_TIMEOUT
        )
    return REDIS_EGRESS_POLICY


def remove_network_policy_if_present(namespace: str, name: str, *, context: str = "") -> bool:
    """Delete NetworkPolicy `name`; False when it was already gone (rollbacks repeat heals)."""
    with _client(context) as client:
        try:
            kubernetes.client.NetworkingV1Api(client).delete_namespaced_network_policy(
                name, namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as err:
            if err.status == 404:
                return False
            raise
    return True


def _wait(look: Callable[[], int], timeout: float) -> int:
    """`look()` until it returns 0 or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        found = look()
        if found == 0 or time.monotonic() >= deadline:
            return found
        time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))


def workload_not_ready(
    namespace: str, label_selector: str, *, timeout: float = 0, context: str = ""
) -> int:
    """How far the StatefulSets and Deployments `label_selector` selects are from whole:
    replicas short of their spec (by their status or by the Ready pods counted here,
    whichever is more) plus matching pods not Ready; 1 when no such workload exists."""
    with _client(context) as client:
        apps = kubernetes.client.AppsV1Api(client)
        core = kubernetes.client.CoreV1Api(client)

        def look() -> int:
            sel, limit = label_selector, REQUEST_TIMEOUT
            workloads: list[Any] = [
                *apps.list_namespaced_stateful_set(
                    namespace, label_selector=sel, _request_timeout=limit
                ).items,
                *apps.list_namespaced_deployment(
                    namespace, label_selector=sel, _request_timeout=limit
                ).items,
            ]
            if not workloads:
                return 1
            wanted = sum(w.spec.replicas or 0 for w in workloads)
            reported = sum((w.status.ready_replicas if w.status else 0) or 0 for w in workloads)
            pods = core.list_namespaced_pod(namespace, label_selector=sel, _request_timeout=limit)
            ready = sum(1 for p in pods.items if _ready(p))
            return max(0, wanted - reported, wanted - ready) + len(pods.items) - ready

        return _wait(look, timeout)


def _age(stamp: Any) -> float | None:
    if not isinstance(stamp, datetime.datetime):
        return None
    return (datetime.datetime.now(datetime.UTC) - stamp).total_seconds()


def leadership_violations(
    namespace: str, release: str, *, timeout: float = 0, context: str = ""
) -> int:
    """1 unless the leader Lease names a Ready principal pod and was renewed within twice
    its duration (compared with this host's clock: fit for a probe, not for a decision)."""
    with _client(context) as client:
        core = kubernetes.client.CoreV1Api(client)
        coordination = kubernetes.client.CoordinationV1Api(client)

        def look() -> int:
            lease = _lease(coordination, namespace, LEADER_LEASE)
            if lease is None or not lease.spec.holder_identity:
                return 1
            ready = {
                p.metadata.name for p in _principal_pods(core, namespace, release) if _ready(p)
            }
            age = _age(lease.spec.renew_time)
            fresh = age is not None and age <= 2 * max(lease.spec.lease_duration_seconds or 1, 1)
            return 0 if lease.spec.holder_identity in ready and fresh else 1

        return _wait(look, timeout)


def shard_map_violations(
    namespace: str, release: str, *, timeout: float = 0, context: str = ""
) -> int:
    """Ready principal pods missing from the shard map, map members that are no Ready
    pod, and Ready pods whose member record has not applied the map's epoch (I3's
    "one epoch" half); 1 when there is no map."""
    with _client(context) as client:
        core = kubernetes.client.CoreV1Api(client)
        coordination = kubernetes.client.CoordinationV1Api(client)

        def look() -> int:
            lease = _lease(coordination, namespace, SHARD_MAP_LEASE)
            if lease is None:
                return 1
            epoch = _field(lease, "epoch")
            members = {str(m.get("id")) for m in _field(lease, "members") or []}
            ready = {
                p.metadata.name for p in _principal_pods(core, namespace, release) if _ready(p)
            }
            applied: dict[str, Any] = {}
            records: list[Any] = coordination.list_namespaced_lease(
                namespace,
                label_selector="app.kubernetes.io/managed-by=mooring",
                _request_timeout=REQUEST_TIMEOUT,
            ).items
            for record in records:
                name = (record.metadata.annotations or {}).get(NAME_ANNOTATION, "")
                if name.startswith(MEMBER_RECORD_PREFIX):
                    applied[name.removeprefix(MEMBER_RECORD_PREFIX)] = _field(
                        record, "appliedEpoch"
                    )
            stale = sum(1 for pod in ready if applied.get(pod) != epoch)
            return len(ready ^ members) + stale

        return _wait(look, timeout)


def _scrape(core: kubernetes.client.CoreV1Api, namespace: str, pod: str, port: int) -> str:
    return str(
        core.connect_get_namespaced_pod_proxy_with_path(
            f"{pod}:{port}", namespace, "metrics", _request_timeout=REQUEST_TIMEOUT
        )
    )


def session_violations(
    namespace: str,
    release: str,
    *,
    metrics_port: int = 9100,
    timeout: float = 0,
    context: str = "",
) -> int:
    """From each Ready principal's metrics (through the API server's pod proxy): owned
    agents not connected to their owner, stand-in sessions, and registered agents no
    replica owns. Every registered agent is expected to be running."""
    with _client(context) as client:
        core = kubernetes.client.CoreV1Api(client)

        def look() -> int:
            pods = [p.metadata.name for p in _principal_pods(core, namespace, release) if _ready(p)]
            if not pods:
                return 1
            owned_total = registered = violations = 0
            for pod in pods:
                got = local.unlabelled(_scrape(core, namespace, pod, metrics_port))
                owned = int(got.get("mooring_agents_owned", 0))
                standins = int(got.get("mooring_standin_sessions_open", 0))
                on_owner = int(got.get("mooring_sessions_open", 0)) - standins
                violations += abs(owned - on_owner) + standins
                owned_total += owned
                registered = max(registered, int(got.get("mooring_agents_registered", 0)))
            return violations + max(0, registered - owned_total)

        return _wait(look, timeout)
