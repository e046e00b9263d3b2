"""The charts render, lint and validate across their options; bad values fail clearly;
monitoring objects come from the one source; every value is documented."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mooring import _monitoring as monitoring
from tests.charts._helm import (
    AGENT,
    AGENT_MINIMAL,
    HUB,
    HUB_MINIMAL,
    ROOT,
    by_kind,
    helm,
    merge,
    render,
    render_error,
)

SUPPORTED_KUBERNETES = ("1.30.0", "1.33.0", "1.35.0", "1.37.0")
"""Versions kubernetes-validate checks the built-in kinds against (README: 1.30+)."""

OPTIONS: dict[str, dict[str, Any]] = {
    "redis-bundled": {"redis": {"url": "", "bundled": {"enabled": True}}},
    "redis-external-secret": {"redis": {"existingSecret": "redis-auth"}},
    "cert-manager": {
        "tls": {
            "existingSecret": "",
            "certManager": {"enabled": True, "issuerRef": {"name": "mooring-ca"}},
        }
    },
    "network-policy": {"networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]}},
    "monitoring": {
        "monitoring": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "dashboards": {"enabled": True},
        }
    },
    "load-balancer": {
        "advertise": {"mode": "template", "hostTemplate": "{pod}.agents.example.com"},
        "replicaServices": {"enabled": True, "type": "LoadBalancer"},
        "service": {"type": "LoadBalancer"},
    },
}
REDIS = ("redis-bundled", "redis-external-secret")
TLS = ("", "cert-manager")
TOGGLES = ("network-policy", "monitoring", "load-balancer")


def combos() -> list[tuple[int, tuple[str, ...]]]:
    out = []
    for replicas in (1, 3, 5):
        for redis, tls in itertools.product(REDIS, TLS):
            for toggles in itertools.product((False, True), repeat=len(TOGGLES)):
                chosen = (redis, tls, *(t for t, on in zip(TOGGLES, toggles, strict=True) if on))
                out.append((replicas, tuple(c for c in chosen if c)))
    return out


def hub_values(replicas: int, chosen: tuple[str, ...]) -> dict[str, Any]:
    values = merge(HUB_MINIMAL, {"replicaCount": replicas})
    for option in chosen:
        values = merge(values, OPTIONS[option])
    return values


@pytest.mark.parametrize("replicas", [1, 3, 5])
def test_the_hub_chart_lints(replicas: int, tmp_path: Path) -> None:
    for chosen in ((), tuple(OPTIONS)[1:]):
        path = tmp_path / f"v{len(chosen)}.yaml"
        path.write_text(yaml.safe_dump(hub_values(replicas, chosen)))
        out = helm("lint", "--strict", str(HUB), "-f", str(path))
        assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_the_agent_chart_lints(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text(
        yaml.safe_dump(merge(AGENT_MINIMAL, {"metrics": {"serviceMonitor": {"enabled": True}}}))
    )
    assert "0 chart(s) failed" in helm("lint", "--strict", str(AGENT), "-f", str(path)).stdout


@pytest.mark.parametrize(("replicas", "chosen"), combos(), ids=lambda v: str(v))
def test_the_option_matrix_renders_what_each_option_promises(
    replicas: int, chosen: tuple[str, ...], tmp_path: Path
) -> None:
    docs = by_kind(render(HUB, hub_values(replicas, chosen), tmp_path))
    (sts,) = docs["StatefulSet"]
    assert sts["spec"]["replicas"] == replicas
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert "--coordination=kubernetes" in args and "--id=$(POD_NAME)" in args
    assert container["livenessProbe"]["grpc"]["service"] == "liveness"
    assert container["readinessProbe"]["grpc"]["service"] == "readiness"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert docs["PodDisruptionBudget"][0]["spec"]["maxUnavailable"] == 1
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}

    redis = next(a for a in args if a.startswith("--redis="))
    if "redis-bundled" in chosen:
        assert redis == "--redis=redis://hub-mooring-redis:6379/0"
        assert any(d["metadata"]["name"] == "hub-mooring-redis" for d in docs["Deployment"])
    else:
        # The password by file from the Secret: on no command line, in no env var.
        assert redis == "--redis=redis://r:6379"
        assert "--redis-password-file=/etc/mooring/redis/password" in args
        assert not any("PASSWORD" in e["name"] for e in container["env"])
        (auth,) = [v for v in pod["volumes"] if v["name"] == "redis-auth"]
        assert auth["secret"]["secretName"] == "redis-auth"
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["redis-auth"]["mountPath"] == "/etc/mooring/redis"
        assert "Deployment" not in docs
    secret = pod["volumes"][0]["secret"]["secretName"]
    if "cert-manager" in chosen:
        (cert,) = docs["Certificate"]
        assert cert["spec"]["secretName"] == secret == "hub-mooring-tls"
        assert "*.hub-mooring-headless.mooring-system.svc" in cert["spec"]["dnsNames"]
    else:
        assert secret == "hub-tls" and "Certificate" not in docs
    assert ("NetworkPolicy" in docs) == ("network-policy" in chosen)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert (kind in docs) == ("monitoring" in chosen)
        if kind in docs:
            assert docs[kind][0]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    services = [
        s["metadata"]["name"] for s in docs["Service"] if "redis" not in s["metadata"]["name"]
    ]
    advertise = next(a for a in args if a.startswith("--advertise="))
    if "load-balancer" in chosen:
        assert advertise == "--advertise=$(POD_NAME).agents.example.com:443"
        assert len(services) == 2 + replicas  # shared, headless, one per replica
    else:
        assert advertise == "--advertise=$(POD_NAME).hub-mooring-headless.$(POD_NAMESPACE).svc:8443"
        assert len(services) == 2


BAD_VALUES = [
    ({"replicaCount": 0}, "at '/replicaCount': minimum: got 0, want 1"),
    ({"replicas": 3}, "additional properties 'replicas' not allowed"),
    ({"redis": {"url": "http://r"}}, "at '/redis/url'"),
    ({"principal": {"logFormat": "xml"}}, "at '/principal/logFormat'"),
    ({"principal": {"port": 70000}}, "at '/principal/port'"),
    (
        {"principal": {"election": {"renewDeadline": 5}}},
        "renewDeadline (5) must be below leaseDuration (4)",
    ),
    (
        {"tls": {"existingSecret": ""}},
        "tls.existingSecret (a kubernetes.io/tls Secret with ca.crt)",
    ),
    ({"redis": {"url": ""}}, "redis.url (an external Redis) or redis.bundled.enabled is required"),
    ({"redis": {"bundled": {"enabled": True}}}, "set either redis.url (external) or redis.bundled"),
    ({"advertise": {"mode": "template"}}, "advertise.hostTemplate is required"),
    (
        {"replicaServices": {"enabled": True}},
        "replicaServices.enabled needs advertise.mode=template",
    ),
    (
        {"monitoring": {"serviceMonitor": {"interval": "soon"}}},
        "at '/monitoring/serviceMonitor/interval'",
    ),
]


@pytest.mark.parametrize("auto_register", [False, True])
def test_registration_and_revocation_rights_follow_auto_register(
    auto_register: bool, tmp_path: Path
) -> None:
    values = merge(HUB_MINIMAL, {"principal": {"hub": "edge-hub", "autoRegister": auto_register}})
    if not auto_register:
        values["principal"].pop("autoRegister")  # the default
    docs = by_kind(render(HUB, values, tmp_path))
    (container,) = docs["StatefulSet"][0]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert ("--auto-register" in args) == auto_register
    store = next(a for a in args if a.startswith("--store="))
    assert store.endswith("?hub=edge-hub&namespace-prefix=&namespace=mooring-system")
    (role,) = docs["Role"]
    assert {
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["edge-hub-revocations"],
        "verbs": ["get"],
    } in role["rules"]
    (cluster_role,) = docs["ClusterRole"]
    [namespaces] = [r for r in cluster_role["rules"] if r["resources"] == ["namespaces"]]
    writes = ["create", "patch"] if auto_register else []
    assert namespaces["verbs"] == ["get", "list", "watch", *writes]


@pytest.mark.parametrize(("bad", "message"), BAD_VALUES, ids=[m for _, m in BAD_VALUES])
def test_bad_hub_values_fail_with_a_clear_message(
    bad: dict[str, Any], message: str, tmp_path: Path
) -> None:
    assert message in render_error(HUB, merge(HUB_MINIMAL, bad), tmp_path)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"agent": {"name": "Edge_01"}}, "at '/agent/name'"),
        ({"agent": {"name": ""}}, "agent.name is required"),
        ({"agent": {"mode": "hybrid"}}, "at '/agent/mode'"),
        ({"agent": {"endpoints": []}}, "agent.endpoints is required"),
        ({"agent": {"endpoints": ["no-port"]}}, "at '/agent/endpoints/0'"),
        ({"tls": {"existingSecret": ""}}, "tls.existingSecret is required"),
    ],
)
def test_bad_agent_values_fail_with_a_clear_message(
    bad: dict[str, Any], message: str, tmp_path: Path
) -> None:
    assert message in render_error(AGENT, merge(AGENT_MINIMAL, bad), tmp_path)


def test_the_prometheus_rule_is_the_alert_rules_source(tmp_path: Path) -> None:
    values = merge(HUB_MINIMAL, OPTIONS["monitoring"])
    (rule,) = by_kind(render(HUB, values, tmp_path))["PrometheusRule"]
    assert rule["spec"]["groups"] == monitoring.rules()["groups"]
    base = "https://runbooks.example/mooring/"
    values = merge(values, {"monitoring": {"prometheusRule": {"runbookBaseURL": base}}})
    (rule,) = by_kind(render(HUB, values, tmp_path))["PrometheusRule"]
    assert rule["spec"]["groups"] == monitoring.rules(runbook_base=base)["groups"]
    urls = [r["annotations"]["runbook_url"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert urls and all(u.startswith(base) for u in urls)


def test_the_dashboard_config_maps_are_the_committed_dashboards(tmp_path: Path) -> None:
    maps = by_kind(render(HUB, merge(HUB_MINIMAL, OPTIONS["monitoring"]), tmp_path))["ConfigMap"]
    shipped = {p.name: p.read_text() for p in monitoring.DASHBOARDS.glob("*.json")}
    got = {}
    for config_map in maps:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        got.update(config_map["data"])
    assert {k: json.loads(v) for k, v in got.items()} == {
        k: json.loads(v) for k, v in shipped.items()
    }
    assert len(got) == 4


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_built_in_kinds_validate_for_each_supported_kubernetes(
    version: str, tmp_path: Path
) -> None:
    every = tuple(OPTIONS)[1:]  # everything on (with an external Redis)
    docs = render(HUB, hub_values(3, every), tmp_path)
    docs += render(HUB, hub_values(3, ("redis-bundled",)), tmp_path)
    docs += render(
        AGENT, merge(AGENT_MINIMAL, {"metrics": {"serviceMonitor": {"enabled": True}}}), tmp_path
    )
    checked = 0
    for doc in docs:
        if doc["apiVersion"].split("/")[0] in ("monitoring.coreos.com", "cert-manager.io"):
            continue  # custom resources: the real API server checks those (test_apply)
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 15


def _chart_docs() -> Any:
    spec = importlib.util.spec_from_file_location(
        "genchartdocs", ROOT / "scripts" / "genchartdocs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("chart", [HUB, AGENT], ids=["mooring", "mooring-agent"])
def test_every_value_is_documented(chart: Path) -> None:
    docs = _chart_docs()
    text = (chart / "values.yaml").read_text()
    notes = docs.documented(text)
    undocumented = [path for path, _ in docs.leaves(yaml.safe_load(text)) if not notes.get(path)]
    assert undocumented == [], "values without a `# --` comment in values.yaml"
    readme = (chart / "README.md").read_text()
    assert readme == docs.render(chart), "README's values table is stale: scripts/genchartdocs.py"
    for section in ("## Install", "## Upgrade", "## Values"):
        assert section in readme
    schema = json.loads((chart / "values.schema.json").read_text())
    assert set(yaml.safe_load(text)) <= set(schema["properties"])
