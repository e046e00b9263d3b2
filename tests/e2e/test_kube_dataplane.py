"""Both sides on Kubernetes: the hub's and the workload cluster's Argo CD objects.

One real principal (`--coordination kubernetes --store kubernetes://`) and real agents
(`agent run --store kubernetes://?namespace=...`), all against the test bed's
kube-apiserver: each agent's "workload cluster" is an Argo CD namespace of its own there
(one apiserver with a namespace per agent stands in for a cluster per agent; Mooring
talks to either through a kubeconfig, and nothing here depends on them being one). The
test plays Argo CD: it writes status, and removes the finalizer after a delete.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import yaml

from mooring import _kubeapi as kubeapi
from tests import _procs as procs
from tests import _testbed as testbed
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e

GROUP, VERSION = "argoproj.io", "v1alpha1"
FINALIZER = "resources-finalizer.argocd.argoproj.io"


class Plane:
    def __init__(self, apiserver: kubeapi.KubeAPIServer, root: Path, name: str) -> None:
        self.apiserver = apiserver
        self.root = root
        self.name = name
        apiserver.create_namespace(name)  # the Leases
        self.store = (
            f"kubernetes://?kubeconfig={apiserver.kubeconfig}&hub={name}&namespace-prefix={name}-"
        )
        self.env = {"MOORING_STORE": self.store, "KUBECONFIG": str(apiserver.kubeconfig)}
        self.pki = root / "pki"
        mooring("pki", "init", "--dir", str(self.pki))
        mooring(
            "pki",
            "issue",
            "principal",
            "--dir",
            str(self.pki),
            "--name",
            "p1",
            "--san",
            "127.0.0.1",
        )
        self.port = procs.free_port()
        settings = procs.replica_settings(
            "p1",
            listen=f"127.0.0.1:{self.port}",
            coordination="kubernetes",
            namespace=name,
            store=self.store,
            tls_dir=self.pki / "principals" / "p1",
            heartbeat_interval=1.0,
            auto_register=True,  # agents register by connecting
        )
        self.principal = procs.replica(settings, log=root / "principal.log", env=self.env).start()
        self.agents: dict[str, procs.Proc] = {}
        self.metrics: dict[str, int] = {}
        client = kubernetes.config.new_client_from_config(str(apiserver.kubeconfig))
        self.client = client
        self.api = kubernetes.client.CustomObjectsApi(client)

    def workload(self, agent: str) -> str:
        return f"{self.name}-wl-{agent}"

    def hub(self, agent: str) -> str:
        return f"{self.name}-{agent}"

    def add_agent(self, agent: str, mode: str) -> None:
        self.apiserver.create_namespace(self.workload(agent))
        mooring("pki", "issue", "agent", "--dir", str(self.pki), "--name", agent)
        self.metrics[agent] = procs.free_port()
        store = (
            f"kubernetes://?kubeconfig={self.apiserver.kubeconfig}&namespace={self.workload(agent)}"
        )
        self.agents[agent] = procs.Proc(
            [
                "agent", "run", "--name", agent, "--mode", mode,
                "--endpoints", f"127.0.0.1:{self.port}", "--tls-dir", str(self.pki / "agents" / agent),
                "--store", store, "--metrics", f"127.0.0.1:{self.metrics[agent]}",
            ],
            log=self.root / f"agent-{agent}.log",
        ).start()  # fmt: skip

    def connected(self, agent: str) -> bool:
        samples = procs.scrape(self.metrics[agent])
        return samples is not None and samples.value("mooring_agent_connected") == 1.0

    def metric(self, agent: str, name: str) -> float:
        """The sum of `name`'s series on the agent's port (0 if it has none)."""
        samples = procs.scrape(self.metrics[agent])
        assert samples is not None, f"{agent}'s /metrics does not answer"
        return samples.sum(name) or 0.0

    def get(self, namespace: str, name: str, plural: str = "applications") -> dict[str, Any] | None:
        try:
            return dict(
                self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
            )
        except kubernetes.client.exceptions.ApiException as err:
            if err.status == 404:
                return None
            raise

    def apply(self, agent: str, docs: list[dict], *, check: bool = True) -> Any:
        path = self.root / f"apply-{agent}.json"
        path.write_text("\n---\n".join(json.dumps(d) for d in docs))
        return mooring("app", "apply", "-f", str(path), "--agent", agent, check=check, env=self.env)

    def logs(self) -> str:
        parts = [f"--- principal\n{self.principal.output()[-3000:]}"]
        parts += [f"--- {a}\n{p.output()[-3000:]}" for a, p in self.agents.items()]
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in self.agents.values():
            proc.stop()
        self.principal.stop()
        self.client.close()


@pytest.fixture
def plane(kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path, prefix: str) -> Iterator[Plane]:
    made = Plane(kube_apiserver, tmp_path, prefix.strip("/"))
    try:
        yield made
    finally:
        made.stop()


def examples() -> list[dict]:
    testbed.require(examples=True)
    docs = [
        yaml.safe_load(testbed.argocd_example(name).read_text())
        for name in ("application.yaml", "project.yaml")
    ]
    for doc in docs:
        doc["metadata"].setdefault("annotations", {})[
            "notifications.argoproj.io/subscribe.on-sync-succeeded.slack"
        ] = "deploys"
    return docs


def app(name: str, *, path: str = "guestbook") -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/apps.git", "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


def test_managed_objects_reach_the_workload_cluster_whole_and_status_comes_back(
    plane: Plane,
) -> None:
    plane.add_agent("edge-m", "managed")
    wait_for(lambda: plane.connected("edge-m"), timeout=20, what="agent connected")
    docs = examples()
    plane.apply("edge-m", docs)
    workload = plane.workload("edge-m")
    try:
        got = wait_for(
            lambda: plane.get(workload, "guestbook"), timeout=15, what="the app on the workload"
        )
        project = wait_for(
            lambda: plane.get(workload, "my-project", "appprojects"), what="the project"
        )
    except AssertionError as err:
        raise AssertionError(f"{err}\n{plane.logs()}") from None
    for doc, obj in zip(docs, (got, project), strict=True):
        assert obj["spec"] == doc["spec"]
        assert obj["metadata"]["finalizers"] == doc["metadata"]["finalizers"]
        for key in ("labels", "annotations"):
            theirs = {
                k: v
                for k, v in obj["metadata"].get(key, {}).items()
                if not k.startswith("mooring.io/")
            }
            assert theirs == doc["metadata"].get(key, {}), key
        assert obj["metadata"]["labels"]["mooring.io/agent"] == "edge-m"

    # Playing Argo CD on the workload cluster: it reports status on the object.
    status = {"sync": {"status": "Synced", "revision": "abc123"}, "health": {"status": "Healthy"}}
    plane.api.patch_namespaced_custom_object(
        GROUP, VERSION, workload, "applications", "guestbook", {"status": status},
        _content_type="application/merge-patch+json",
    )  # fmt: skip

    def hub_status() -> dict | None:
        hub = plane.get(plane.hub("edge-m"), "guestbook")
        return hub.get("status") if hub else None

    assert wait_for(hub_status, timeout=15, what="the status on the hub") == status

    # A delete on the hub deletes on the workload cluster with Argo CD's finalizer intact:
    # the object stays (being deleted) until Argo CD, having cascaded, removes it.
    out = mooring("app", "delete", "guestbook", "--agent", "edge-m", env=plane.env)
    assert "deleted" in out.stdout

    def being_deleted() -> dict | None:
        obj = plane.get(workload, "guestbook")
        return obj if obj and obj["metadata"].get("deletionTimestamp") else None

    assert plane.get(plane.hub("edge-m"), "guestbook") is None  # no controller holds it there
    obj = wait_for(being_deleted, timeout=15, what="deletion started on the workload")
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    plane.api.patch_namespaced_custom_object(
        GROUP, VERSION, workload, "applications", "guestbook",
        [{"op": "remove", "path": "/metadata/finalizers"}],
        _content_type="application/json-patch+json",
    )  # fmt: skip
    wait_for(lambda: plane.get(workload, "guestbook") is None, what="gone once Argo CD let go")
    assert plane.metric("edge-m", "mooring_apply_errors_total") == 0


def test_an_autonomous_clusters_own_objects_are_mirrored_and_read_only_on_the_hub(
    plane: Plane,
) -> None:
    plane.add_agent("edge-a", "autonomous")
    wait_for(lambda: plane.connected("edge-a"), timeout=20, what="agent connected")
    workload = plane.workload("edge-a")
    plane.api.create_namespaced_custom_object(GROUP, VERSION, workload, "applications", app("own"))
    mirror = wait_for(lambda: plane.get(plane.hub("edge-a"), "own"), timeout=15, what="the mirror")
    assert mirror["spec"]["source"]["path"] == "guestbook"
    assert mirror["metadata"]["annotations"]["mooring.io/origin"] == "agent"
    refused = plane.apply("edge-a", [app("own", path="changed")], check=False)
    assert refused.returncode == 1 and "autonomous" in refused.stderr
    # Deleted on the workload cluster: gone on the hub too.
    plane.api.delete_namespaced_custom_object(GROUP, VERSION, workload, "applications", "own")
    wait_for(
        lambda: plane.get(plane.hub("edge-a"), "own") is None, timeout=15, what="the mirror deleted"
    )


def test_an_object_the_workload_refuses_is_counted_and_others_still_arrive(plane: Plane) -> None:
    plane.add_agent("edge-r", "managed")
    wait_for(lambda: plane.connected("edge-r"), timeout=20, what="agent connected")
    workload = plane.workload("edge-r")
    # An object of that name that Mooring did not create is left alone.
    plane.api.create_namespaced_custom_object(
        GROUP, VERSION, workload, "applications", app("theirs", path="by-hand")
    )
    plane.apply("edge-r", [app("theirs"), app("fine")])
    wait_for(lambda: plane.get(workload, "fine"), timeout=15, what="the other app arrives")
    wait_for(
        lambda: plane.metric("edge-r", "mooring_apply_errors_total") >= 1,
        what="the refusal counted",
    )
    assert plane.get(workload, "theirs")["spec"]["source"]["path"] == "by-hand"
    assert plane.connected("edge-r")

    # The hub's copy says why it never arrived (an Argo CD status condition).
    def condition() -> dict | None:
        hub_obj = plane.get(plane.hub("edge-r"), "theirs") or {}
        found = [
            c
            for c in (hub_obj.get("status") or {}).get("conditions") or []
            if c["type"] == "MooringDeliveryError"
        ]
        return found[0] if found else None

    got = wait_for(condition, timeout=15, what="the refusal on the hub object")
    assert "was not created by Mooring" in got["message"]


def test_drift_on_the_workload_cluster_is_repaired(plane: Plane) -> None:
    plane.add_agent("edge-x", "managed")
    wait_for(lambda: plane.connected("edge-x"), timeout=20, what="agent connected")
    workload = plane.workload("edge-x")
    plane.apply("edge-x", [app("web")])
    wait_for(lambda: plane.get(workload, "web"), timeout=15, what="the app on the workload")

    # Someone edits the spec with kubectl: the agent notices and resyncs; the hub's wins.
    plane.api.patch_namespaced_custom_object(
        GROUP, VERSION, workload, "applications", "web",
        {"spec": {"source": {"path": "tampered"}}}, _content_type="application/merge-patch+json",
    )  # fmt: skip

    def path() -> str:
        obj = plane.get(workload, "web")
        return obj["spec"]["source"]["path"] if obj else ""

    wait_for(lambda: path() == "guestbook", timeout=15, what="the spec repaired")
    # Someone deletes it: it comes back.
    plane.api.delete_namespaced_custom_object(GROUP, VERSION, workload, "applications", "web")
    wait_for(lambda: path() == "guestbook", timeout=15, what="the app recreated")
    assert plane.metric("edge-x", "mooring_drift_repairs_total") >= 2


def test_drift_of_an_autonomous_mirror_on_the_hub_is_repaired(plane: Plane) -> None:
    plane.add_agent("edge-y", "autonomous")
    wait_for(lambda: plane.connected("edge-y"), timeout=20, what="agent connected")
    workload, hub = plane.workload("edge-y"), plane.hub("edge-y")
    plane.api.create_namespaced_custom_object(GROUP, VERSION, workload, "applications", app("own"))
    wait_for(lambda: plane.get(hub, "own"), timeout=15, what="the mirror")

    def hub_path() -> str:
        obj = plane.get(hub, "own")
        return obj["spec"]["source"]["path"] if obj else ""

    # Someone edits the mirror on the hub with kubectl: the agent's own version wins again.
    plane.api.patch_namespaced_custom_object(
        GROUP, VERSION, hub, "applications", "own",
        {"spec": {"source": {"path": "tampered"}}}, _content_type="application/merge-patch+json",
    )  # fmt: skip
    wait_for(lambda: hub_path() == "guestbook", timeout=15, what="the mirror repaired")
    # Someone deletes it on the hub: it comes back.
    plane.api.delete_namespaced_custom_object(GROUP, VERSION, hub, "applications", "own")
    wait_for(lambda: hub_path() == "guestbook", timeout=15, what="the mirror recreated")


def test_a_killed_agent_receives_exactly_what_it_missed_on_the_workload_cluster(
    plane: Plane,
) -> None:
    plane.add_agent("edge-k", "managed")
    wait_for(lambda: plane.connected("edge-k"), timeout=20, what="agent connected")
    workload = plane.workload("edge-k")
    plane.apply("edge-k", [app(f"app-{i:02d}") for i in range(30)])

    def names() -> set[str]:
        items = plane.api.list_namespaced_custom_object(GROUP, VERSION, workload, "applications")
        return {i["metadata"]["name"] for i in items["items"]}

    wait_for(lambda: len(names()) == 30, timeout=30, what="30 apps on the workload")
    plane.agents["edge-k"].kill(signal.SIGKILL)
    # 25 changes while it is down: 15 updates, 5 creations, 5 deletions.
    plane.apply(
        "edge-k",
        [app(f"app-{i:02d}", path="v2") for i in range(15)] + [app(f"new-{i}") for i in range(5)],
    )
    mooring(
        "app",
        "delete",
        *[f"app-{i:02d}" for i in range(25, 30)],
        "--agent",
        "edge-k",
        env=plane.env,
    )
    plane.agents["edge-k"].start()
    wanted = {f"app-{i:02d}" for i in range(25)} | {f"new-{i}" for i in range(5)}
    wait_for(lambda: plane.connected("edge-k") and names() == wanted, timeout=30, what="converged")

    def paths() -> dict[str, str]:
        items = plane.api.list_namespaced_custom_object(GROUP, VERSION, workload, "applications")
        return {i["metadata"]["name"]: i["spec"]["source"]["path"] for i in items["items"]}

    wait_for(
        lambda: all(paths()[f"app-{i:02d}"] == "v2" for i in range(15)), what="updates applied"
    )
    assert plane.metric("edge-k", "mooring_resync_events_total") == 25
    assert plane.metric("edge-k", "mooring_events_applied_total") == 25  # upserts + deletes
