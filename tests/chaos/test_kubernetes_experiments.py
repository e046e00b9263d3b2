"""The Kubernetes flavour of the chaos experiments (chaos/kubernetes/): each file is valid
for chaostoolkit (and validation really imports and binds every activity), every label
selector selects the pods the charts render and nothing else, every NetworkPolicy an
experiment creates is accepted by a real kube-apiserver, and the activities themselves
run against one (no kubelet: pods are objects whose Ready status the test writes)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chaoslib
import pytest

from chaos import kubernetes_actions as actions
from election import _kube as kube
from election import _membership as membership
from election import _stores as stores
from election._shardmap import ShardMap
from mooring import _kubeapi as kubeapi
from tests.charts._helm import AGENT, HUB, ROOT, render
from tests.charts.test_rbac import apply_objects

pytestmark = pytest.mark.chaos

FOLDER = ROOT / "chaos" / "kubernetes"
NAMES = (
    "deny-ingress-principals",
    "deny-principals-to-redis",
    "terminate-agent",
    "terminate-all-principals-but-one",
    "terminate-leader",
    "terminate-principal",
    "terminate-redis",
)
ENV = {  # every variable the experiments read, set as an operator would
    "MOORING_NAMESPACE": "mooring-system",
    "MOORING_RELEASE": "hub",
    "KUBERNETES_CONTEXT": "hub-cluster",  # chaosk8s reads it too; unset: the current context
    "MOORING_CONVERGE_TIMEOUT": "240",
    "MOORING_METRICS_PORT": "9100",
    "MOORING_REDIS_PORT": "6379",
    "MOORING_AGENT_NAMESPACE": "argocd",
    "MOORING_AGENT_RELEASE": "edge-01",
    "MOORING_HUB_KUBE_CONTEXT": "hub-cluster",
}
HUB_VALUES: dict[str, Any] = {
    "replicaCount": 3,
    "tls": {"existingSecret": "hub-tls"},
    "redis": {"bundled": {"enabled": True}},
}
AGENT_VALUES: dict[str, Any] = {
    "agent": {"name": "edge-01", "endpoints": ["hub.example:8443"]},
    "tls": {"existingSecret": "agent-tls"},
}


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FOLDER / f"{name}.json").read_text())
    return doc


def activities(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from doc["steady-state-hypothesis"]["probes"]
    yield from doc["method"]
    yield from doc.get("rollbacks", [])


def configured(doc: dict[str, Any], values: dict[str, Any]) -> list[dict[str, Any]]:
    """The activities with `${...}` replaced by chaoslib itself: `values` where given,
    else each configuration entry's default."""
    config = {key: values.get(key, entry["default"]) for key, entry in doc["configuration"].items()}
    return [chaoslib.substitute(a, config, {}) for a in activities(doc)]


CHAOS = (sys.executable, "-m", "chaostoolkit", "--no-version-check", "--no-log-file")


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHAOS, "validate", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        cwd=str(ROOT),
        timeout=120,
    )


# -- the files ---------------------------------------------------------------------------


def test_every_fault_has_its_file() -> None:
    assert sorted(p.stem for p in FOLDER.glob("*.json")) == sorted(NAMES)
    for name in NAMES:
        doc = load(name)
        assert doc["extensions"][0]["fault"] == name and doc["title"].startswith(f"{name}: ")
        for entry in doc["configuration"].values():
            assert entry["type"] == "env" and "default" in entry, entry
        for activity in activities(doc):
            module = activity["provider"]["module"]
            assert module == actions.__name__ or module.startswith("chaosk8s."), module
        for probe in doc["steady-state-hypothesis"]["probes"]:
            assert probe["tolerance"] in (0, True), probe


@pytest.mark.parametrize("name", NAMES)
def test_each_experiment_is_valid_for_chaostoolkit(name: str) -> None:
    proc = validate(FOLDER / f"{name}.json")
    assert proc.returncode == 0, proc.stderr[-800:]
    assert "experiment syntax and semantic look valid" in proc.stderr + proc.stdout


BREAKAGES = {
    "no such function": (
        lambda a: a["provider"].update(func="terminate_the_leader"),
        "does not expose a function called 'terminate_the_leader'",
    ),
    "no such module": (
        lambda a: a["provider"].update(module="chaos.kubernetes_actionz"),
        "could not find Python module 'chaos.kubernetes_actionz'",
    ),
    "unknown argument": (
        lambda a: a["provider"]["arguments"].update(grace="0"),
        "argument 'grace' is not part of the function signature",
    ),
    "missing argument": (
        lambda a: a["provider"]["arguments"].pop("release"),
        "required argument 'release' is missing",
    ),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_validation_imports_and_binds_every_python_activity(breakage: str, tmp_path: Path) -> None:
    """The check above could fail: a file whose action names a missing function or
    module, or arguments its function does not take, does not validate."""
    doc = load("terminate-leader")
    break_, message = BREAKAGES[breakage]
    break_(doc["method"][0])
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(doc))
    proc = validate(path)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout, proc.stderr[-800:]


def test_every_network_fault_is_healed_in_the_method_and_again_in_the_rollbacks() -> None:
    for name, policy in (
        ("deny-ingress-principals", "chaostoolkit-deny-all-ingress"),
        ("deny-principals-to-redis", actions.REDIS_EGRESS_POLICY),
    ):
        doc = load(name)
        heal, rollback = doc["method"][-1], doc["rollbacks"][0]
        assert (
            heal["name"] == "heal" and heal["provider"]["module"] == "chaosk8s.networking.actions"
        )
        assert rollback["provider"]["func"] == "remove_network_policy_if_present"
        assert rollback["provider"]["arguments"]["name"] == policy


# -- selectors against the rendered charts ----------------------------------------------

CASES = {  # configuration values -> (hub namespace, agent namespace)
    "defaults": {"namespace": "ck8s-defaults-hub", "agent_namespace": "ck8s-defaults-agent"},
    "other-releases": {
        "namespace": "ck8s-other-hub",
        "release": "edge-hub",
        "agent_namespace": "ck8s-other-agent",
        "agent_release": "edge-07",
    },
}


def _defaults(name: str, key: str) -> str:
    return str(load(name)["configuration"][key]["default"])


def _create_pods(
    kube_apiserver: kubeapi.KubeAPIServer, docs: list[dict[str, Any]], namespace: str, role: str
) -> dict[str, set[str]]:
    """A Pod for each replica of each rendered workload (its template's labels, a minimal
    spec); the names by role: principal (StatefulSet), redis, agent."""
    out: dict[str, set[str]] = {}
    for doc in docs:
        if doc["kind"] not in ("StatefulSet", "Deployment"):
            continue
        kind = "principal" if doc["kind"] == "StatefulSet" else role
        for index in range(int(doc["spec"].get("replicas", 1))):
            name = f"{doc['metadata']['name']}-{index}"
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": doc["spec"]["template"]["metadata"]["labels"]},
                "spec": {"containers": [{"name": "c", "image": "example.invalid/c:1"}]},
            }
            status, text = kube_apiserver.request(
                "POST", f"/api/v1/namespaces/{namespace}/pods", body=json.dumps(body).encode()
            )
            assert status in (201, 409), text
            out.setdefault(kind, set()).add(name)
    return out


def _select(kube_apiserver: kubeapi.KubeAPIServer, namespace: str, selector: str) -> set[str]:
    query = urllib.parse.urlencode({"labelSelector": selector})
    status, text = kube_apiserver.request("GET", f"/api/v1/namespaces/{namespace}/pods?{query}")
    assert status == 200, text
    return {item["metadata"]["name"] for item in json.loads(text)["items"]}


def _selectors(activity: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(namespace, label selector) of every pod selection an activity makes."""
    provider, args = activity["provider"], activity["provider"]["arguments"]
    namespace = args.get("ns", args.get("namespace"))
    if "label_selector" in args:
        yield namespace, args["label_selector"]
    if "label_selectors" in args:  # a NetworkPolicy's podSelector.matchLabels
        yield namespace, actions.selector(args["label_selectors"])
    if provider["module"] == actions.__name__ and "release" in args:
        yield namespace, actions.selector(actions.principal_labels(args["release"]))
    if provider["func"] == "deny_principal_egress_to_redis":
        policy = actions.redis_egress_policy(args["release"], redis_port=args["redis_port"])
        yield namespace, actions.selector(policy["spec"]["podSelector"]["matchLabels"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_selector_selects_the_pods_the_charts_render(
    case: str, kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path
) -> None:
    values = CASES[case]
    hub_ns, agent_ns = values["namespace"], values["agent_namespace"]
    release = values.get("release", _defaults("terminate-leader", "release"))
    agent_release = values.get("agent_release", _defaults("terminate-agent", "agent_release"))
    pods: dict[str, set[str]] = {}
    for namespace, chart, chart_values, role, rel in (
        (hub_ns, HUB, HUB_VALUES, "redis", release),
        (agent_ns, AGENT, AGENT_VALUES, "agent", agent_release),
    ):
        kube_apiserver.create_namespace(namespace)
        # A second release beside it, whose pods no selector may pick.
        _create_pods(
            kube_apiserver, render(chart, chart_values, tmp_path, release="decoy"), namespace, role
        )
        docs = render(chart, chart_values, tmp_path, release=rel, namespace=namespace)
        created = _create_pods(kube_apiserver, docs, namespace, role)
        for doc in docs:  # the workloads' own selectors pick exactly their pods
            if doc["kind"] in ("StatefulSet", "Deployment"):
                own = actions.selector(doc["spec"]["selector"]["matchLabels"])
                kind = "principal" if doc["kind"] == "StatefulSet" else role
                assert _select(kube_apiserver, namespace, own) == created[kind]
        pods.update(created)
    assert len(pods["principal"]) == 3 and len(pods["redis"]) == 1 and len(pods["agent"]) == 1

    for name in NAMES:
        targets: set[str] = set()
        for activity in configured(load(name), values):
            for namespace, selector in _selectors(activity):
                chosen = _select(kube_apiserver, namespace, selector)
                role = next((r for r, names in pods.items() if names == chosen), None)
                assert role is not None, (name, activity["name"], selector, chosen)
                targets.add(role)
        wanted = {"principal"} | {"terminate-redis": {"redis"}, "terminate-agent": {"agent"}}.get(
            name, set()
        )
        assert targets == wanted, (name, targets)


# -- NetworkPolicies on the real API server ---------------------------------------------


def _network_policies(
    values: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[str, dict[str, Any]]]:
    """(namespace, body) of every NetworkPolicy the experiments' actions create, with the
    experiments' own (substituted) arguments; chaosk8s builds its body inside its helper,
    so that helper runs with the API call captured."""
    from chaosk8s.networking import actions as k8s_networking

    out: list[tuple[str, dict[str, Any]]] = []
    captured: list[dict[str, Any]] = []
    monkeypatch.setattr(
        k8s_networking,
        "create_network_policy",
        lambda spec=None, **kw: captured.append({"spec": spec, **kw}),
    )
    for name in NAMES:
        for activity in configured(load(name), values):
            provider, args = activity["provider"], activity["provider"]["arguments"]
            if provider["func"] == "deny_all_ingress":
                captured.clear()
                k8s_networking.deny_all_ingress(**args)
                out += [(c["ns"], c["spec"]) for c in captured]
            elif provider["func"] == "deny_principal_egress_to_redis":
                body = actions.redis_egress_policy(args["release"], redis_port=args["redis_port"])
                out.append((args["namespace"], body))
    return out


def _dry_run(kube_apiserver: kubeapi.KubeAPIServer, namespace: str, body: Any) -> tuple[int, str]:
    return kube_apiserver.request(
        "POST",
        f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies?dryRun=All",
        body=json.dumps(body).encode(),
    )


def test_every_network_policy_is_accepted_by_the_api_server(
    kube_apiserver: kubeapi.KubeAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = {"namespace": "ck8s-policies"}
    kube_apiserver.create_namespace(values["namespace"])
    policies = _network_policies(values, monkeypatch)
    assert sorted(b["metadata"]["name"] for _, b in policies) == sorted(
        ["chaostoolkit-deny-all-ingress", actions.REDIS_EGRESS_POLICY]
    )
    for namespace, body in policies:
        assert namespace == values["namespace"]
        status, text = _dry_run(kube_apiserver, namespace, body)
        assert status == 201, text
        assert json.loads(text)["spec"]["podSelector"] == body["spec"]["podSelector"]
    # ... and the dry run would refuse a bad one: a port range that ends before it starts.
    bad = actions.redis_egress_policy("hub")
    bad["spec"]["egress"][0]["ports"][0]["endPort"] = 0
    status, text = _dry_run(kube_apiserver, values["namespace"], bad)
    assert status == 422, text
    # Nothing was created.
    status, text = kube_apiserver.request(
        "GET", f"/apis/networking.k8s.io/v1/namespaces/{values['namespace']}/networkpolicies"
    )
    assert status == 200 and json.loads(text)["items"] == []


def test_the_redis_policy_denies_exactly_the_redis_port() -> None:
    ports = actions.redis_egress_policy("hub", redis_port=6380)["spec"]["egress"][0]["ports"]
    tcp = [(p["port"], p["endPort"]) for p in ports if p["protocol"] == "TCP"]
    assert tcp == [(1, 6379), (6381, 65535)]
    assert [(p["port"], p["endPort"]) for p in ports if p["protocol"] == "UDP"] == [(1, 65535)]


# -- the activities, run as chaostoolkit runs them, on the real API server ---------------

RUNNER = """
import json, sys
from chaoslib.activity import run_activity
from chaoslib.configuration import load_configuration
doc = json.load(open(sys.argv[1]))
config = load_configuration(doc["configuration"])
found = [a for section in (doc["steady-state-hypothesis"]["probes"], doc["method"],
         doc.get("rollbacks", [])) for a in section if a["name"] == sys.argv[2]]
print(json.dumps(run_activity(found[int(sys.argv[3])], config, {})))
"""


def _run(
    kube_apiserver: kubeapi.KubeAPIServer,
    env: dict[str, str],
    name: str,
    activity: str,
    index: int = 0,
) -> Any:
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(FOLDER / f"{name}.json"), activity, str(index)],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "KUBECONFIG": str(kube_apiserver.kubeconfig)},
        cwd=str(ROOT),
        timeout=120,
    )
    assert proc.returncode == 0, (name, activity, proc.stderr[-1500:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _patch_status(kube_apiserver: kubeapi.KubeAPIServer, path: str, status: dict[str, Any]) -> None:
    code, text = kube_apiserver.request(
        "PATCH",
        f"{path}/status",
        body=json.dumps({"status": status}).encode(),
        content_type="application/merge-patch+json",
    )
    assert code == 200, text


async def _write_records(kubeconfig: str, namespace: str, pods: list[str], leader: str) -> None:
    """The leader, member and shard-map records, written by Mooring's own Lease store."""
    store = stores.open_store(
        "kubernetes",
        prefix="/mooring/election/",
        namespace=namespace,
        timeout=5.0,
        env={"KUBECONFIG": kubeconfig},
    )
    try:
        await _records(store, pods, leader)
    finally:
        await store.close()


async def _records(store: stores.FencedRecordStore, pods: list[str], leader: str) -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    await store.create(
        "leader", {"holderIdentity": leader, "leaseDurationSeconds": 4, "renewTime": now}
    )
    endpoints = {pod: f"{pod}.live-mooring-headless:8443" for pod in pods}
    shard_map = ShardMap(epoch=3, members=tuple(endpoints.items()), published_by=leader, token=1)
    await store.create("shardmap", shard_map.to_data())
    for pod in pods:
        await store.create(
            membership.member_record_name(pod),
            {
                membership.REPLICA_ID: pod,
                membership.ENDPOINT: endpoints[pod],
                membership.APPLIED_EPOCH: 3,
                membership.RENEW_TIME: now,
            },
        )


def test_the_lease_names_are_the_ones_the_store_writes() -> None:
    assert kube.lease_name("/mooring/election/leader") == actions.LEADER_LEASE
    assert kube.lease_name("/mooring/election/shardmap") == actions.SHARD_MAP_LEASE
    assert kube.NAME_ANNOTATION == actions.NAME_ANNOTATION
    assert kube.ANNOTATION_PREFIX == actions.FIELD_ANNOTATION


def test_the_activities_run_on_the_api_server(
    kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path
) -> None:
    namespace, release = "ck8s-live", "live"
    env = {**ENV, "MOORING_NAMESPACE": namespace, "MOORING_RELEASE": release}
    env["KUBERNETES_CONTEXT"] = "testbed"  # the test bed kubeconfig's context
    env["MOORING_CONVERGE_TIMEOUT"] = "2"
    kube_apiserver.create_namespace(namespace)
    docs = render(HUB, HUB_VALUES, tmp_path, release=release, namespace=namespace)
    apply_objects(kube_apiserver, docs)
    pods = _create_pods(kube_apiserver, docs, namespace, "redis")
    principals = sorted(pods["principal"])
    ready = {"conditions": [{"type": "Ready", "status": "True"}], "phase": "Running"}
    for name in [*principals, *pods["redis"]]:
        _patch_status(kube_apiserver, f"/api/v1/namespaces/{namespace}/pods/{name}", ready)
    for doc in docs:
        if doc["kind"] in ("StatefulSet", "Deployment"):
            plural = doc["kind"].lower() + "s"
            wanted = int(doc["spec"].get("replicas", 1))
            _patch_status(
                kube_apiserver,
                f"/apis/apps/v1/namespaces/{namespace}/{plural}/{doc['metadata']['name']}",
                {"replicas": wanted, "readyReplicas": wanted},
            )
    leader = principals[1]
    asyncio.run(_write_records(str(kube_apiserver.kubeconfig), namespace, principals, leader))

    # The steady state holds (all but the metrics probe: no pod serves metrics here).
    hypothesis = {
        "every-principal-replica-ready": 0,
        "every-principal-pod-ready-condition": True,
        "one-live-leader": 0,
        "every-replica-on-the-shard-map-epoch": 0,
        "redis-ready": 0,
    }
    for probe, expected in hypothesis.items():
        assert _run(kube_apiserver, env, "terminate-redis", probe) == expected, probe

    # The leader's pod goes; the probes see it at once.
    assert _run(kube_apiserver, env, "terminate-leader", "1-terminate-leader") == leader
    assert _select(
        kube_apiserver, namespace, actions.selector(actions.principal_labels(release))
    ) == (set(principals) - {leader})
    assert _run(kube_apiserver, env, "terminate-leader", "every-principal-replica-ready") == 1
    assert _run(kube_apiserver, env, "terminate-leader", "one-live-leader") == 1
    assert (
        _run(kube_apiserver, env, "terminate-leader", "every-replica-on-the-shard-map-epoch") == 1
    )

    # All but one: one pod stays, and it is not the one the Lease names.
    doomed = _run(
        kube_apiserver, env, "terminate-all-principals-but-one", "1-terminate-all-but-one"
    )
    left = _select(kube_apiserver, namespace, actions.selector(actions.principal_labels(release)))
    assert (
        len(left) == 1 and leader not in left and set(doomed) | left == set(principals) - {leader}
    )

    # chaosk8s' own terminate_pods with the experiment's selector takes Redis, only Redis.
    assert _run(kube_apiserver, env, "terminate-redis", "1-terminate-redis") == sorted(
        pods["redis"]
    )
    assert _run(kube_apiserver, env, "terminate-redis", "redis-ready") == 1
    assert len(_select(kube_apiserver, namespace, "app.kubernetes.io/component=principal")) == 1

    # The network faults: created for real, healed, and the rollback heals again harmlessly.
    policies = f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies"
    for name, fault, policy in (
        ("deny-ingress-principals", "1-deny-all-ingress", "chaostoolkit-deny-all-ingress"),
        ("deny-principals-to-redis", "1-deny-egress-to-redis", actions.REDIS_EGRESS_POLICY),
    ):
        _run(kube_apiserver, env, name, fault)
        status, text = kube_apiserver.request("GET", f"{policies}/{policy}")
        assert status == 200, text
        selected = json.loads(text)["spec"]["podSelector"]["matchLabels"]
        assert selected == actions.principal_labels(release)
        _run(kube_apiserver, env, name, "heal", 0)  # the method's heal (chaosk8s)
        assert kube_apiserver.request("GET", f"{policies}/{policy}")[0] == 404
        assert _run(kube_apiserver, env, name, "heal", 1) is False  # the rollback: already gone
