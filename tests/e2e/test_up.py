"""`mooring up / status / scale / down`: the local cluster launcher on real processes."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mooring import _processes as processes
from mooring import _state as state_
from tests._procs import mooring, wait_for

pytestmark = pytest.mark.e2e


def status(directory: Path) -> dict[str, Any]:
    out = mooring("status", "--json", "--dir", str(directory)).stdout
    return json.loads(out)


def recorded(directory: Path) -> list[processes.Handle]:
    state = state_.load(directory)
    return [h for h in state.handles() if h is not None]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("up") / "cluster"
    result = mooring("up", "--detach", "--replicas", "2", "--agents", "6", "--dir", str(directory))
    assert "cluster up" in result.stdout
    try:
        yield directory
    finally:
        mooring("down", "--dir", str(directory), check=False)
        for handle in recorded(directory):  # never leak a process, even on failure
            if processes.alive(handle):
                os.kill(handle.pid, 9)


def test_status_shows_live_replicas_and_connected_agents(cluster: Path) -> None:
    def ready() -> dict[str, Any] | None:
        got = status(cluster)
        live = [r for r in got["replicas"] if r["live"]]
        on_owner = [a for a in got["agents"] if a["connected"] and a["owner"] == a["connected_to"]]
        return got if len(live) == 2 and len(on_owner) == 6 else None

    got = wait_for(
        ready, timeout=20, interval=0.2, what="2 live replicas, 6 agents on their owners"
    )
    assert got["epoch"] >= 1  # a shard map has been published
    assert {r["id"] for r in got["replicas"]} == {"p1", "p2"}
    assert all(r["pid"] for r in got["replicas"])
    assert sum(r["agents"] for r in got["replicas"]) == 6
    assert {a["connected_to"] for a in got["agents"]} <= {"p1", "p2"}
    assert {a["owner"] for a in got["agents"]} <= {"p1", "p2"}  # every agent placed by the map
    modes = [a["mode"] for a in sorted(got["agents"], key=lambda a: a["name"])]
    assert modes == ["managed", "managed", "managed", "autonomous", "managed", "managed"]
    assert got["leader"] in ("p1", "p2")  # whoever published that map leads
    data = json.loads((cluster / "cluster.json").read_text())
    assert data["coordination"].startswith("etcd://")
    assert data["redis"].startswith("redis://")
    assert all(Path(log).exists() for log in data["logs"].values())

    # The seeded sample Applications reached the agents (managed) and the principal (mirror).
    listed = mooring("app", "list", "--agent", "edge-01", "--dir", str(cluster), "--json")
    assert [i["name"] for i in json.loads(listed.stdout)["items"]] == ["guestbook"]
    wait_for(
        lambda: json.loads(
            mooring("app", "list", "--agent", "edge-04", "--dir", str(cluster), "--json").stdout
        )["items"],
        timeout=10,
        interval=0.2,
        what="autonomous sample mirrored",
    )

    table = mooring("status", "--dir", str(cluster)).stdout
    assert "p1" in table and "agents connected: 6/6" in table


def test_second_up_on_a_running_cluster_is_refused(cluster: Path) -> None:
    result = mooring("up", "--detach", "--dir", str(cluster), check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"mooring: error: a cluster is already running in {cluster}")


def test_scale_adds_a_replica(cluster: Path) -> None:
    mooring("scale", "--replicas", "3", "--dir", str(cluster))
    got = wait_for(
        lambda: (s := status(cluster)) and sum(r["live"] for r in s["replicas"]) == 3 and s,
        timeout=15,
        interval=0.2,
        what="3 live replicas",
    )
    assert [r["id"] for r in got["replicas"]] == ["p1", "p2", "p3"]
    assert len(json.loads((cluster / "cluster.json").read_text())["replicas"]) == 3


def test_down_leaves_no_process_behind(cluster: Path) -> None:
    handles = recorded(cluster)
    assert handles and any(processes.alive(h) for h in handles)
    mooring("down", "--dir", str(cluster))
    assert [h.pid for h in handles if processes.alive(h)] == []
    again = mooring("down", "--dir", str(cluster))  # idempotent
    assert "not running" in again.stdout
    stopped = mooring("status", "--json", "--dir", str(cluster), check=False)
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False
    assert stopped.stderr.strip() == (
        f"mooring: the cluster in {cluster} is stopped: start it with `mooring up --dir {cluster}`"
    )


def test_missing_etcd_names_the_package(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    redis = shutil.which("redis-server")
    assert redis is not None
    (bin_dir / "redis-server").symlink_to(redis)
    result = mooring(
        "up", "--detach", "--dir", str(tmp_path / "c"), check=False, env={"PATH": str(bin_dir)}
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "mooring: error: etcd not found on PATH: install it with `apt-get install etcd-server`"
    )
    assert not (tmp_path / "c").exists()


def test_up_kubernetes_runs_the_whole_cluster_on_a_real_apiserver(tmp_path: Path) -> None:
    """Leases, the hub's Applications and every agent's Argo CD namespace on the test bed's
    kube-apiserver; cluster.json says where, so anyone can look with a kubeconfig."""
    import kubernetes.client
    import kubernetes.config

    from tests import _testbed as testbed

    testbed.require("kube-apiserver", "etcd", crds=True)
    directory = tmp_path / "kube-cluster"
    result = mooring(
        "up",
        "--kubernetes",
        "--detach",
        "--replicas",
        "2",
        "--agents",
        "4",
        "--dir",
        str(directory),
    )
    assert "cluster up" in result.stdout
    try:
        wait_for(
            lambda: status(directory)["agents_on_owner"] == 4, timeout=40, what="4 agents on owners"
        )
        recorded_state = json.loads((directory / "cluster.json").read_text())
        kube = recorded_state["kubernetes"]
        assert recorded_state["coordination"] == "kubernetes"
        assert {"hub_kubeconfig", "workload_kubeconfig"} <= set(kube)
        client = kubernetes.config.new_client_from_config(kube["hub_kubeconfig"])
        try:
            api = kubernetes.client.CustomObjectsApi(client)
            found = {
                (item["metadata"]["namespace"], item["metadata"]["name"])
                for item in api.list_cluster_custom_object(
                    "argoproj.io", "v1alpha1", "applications"
                )["items"]
            }
            leases = kubernetes.client.CoordinationV1Api(client).list_namespaced_lease("mooring")
        finally:
            client.close()
        for agent in recorded_state["agents"]:
            app = "local-guestbook" if agent["mode"] == "autonomous" else "guestbook"
            assert (agent["namespace"], app) in found  # on the hub
            assert (agent["workload_namespace"], app) in found  # on its workload "cluster"
        assert any(lease.metadata.name.endswith("shardmap") for lease in leases.items)
        listed = mooring("app", "list", "--agent", "edge-01", "--dir", str(directory)).stdout
        assert "guestbook" in listed
    finally:
        mooring("down", "--dir", str(directory), check=False)
        for handle in recorded(directory):
            assert not processes.alive(handle), f"pid {handle.pid} left running"
