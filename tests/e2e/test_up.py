"""`mooring up / status / scale / down`: the local cluster launcher on real processes."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mooring import _processes as processes
from mooring import _state as state_
from tests._poll import wait_for
from tests._procs import mooring

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
    result = mooring(
        "up", "--detach", "--wait", "30", "--replicas", "2", "--agents", "6", "--dir", str(directory)
    )  # fmt: skip
    assert "cluster up" in result.stdout
    # --wait returned once every agent was on its owner, and said so.
    assert re.search(r"agents on their owner: 6/6 \(\d+\.\ds\)", result.stdout), result.stdout
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

    got = ready()  # `up --wait` returned when it held
    assert got is not None, status(cluster)
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
    # Only its user reads what the cluster writes: keys, logs, stores, history.
    written = [p for p in cluster.rglob("*") if not p.is_symlink()]
    assert len(written) > 20
    readable = [str(p) for p in [cluster, *written] if p.stat().st_mode & 0o077]
    assert [p for p in readable if not p.endswith(".crt")] == []  # certificates are public
    assert cluster.stat().st_mode & 0o777 == 0o700  # and nobody else can reach them here

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


def test_cluster_json_holds_the_settings_each_process_runs_with(cluster: Path) -> None:
    """Tools and benches read a process's settings here, not from /proc: the replicas'
    and the agents' (hosted by a fleet, as here, or each in its own process)."""
    state = state_.load(cluster)
    for replica in state.replicas:
        assert replica.settings["id"] == replica.id
        assert replica.settings["lease_duration"] > replica.settings["renew_deadline"] > 0
        assert replica.settings["redis"] == "***"  # a secret, masked
    assert state.fleets and len(state.agents) == 6
    for agent in state.agents:
        assert agent.settings["name"] == agent.name and agent.settings["mode"] == agent.mode
        assert agent.settings["endpoints"] and agent.settings["state"] == agent.state
        assert agent.settings["refused_retry_interval"] > 0


def _etcd_range(endpoint: str, key: str, token: str | None = None) -> tuple[int, str]:
    """etcd's JSON gateway: (HTTP status, body) of a read of `key`, with a token or none."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
    request = urllib.request.Request(f"http://{endpoint}/v3/kv/range", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_the_local_etcd_asks_for_a_login_and_grants_only_the_store_root(cluster: Path) -> None:
    state = state_.load(cluster)
    options = urllib.parse.parse_qs(urllib.parse.urlsplit(state.coordination).query)
    assert options["user"] == ["mooring"], state.coordination
    password_file = Path(options["password-file"][0])
    assert password_file.stat().st_mode & 0o777 == 0o600
    password = password_file.read_text().strip()
    assert len(password) >= 24 and password not in (cluster / "cluster.json").read_text()

    endpoint = state.etcd[0].endpoint
    code, said = _etcd_range(endpoint, "/mooring/election/leader")
    assert code == 400 and "user name is empty" in said, said  # no login: refused
    login = json.dumps({"name": "mooring", "password": password}).encode()
    request = urllib.request.Request(f"http://{endpoint}/v3/auth/authenticate", data=login)
    with urllib.request.urlopen(request, timeout=5) as response:
        token = json.loads(response.read())["token"]
    code, said = _etcd_range(endpoint, "/mooring/election/leader", token)
    assert code == 200 and '"kvs"' in said, said  # the replicas' records, readable
    code, said = _etcd_range(endpoint, "/elsewhere", token)
    assert code == 403 and "permission denied" in said, said  # outside /mooring/: refused
    # The replicas log in over loopback: no warning about a password in the clear.
    for replica in state.replicas:
        assert "travels unencrypted" not in Path(replica.log).read_text()


def test_status_watch_repeats_and_a_stopped_cluster_exits_1(cluster: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "mooring", "status", "--dir", str(cluster), "--watch", "0.3"],
        stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        if line.startswith("--- "):
            seen.append(line)
        if len(seen) == 3:
            break
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()
    assert len(seen) == 3  # it showed the table again until stopped
    never = tmp_path / "never-started"
    result = mooring("status", "--dir", str(never), check=False)
    assert result.returncode == 1, result


def test_logs_print_a_processes_log_or_a_fleet_agents_lines(cluster: Path) -> None:
    where = mooring("logs", "p1", "--path", "--dir", str(cluster)).stdout.strip()
    assert where == str(cluster.resolve() / "logs" / "p1.log") and Path(where).stat().st_size
    last = mooring("logs", "p1", "--tail", "2", "--dir", str(cluster)).stdout.splitlines()
    assert last == Path(where).read_text().splitlines()[-2:]
    agent = mooring("logs", "edge-02", "--dir", str(cluster))
    assert "edge-02 runs in fleet" in agent.stderr
    lines = agent.stdout.splitlines()
    assert lines and all("edge-02" in line for line in lines)
    assert any("applied Application guestbook" in line for line in lines)
    unknown = mooring("logs", "edge-99", "--dir", str(cluster), check=False)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1
    assert "nothing called 'edge-99'" in unknown.stderr


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
