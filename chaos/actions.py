"""chaostoolkit actions on a local cluster (`mooring up`): faults, heals, the observers.

Every fault goes through the `mooring` CLI (`mooring kill|stop|pause|resume|start NAME`,
`mooring scale`) and is marked in RUN/faults.jsonl with both clocks, so the checkers
know what happened when. A target may be a name (p2, etcd1, redis, fleet) or a role
resolved at the moment of the fault: `leader` (the replica leading now), `follower`
(a replica that does not lead), `etcd-leader` (etcd's raft leader), `etcd-follower`,
`last` (the target of the previous fault: "start last" after "kill leader").
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from chaos import _local as local

__all__ = [
    "fault",
    "heal",
    "isolate",
    "partition",
    "resolve",
    "rolling_restart",
    "scale",
    "shape",
    "start_observers",
    "stop_observers",
]

ROLES = ("leader", "follower", "etcd-leader", "etcd-follower", "last")
UNDO = {"kill": "start", "stop": "start", "pause": "resume"}
OBSERVERS = {"workload": "chaos.workload", "sampler": "chaos.sampler"}
WHOLE_TIMEOUT = 30.0


def _status(directory: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(local.mooring("status", "--json", "--dir", directory))
    return data


def _etcd_leader(state: dict[str, Any]) -> tuple[str, list[str]]:
    """(the raft leader's member name, the other live members' names)."""
    ids: dict[str, str] = {}
    leader = ""
    for member in state["etcd"]:
        request = urllib.request.Request(
            f"http://{member['endpoint']}/v3/maintenance/status", data=b"{}", method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as resp:
                got = json.loads(resp.read())
        except OSError:
            continue
        ids[member["name"]] = str(got["header"]["member_id"])
        leader = str(got.get("leader", leader))
    name = next((n for n, i in ids.items() if i == leader), "")
    if not name:
        raise local.CliError("etcd has no leader that answers")
    return name, sorted(n for n in ids if n != name)


def resolve(directory: str, target: str, *, seed: int | None = None) -> str:
    """The process name a role stands for right now (a name stands for itself)."""
    if target not in ROLES:
        return target
    rng = random.Random(seed)
    if target == "last":
        faults = [m for m in local.marks(directory) if m["event"] in UNDO]
        if not faults:
            raise local.CliError("no earlier fault to name with `last`")
        return str(faults[-1]["target"])
    if target.startswith("etcd-"):
        leader, followers = _etcd_leader(local.cluster(directory))
        if target == "etcd-leader":
            return leader
        if not followers:
            raise local.CliError("no live etcd follower to pick")
        return rng.choice(followers)
    status = _status(directory)
    if target == "leader":
        if not status.get("leader"):
            raise local.CliError("no replica leads right now")
        return str(status["leader"])
    live: list[dict[str, Any]] = [
        r for r in status["replicas"] if r["live"] and r["id"] != status["leader"]
    ]
    if not live:
        raise local.CliError("no live follower replica to pick")
    # The follower serving the most agents (a fault on one that serves none tests
    # nothing; few agents can leave one empty), ties broken by the seed.
    most = max(r["agents"] for r in live)
    return rng.choice(sorted(str(r["id"]) for r in live if r["agents"] == most))


def fault(directory: str, action: str, target: str, seed: int | None = None) -> dict[str, Any]:
    """`mooring ACTION TARGET` (kill, stop, pause, resume, start), marked."""
    name = resolve(directory, target, seed=seed)
    before = local.mark(directory, action, target=name, role=target)
    said = local.mooring(action, name, "--dir", directory).strip()
    local.mark(directory, f"{action}-done", target=name, role=target)
    return {"action": action, "target": name, "role": target, "t": before["t"], "said": said}


NETNS_FILE = "netns.json"
"""DIR/netns.json: the network namespaces the cluster runs in (written by the runner)."""
LINK_FILE = "etcd-link.json"
"""DIR/etcd-link.json: the control file of the proxy between the replicas and etcd."""


def shape(
    directory: str, delay_ms: float = 0.0, jitter_ms: float = 0.0, rate: float | None = None
) -> dict[str, Any]:
    """Add latency (each way) and a bandwidth cap (bytes/s) to every replica's link to
    etcd, through the userspace proxy they dial (this kernel has no tc netem)."""
    from chaos import proxy

    control = Path(directory) / LINK_FILE
    if not control.exists():
        raise local.CliError(
            f"the replicas of {directory} reach etcd directly: shaping needs a cluster in"
            " network namespaces with one etcd member"
        )
    limits = proxy.Limits.both(delay_ms=delay_ms, jitter_ms=jitter_ms, rate=rate)
    local.mark(directory, "shape", target="etcd", delay_ms=delay_ms, rate=rate)
    proxy.write_control(control, limits)
    proxy.wait_applied(control, limits)
    return limits.to_json()


def _topology(directory: str) -> Any:
    from chaos import netns

    path = Path(directory) / NETNS_FILE
    if not path.exists():
        raise local.CliError(
            f"the cluster in {directory} runs on loopback: partitions need one started in"
            " network namespaces (an experiment with extensions[0].cluster.netns)"
        )
    return netns.Topology.attach(json.loads(path.read_text(encoding="utf-8")))


def _group(directory: str, name: str) -> list[str]:
    """`fleets`: every fleet process (all agents); `etcd`: every etcd member; else one."""
    members = list(json.loads((Path(directory) / NETNS_FILE).read_text())["members"])
    if name in ("fleets", "etcd"):
        prefix = "fleet" if name == "fleets" else "etcd"
        return [m for m in members if m.startswith(prefix)]
    return [resolve(directory, name)]


def partition(directory: str, target: str, peer: str, one_way: bool = False) -> dict[str, Any]:
    """Drop packets between `target` and `peer` (each a name, a role, `fleets` or `etcd`):
    both ways, or with `one_way` only target's packets to peer. Real loss: connections
    hang until their timeouts, as behind a dead link."""
    topo = _topology(directory)
    sources, sinks = _group(directory, target), _group(directory, peer)
    local.mark(
        directory, "partition", target=",".join(sources), peer=",".join(sinks), one_way=one_way
    )
    for a in sources:
        for b in sinks:
            if one_way:
                topo.drop_one_way(a, b)
            else:
                topo.partition(a, b)
    local.mark(directory, "partition-done", target=",".join(sources), peer=",".join(sinks))
    return {"dropped": [[a, b] for a in sources for b in sinks], "one_way": one_way}


def isolate(directory: str, target: str) -> dict[str, Any]:
    """Cut `target` off from everything but its own loopback."""
    topo = _topology(directory)
    (name,) = _group(directory, target)
    local.mark(directory, "partition", target=name, peer="*")
    topo.isolate(name)
    return {"isolated": name}


def heal(directory: str) -> dict[str, Any]:
    """Undo every fault still in effect (start what was killed or stopped, resume what
    was paused), then mark the moment: I3 counts from here. Idempotent, so it is also
    every experiment's rollback."""
    pending: dict[str, str] = {}
    for m in local.marks(directory):
        if m["event"] in UNDO:
            pending[m["target"]] = UNDO[m["event"]]
        elif m["event"] in ("start", "resume"):
            pending.pop(m["target"], None)
    undone = []
    if (Path(directory) / LINK_FILE).exists():
        from chaos import proxy

        if (proxy.read_status(Path(directory) / LINK_FILE) or {}).get("limits") != (
            proxy.Limits().to_json()
        ):
            proxy.write_control(Path(directory) / LINK_FILE, proxy.Limits())
            proxy.wait_applied(Path(directory) / LINK_FILE, proxy.Limits())
            undone.append("etcd link shaping")
    if (Path(directory) / NETNS_FILE).exists():
        dropped = _topology(directory).heal_all()
        if dropped:
            undone.append(f"{len(dropped)} DROP rules")
    for target, action in pending.items():
        fault(directory, action, target)
        undone.append(f"{action} {target}")
    mark_ = local.mark(directory, "heal", undone=undone)
    return {"undone": undone, "t": mark_["t"]}


def scale(directory: str, replicas: int) -> dict[str, Any]:
    local.mark(directory, "scale", replicas=replicas)
    said = local.mooring("scale", "--replicas", str(replicas), "--dir", directory).strip()
    return {"replicas": replicas, "said": said}


def rolling_restart(directory: str, whole_timeout: float = WHOLE_TIMEOUT) -> dict[str, Any]:
    """Stop and start every replica in turn, waiting for the cluster to be whole (every
    agent on its owner) before the next one, as a rolling upgrade does."""
    from chaos import probes

    done = []
    for replica in [r["id"] for r in local.cluster(directory)["replicas"]]:
        fault(directory, "stop", replica)
        fault(directory, "start", replica)
        took = probes.wait_whole(directory, timeout=whole_timeout)
        done.append({"replica": replica, "whole_after": took})
    return {"restarted": done}


def _pidfile(directory: str, what: str) -> Path:
    return local.run_dir(directory) / f"{what}.pid"


def start_observers(directory: str, rate: float = 4.0, hz: float = 10.0) -> dict[str, int]:
    """Start the writer and the sampler (background processes; their pids in RUN)."""
    out: dict[str, int] = {}
    run = local.run_dir(directory)
    for what, module in OBSERVERS.items():
        pidfile = _pidfile(directory, what)
        if pidfile.exists() and local.alive(int(pidfile.read_text())):
            out[what] = int(pidfile.read_text())
            continue
        extra = ["--rate", str(rate)] if what == "workload" else ["--hz", str(hz)]
        log = (run / f"{what}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--dir", directory, *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, local.RUN_ENV: str(run)},
        )
        log.close()
        pidfile.write_text(str(proc.pid))
        out[what] = proc.pid
    return out


def stop_observers(directory: str, timeout: float = 10.0) -> dict[str, bool]:
    """SIGTERM both observers and wait for them (the writer finishes its change)."""
    out = {}
    for what in OBSERVERS:
        pidfile = _pidfile(directory, what)
        if not pidfile.exists():
            continue
        pid = int(pidfile.read_text())
        if local.alive(pid):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while local.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if local.alive(pid):
            os.kill(pid, signal.SIGKILL)
        pidfile.unlink()
        out[what] = True
    return out
