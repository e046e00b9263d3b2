"""Every object the charts render is accepted by the real API server (server-side
apply), with the CRDs they reference installed: Argo CD's, prometheus-operator's
ServiceMonitor and PrometheusRule, cert-manager's Certificate (all from the test bed)."""

from __future__ import annotations

from pathlib import Path

from mooring import _kubeapi as kubeapi
from tests.charts._helm import AGENT, HUB, merge, render
from tests.charts.test_rbac import apply_objects


def test_every_rendered_object_is_accepted_by_the_api_server(
    kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path
) -> None:
    # The session's apiserver has Argo CD's, prometheus-operator's and cert-manager's CRDs.
    everything = {
        "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "ca"}}},
        "redis": {"existingSecret": "redis-auth", "url": "rediss://redis.example:6380/0"},
        "networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32"]},
        "monitoring": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "dashboards": {"enabled": True},
        },
        "advertise": {"mode": "template", "hostTemplate": "{pod}.agents.example.com"},
        "replicaServices": {"enabled": True, "type": "LoadBalancer"},
    }
    for index, (chart, values, namespace) in enumerate(
        [
            (HUB, everything, "apply-hub"),
            (
                HUB,
                {"tls": {"existingSecret": "t"}, "redis": {"bundled": {"enabled": True}}},
                "apply-trial",
            ),
            (
                AGENT,
                merge(
                    {
                        "agent": {"name": "edge-x", "endpoints": ["h:443"]},
                        "tls": {"existingSecret": "t"},
                    },
                    {"metrics": {"serviceMonitor": {"enabled": True}}},
                ),
                "apply-agent",
            ),
        ]
    ):
        docs = render(chart, values, tmp_path, release=f"r{index}", namespace=namespace)
        kube_apiserver.create_namespace(namespace)
        apply_objects(kube_apiserver, docs)  # raises on the first object refused
        kinds = {d["kind"] for d in docs}
        assert "StatefulSet" in kinds or "Deployment" in kinds
