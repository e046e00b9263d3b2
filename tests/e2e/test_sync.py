"""End to end on real processes: one principal, managed and autonomous agents.

Every test runs three times: with the hub store on Debian's etcd 3.4, on the test bed's
etcd 3.6, and on the test bed's kube-apiserver (Argo CD's own Application and AppProject
objects, a namespace per agent; the principal coordinates on Leases there too).
"""

from __future__ import annotations

import json
import signal
import urllib.request
from pathlib import Path

import pytest
import yaml

from agent import _store as agent_store
from mooring import _kubeapi as kubeapi
from tests import _procs as procs
from tests import _testbed as testbed
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e


def app_doc(name: str, *, revision: str = "HEAD", status: dict | None = None) -> dict:
    doc = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example/apps.git",
                "path": name,
                "targetRevision": revision,
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }
    if status is not None:
        doc["status"] = status
    return doc


def write_docs(path: Path, docs: list[dict]) -> Path:
    path.write_text("\n---\n".join(json.dumps(d) for d in docs))
    return path


class Cluster:
    """One principal and its agents. `store`: the hub store's URL; with `kubernetes` (a
    kubeconfig and a Lease namespace) the principal coordinates on Leases too."""

    def __init__(
        self,
        root: Path,
        store: str,
        *,
        kubernetes: tuple[Path, str] | None = None,
        redis: str | None = None,
        auto_register: bool = True,  # agents register by connecting (else: `agent create`)
    ) -> None:
        self.root = root
        self.store = store
        self.env = {"MOORING_STORE": store}
        coordination, namespace = store, "default"
        if kubernetes is not None:
            kubeconfig, namespace = kubernetes
            self.env["KUBECONFIG"] = str(kubeconfig)
            coordination = "kubernetes"
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
            "localhost,127.0.0.1",
        )
        self.port = procs.free_port()
        self.metrics_port = procs.free_port()
        settings = procs.replica_settings(
            "p1",
            listen=f"127.0.0.1:{self.port}",
            coordination=coordination,
            namespace=namespace,
            store=store,
            tls_dir=self.pki / "principals" / "p1",
            metrics=f"127.0.0.1:{self.metrics_port}",
            heartbeat_interval=1.0,
            redis=redis,
            auto_register=auto_register,
        )
        self.principal = procs.replica(settings, log=root / "principal.log", env=self.env)
        self.agents: dict[str, procs.Proc] = {}
        self.agent_metrics: dict[str, int] = {}

    def add_agent(
        self,
        name: str,
        mode: str,
        *,
        env: dict[str, str] | None = None,
        store: str | None = None,  # its local store's URL (default: SQLite at state(name))
    ) -> procs.Proc:
        mooring("pki", "issue", "agent", "--dir", str(self.pki), "--name", name)
        port = procs.free_port()
        self.agent_metrics[name] = port
        proc = procs.Proc(
            [
                "agent",
                "run",
                "--name",
                name,
                "--mode",
                mode,
                "--endpoints",
                f"127.0.0.1:{self.port}",
                "--tls-dir",
                str(self.pki / "agents" / name),
                *(["--store", store] if store else ["--state", str(self.state(name))]),
                "--metrics",
                f"127.0.0.1:{port}",
            ],
            log=self.root / f"agent-{name}.log",
            env=env,
        )
        self.agents[name] = proc
        return proc.start()

    def state(self, name: str) -> Path:
        return self.root / f"{name}.db"

    def local(self, name: str) -> dict[str, agent_store.LocalResource]:
        store = agent_store.AgentStore(self.state(name), create=False)
        try:
            return {r.name: r for r in store.list()}
        finally:
            store.close()

    def agent_metric(self, name: str, sample: str, **labels: str) -> float:
        """The sum of the agent's `sample` series that have `labels` (0 if it has none,
        -1 if its /metrics does not answer)."""
        samples = procs.scrape(self.agent_metrics[name])
        return -1.0 if samples is None else samples.sum(sample, **labels) or 0.0

    def connected(self, name: str) -> bool:
        return self.agent_metric(name, "mooring_agent_connected") == 1.0

    def principal_list(self, agent: str) -> dict[str, dict]:
        out = mooring("app", "list", "--agent", agent, "--json", env=self.env).stdout
        return {item["name"]: item for item in json.loads(out)["items"]}

    def stop(self) -> None:
        for proc in self.agents.values():
            proc.stop()
        self.principal.stop()


def kube_cluster(apiserver: kubeapi.KubeAPIServer, root: Path, prefix: str) -> Cluster:
    name = prefix.strip("/")
    apiserver.create_namespace(name)  # the Leases
    store = f"kubernetes://?kubeconfig={apiserver.kubeconfig}&hub={name}&namespace-prefix={name}-"
    made = Cluster(root, store, kubernetes=(apiserver.kubeconfig, name))
    made.hub_namespace_prefix = f"{name}-"
    return made


# etcd 3.6 and the Kubernetes hub: etcd 3.4 (Debian's, which `mooring up` runs) is covered
# by the hub-store conformance suite and by every test on a `mooring up` cluster.
@pytest.fixture(params=["etcd36", "kubernetes"])
def cluster(request: pytest.FixtureRequest, tmp_path: Path, prefix: str):
    if request.param == "kubernetes":
        c = kube_cluster(request.getfixturevalue("kube_apiserver"), tmp_path, prefix)
    else:
        c = Cluster(tmp_path, request.getfixturevalue(request.param).url)
    c.principal.start()
    try:
        yield c
    finally:
        c.stop()


def test_managed_app_reaches_agent_and_status_comes_back(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_agent("edge-m1", "managed")
    wait_for(lambda: cluster.connected("edge-m1"), what="agent connected")
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "a.json", [app_doc("guestbook")])),
        "--agent",
        "edge-m1",
        env=cluster.env,
    )
    row = wait_for(lambda: cluster.local("edge-m1").get("guestbook"), what="app on the agent")
    assert row.object["spec"]["source"]["path"] == "guestbook"

    status = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    doc = {"kind": "Application", "metadata": {"name": "guestbook"}, "status": status}
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "s.json", [doc])),
        "--agent-state",
        str(cluster.state("edge-m1")),
    )
    item = wait_for(
        lambda: cluster.principal_list("edge-m1")["guestbook"]["status_object"],
        what="status on the principal",
    )
    assert item == status

    # The principal may not receive a spec change from a managed agent's side.
    changed = app_doc("guestbook", revision="v2")
    result = mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "x.json", [changed])),
        "--agent-state",
        str(cluster.state("edge-m1")),
        check=False,
    )
    assert result.returncode == 1
    assert "only its status can be set" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_autonomous_app_is_mirrored_and_read_only_on_principal(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.add_agent("edge-a1", "autonomous")
    wait_for(lambda: cluster.connected("edge-a1"), what="agent connected")
    docs = [app_doc("local-one", status={"health": {"status": "Healthy"}})]
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "a.json", docs)),
        "--agent-state",
        str(cluster.state("edge-a1")),
    )
    mirrored = wait_for(
        lambda: cluster.principal_list("edge-a1").get("edge-a1-local-one"),
        what="mirror on principal",
    )
    assert mirrored["origin"] == "agent"
    assert mirrored["spec"]["source"]["path"] == "local-one"

    attempt = app_doc("local-one", revision="hacked")
    result = mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "b.json", [attempt])),
        "--agent",
        "edge-a1",
        check=False,
        env=cluster.env,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mooring: error: agent edge-a1 is autonomous: Application local-one is owned by the agent "
        "and cannot be changed from the principal; change it on the agent"
    )
    assert (
        cluster.principal_list("edge-a1")["edge-a1-local-one"]["spec"]["source"]["targetRevision"]
        == "HEAD"
    )

    # Local deletion propagates to the mirror.
    mooring("app", "delete", "local-one", "--agent-state", str(cluster.state("edge-a1")))
    wait_for(
        lambda: "edge-a1-local-one" not in cluster.principal_list("edge-a1"), what="mirror deleted"
    )


def delivered(cluster: Cluster, agent: str) -> dict[str, str]:
    """Resource name -> `app list`'s DELIVERED state (yes, pending, refused)."""
    return {name: item["delivery"]["state"] for name, item in cluster.principal_list(agent).items()}


def status_row(cluster: Cluster, agent: str) -> dict:
    """The agent's row of `mooring status --coordination` (read from the stores only)."""
    out = mooring("status", "--coordination", cluster.store, "--json", env=cluster.env).stdout
    return next(a for a in json.loads(out)["agents"] if a["name"] == agent)


def test_killed_agent_receives_exactly_the_missed_changes(cluster: Cluster, tmp_path: Path) -> None:
    agent = cluster.add_agent("edge-k1", "managed")
    wait_for(lambda: cluster.connected("edge-k1"), what="agent connected")
    without_redis = cluster.store.startswith("etcd://")  # `status --coordination` reads etcd
    if without_redis:  # the replica itself reports its sessions: no Redis in this cluster
        wait_for(lambda: status_row(cluster, "edge-k1")["connected_to"] == "p1", what="status")
    initial = [app_doc(f"app-{i:03d}") for i in range(60)]
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "i.json", initial)),
        "--agent",
        "edge-k1",
        env=cluster.env,
    )
    wait_for(lambda: len(cluster.local("edge-k1")) == 60, what="60 apps on the agent")

    wait_for(lambda: set(delivered(cluster, "edge-k1").values()) == {"yes"}, what="delivered")

    agent.kill(signal.SIGKILL)
    if without_redis:  # its session ends at the heartbeat timeout (3 x 1 s) at the latest
        wait_for(lambda: not status_row(cluster, "edge-k1")["connected"], what="disconnected")
    # 50 changes while the agent is down: 30 updates, 10 creations, 10 deletions.
    updates = [app_doc(f"app-{i:03d}", revision="v2") for i in range(30)]
    creations = [app_doc(f"new-{i:03d}") for i in range(10)]
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "u.json", updates + creations)),
        "--agent",
        "edge-k1",
        env=cluster.env,
    )
    mooring(
        "app",
        "delete",
        *[f"app-{i:03d}" for i in range(50, 60)],
        "--agent",
        "edge-k1",
        env=cluster.env,
    )

    answers = delivered(cluster, "edge-k1")
    assert len(answers) == 60 and sum(state == "yes" for state in answers.values()) == 20
    assert {state for name, state in answers.items() if name < "app-030" or "new" in name} == {
        "pending"
    }
    agent.start()
    wait_for(lambda: cluster.connected("edge-k1"), what="agent reconnected")
    wait_for(lambda: set(delivered(cluster, "edge-k1").values()) == {"yes"}, what="delivered")
    local = cluster.local("edge-k1")
    desired = cluster.principal_list("edge-k1")
    assert sorted(local) == sorted(desired)
    assert {n: r.checksum[:12] for n, r in local.items()} == {
        n: d["checksum"] for n, d in desired.items()
    }
    assert cluster.agent_metric("edge-k1", "mooring_resync_events_total") == 50
    assert cluster.agent_metric("edge-k1", "mooring_events_applied_total") == 50  # both ops


def test_principal_restart_agents_reconnect_and_converge(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_agent("edge-r1", "managed")
    cluster.add_agent("edge-r2", "autonomous")
    wait_for(
        lambda: cluster.connected("edge-r1") and cluster.connected("edge-r2"),
        what="agents connected",
    )

    cluster.principal.kill(signal.SIGKILL)
    # Changes on both sides while the principal is down.
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "m.json", [app_doc(f"m-{i}") for i in range(5)])),
        "--agent",
        "edge-r1",
        env=cluster.env,
    )
    mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "a.json", [app_doc(f"a-{i}") for i in range(5)])),
        "--agent-state",
        str(cluster.state("edge-r2")),
    )
    wait_for(lambda: not cluster.connected("edge-r1"), what="agent notices the loss", timeout=10)

    cluster.principal.start()
    wait_for(lambda: len(cluster.local("edge-r1")) == 5, what="managed agent converged", timeout=20)
    wait_for(
        lambda: len(cluster.principal_list("edge-r2")) == 5,
        what="autonomous mirror converged",
        timeout=20,
    )
    assert cluster.agent_metric("edge-r1", "mooring_sessions_total") >= 2


def argocd_examples() -> list[dict]:
    """Argo CD's documented full Application and AppProject, with an annotation added
    (the examples carry labels and finalizers but no annotation)."""
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


def test_argocd_documented_examples_arrive_with_every_field(
    cluster: Cluster, tmp_path: Path
) -> None:
    docs = argocd_examples()
    assert any(d["metadata"].get("finalizers") for d in docs)
    cluster.add_agent("edge-full", "managed")
    wait_for(lambda: cluster.connected("edge-full"), what="agent connected")
    manifests = write_docs(tmp_path / "examples.json", docs)
    out = mooring("app", "apply", "-f", str(manifests), "--agent", "edge-full", env=cluster.env)
    assert out.stdout.splitlines() == [
        "Application guestbook created for agent edge-full",
        "AppProject my-project created for agent edge-full",
    ]

    def arrived() -> dict | None:
        local = cluster.local("edge-full")
        return local if {"guestbook", "my-project"} <= set(local) else None

    local = wait_for(arrived, what="both objects on the agent")
    for doc in docs:
        got = local[doc["metadata"]["name"]].manifest()
        assert got["spec"] == doc["spec"]
        for key in ("labels", "annotations", "finalizers"):
            assert got["metadata"].get(key) == doc["metadata"].get(key), key
        # Never: the hub's namespace (each side places the object in its own).
        assert "namespace" not in got["metadata"]


def test_invalid_manifests_are_refused_whole_with_one_line(
    cluster: Cluster, tmp_path: Path
) -> None:
    good = app_doc("fine")
    cases = {
        "Bad_Name": (app_doc("Bad_Name"), "invalid Application name 'Bad_Name'"),
        "no spec": (
            {"kind": "Application", "metadata": {"name": "nospec"}},
            "Application nospec has no spec",
        ),
        "bad label": (
            {**app_doc("labelled"), "metadata": {"name": "labelled", "labels": {"a": "b c"}}},
            "metadata.labels[a]: invalid value 'b c'",
        ),
    }
    for label, (bad, message) in cases.items():
        path = write_docs(tmp_path / "bad.json", [good, bad])
        result = mooring(
            "app", "apply", "-f", str(path), "--agent", "edge-x", check=False, env=cluster.env
        )
        assert result.returncode == 1, label
        assert message in result.stderr, (label, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stdout == "", label  # nothing was applied, not even the valid one
    assert cluster.principal_list("edge-x") == {}
    result = mooring(
        "app",
        "apply",
        "-f",
        str(write_docs(tmp_path / "g.json", [good])),
        "--agent",
        "Edge_X",
        check=False,
        env=cluster.env,
    )
    assert result.returncode == 1 and "invalid agent name 'Edge_X'" in result.stderr


def test_on_kubernetes_the_hub_holds_argo_cds_own_objects(
    kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path, prefix: str
) -> None:
    """What `kubectl get applications -A` shows on the hub is what agents receive, and
    what they report comes back as the objects' status."""
    import kubernetes.client
    import kubernetes.config

    cluster = kube_cluster(kube_apiserver, tmp_path, prefix)
    cluster.principal.start()
    client = kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig))
    api = kubernetes.client.CustomObjectsApi(client)
    try:
        cluster.add_agent("edge-m", "managed")
        cluster.add_agent("edge-a", "autonomous")
        wait_for(lambda: cluster.connected("edge-m") and cluster.connected("edge-a"), what="agents")
        docs = argocd_examples()
        path = write_docs(tmp_path / "examples.json", docs)
        mooring("app", "apply", "-f", str(path), "--agent", "edge-m", env=cluster.env)
        namespace = f"{cluster.hub_namespace_prefix}edge-m"
        hub_app = api.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", namespace, "applications", "guestbook"
        )
        assert hub_app["spec"] == docs[0]["spec"]
        assert hub_app["metadata"]["finalizers"] == docs[0]["metadata"]["finalizers"]
        wait_for(lambda: "guestbook" in cluster.local("edge-m"), what="the app on the agent")

        status = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
        report = {"kind": "Application", "metadata": {"name": "guestbook"}, "status": status}
        mooring(
            "app", "apply", "-f", str(write_docs(tmp_path / "s.json", [report])),
            "--agent-state", str(cluster.state("edge-m")),
        )  # fmt: skip

        def hub_status() -> dict | None:
            got = api.get_namespaced_custom_object(
                "argoproj.io", "v1alpha1", namespace, "applications", "guestbook"
            )
            return got.get("status") or None

        assert wait_for(hub_status, what="the status on the hub object") == status

        # Autonomous: the agent's own Application shows up in its hub namespace, read-only.
        mooring(
            "app", "apply", "-f", str(write_docs(tmp_path / "own.json", [app_doc("own")])),
            "--agent-state", str(cluster.state("edge-a")),
        )  # fmt: skip
        mirrored = f"{cluster.hub_namespace_prefix}edge-a"

        def mirror() -> dict | None:
            items = api.list_namespaced_custom_object(
                "argoproj.io", "v1alpha1", mirrored, "applications"
            )["items"]
            return items[0] if items else None

        got = wait_for(mirror, what="the mirror on the hub")
        assert got["metadata"]["name"] == "own"
        assert got["metadata"]["annotations"]["mooring.io/origin"] == "agent"
        refused = mooring(
            "app", "apply", "-f", str(write_docs(tmp_path / "x.json", [app_doc("own", revision="v9")])),
            "--agent", "edge-a", check=False, env=cluster.env,
        )  # fmt: skip
        assert refused.returncode == 1 and "autonomous" in refused.stderr
    finally:
        client.close()
        cluster.stop()


def test_app_delete_takes_names_or_the_manifests_file(cluster: Cluster, tmp_path: Path) -> None:
    cluster.add_agent("edge-d", "managed")
    wait_for(lambda: cluster.connected("edge-d"), what="agent connected")
    project = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": "team"},
        "spec": {"sourceRepos": ["*"]},
    }
    path = write_docs(tmp_path / "both.json", [app_doc("web"), project, app_doc("api")])
    mooring("app", "apply", "-f", str(path), "--agent", "edge-d", env=cluster.env)
    wait_for(lambda: set(cluster.local("edge-d")) == {"web", "team", "api"}, what="3 on the agent")

    out = mooring("app", "delete", "web", "--agent", "edge-d", env=cluster.env)
    assert out.stdout.strip() == "Application web deleted for agent edge-d"
    out = mooring(
        "app", "delete", "-f", str(path), "--agent", "edge-d", check=False, env=cluster.env
    )
    assert out.stdout.splitlines() == [
        "Application web not found for agent edge-d",
        "AppProject team deleted for agent edge-d",
        "Application api deleted for agent edge-d",
    ]
    assert out.returncode == 1  # one was not there, as kubectl delete says
    wait_for(lambda: cluster.local("edge-d") == {}, what="all gone on the agent")
    for args, message in [
        (["web", "-f", str(path)], "give NAMEs or -f FILE, not both"),
        ([], "give the NAMEs to delete, or -f FILE"),
    ]:
        bad = mooring("app", "delete", *args, "--agent", "edge-d", check=False, env=cluster.env)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr


def test_on_kubernetes_objects_the_crd_schema_refuses_are_one_line_errors(
    kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path, prefix: str
) -> None:
    cluster = kube_cluster(kube_apiserver, tmp_path, prefix)
    cluster.principal.start()
    try:
        bad = app_doc("retries")
        bad["spec"]["syncPolicy"] = {"retry": {"limit": "many"}}
        path = write_docs(tmp_path / "bad.json", [bad])
        result = mooring(
            "app", "apply", "-f", str(path), "--agent", "edge-s", "--create-agent",
            check=False, env=cluster.env,
        )  # fmt: skip
        assert result.returncode == 1
        assert "spec.syncPolicy.retry.limit" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert cluster.principal_list("edge-s") == {}
        huge = app_doc("huge")
        huge["spec"]["info"] = [{"name": "blob", "value": "x" * 1_000_000}]
        result = mooring(
            "app", "apply", "-f", str(write_docs(tmp_path / "huge.json", [huge])),
            "--agent", "edge-s", check=False, env=cluster.env,
        )  # fmt: skip
        assert result.returncode == 1 and "more than the 921600" in result.stderr, result.stderr
    finally:
        cluster.stop()


def test_on_kubernetes_lost_watch_history_costs_a_resync_of_only_what_differs(
    kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path, prefix: str
) -> None:
    """The hub's etcd is compacted and its apiserver restarted (so its watch cache starts
    after the compaction) while agent B is down and agent A's watch on the principal is
    behind the compaction: the principal's watch gets 410 Gone, every session resyncs,
    and each agent applies each change exactly once."""
    cluster = kube_cluster(kube_apiserver, tmp_path, prefix)
    cluster.principal.start()
    try:
        cluster.add_agent("edge-ka", "managed")
        agent_b = cluster.add_agent("edge-kb", "managed")
        wait_for(
            lambda: cluster.connected("edge-ka") and cluster.connected("edge-kb"), what="agents"
        )
        for agent in ("edge-ka", "edge-kb"):
            docs = [app_doc(f"app-{i:02d}") for i in range(20)]
            mooring(
                "app",
                "apply",
                "-f",
                str(write_docs(tmp_path / f"{agent}.json", docs)),
                "--agent",
                agent,
                env=cluster.env,
            )
        wait_for(
            lambda: len(cluster.local("edge-ka")) == 20 == len(cluster.local("edge-kb")),
            what="40 apps",
        )

        def applied(agent: str) -> float:
            return cluster.agent_metric(agent, "mooring_events_applied_total", operation="upsert")

        base_a = applied("edge-ka")
        agent_b.kill(signal.SIGKILL)

        def update(agent: str, names: range, revision: str) -> None:
            docs = [app_doc(f"app-{i:02d}", revision=revision) for i in names]
            path = write_docs(tmp_path / f"u-{agent}-{revision}.json", docs)
            mooring("app", "apply", "-f", str(path), "--agent", agent, env=cluster.env)

        update("edge-kb", range(10), "v2")
        update("edge-ka", range(5), "v2")
        compact_at = max(r["version"] for r in cluster.principal_list("edge-kb").values())
        urllib.request.urlopen(
            urllib.request.Request(
                f"http://{kube_apiserver.etcd.endpoints[0]}/v3/kv/compaction",
                data=json.dumps({"revision": str(compact_at), "physical": True}).encode(),
                method="POST",
            ),
            timeout=10,
        ).close()
        kube_apiserver.restart()
        update("edge-ka", range(5, 10), "v2")
        agent_b.start()

        def converged(agent: str) -> bool:
            local = cluster.local(agent)
            desired = cluster.principal_list(agent)
            return {n: r.checksum[:12] for n, r in local.items()} == {
                n: d["checksum"] for n, d in desired.items()
            }

        wait_for(
            lambda: cluster.connected("edge-kb") and converged("edge-kb"),
            timeout=30,
            what="B converged",
        )
        wait_for(lambda: converged("edge-ka"), timeout=30, what="A converged")
        assert applied("edge-ka") - base_a == 10  # each of its 10 changes once, live or by resync
        assert applied("edge-kb") == 10  # a fresh process: exactly what it missed
        assert cluster.agent_metric("edge-kb", "mooring_resync_events_total") == 10
        assert "watch history lost; every session resyncs" in cluster.principal.output()
    finally:
        cluster.stop()
