"""The experiments: one chaostoolkit experiment per fault, built here, written to
chaos/experiments/NAME.json (`python3 scripts/genexperiments.py`; a test fails when a
file is stale), and random ones for a seeded campaign.

Every experiment has the same shape:
- steady-state hypothesis (checked before and after the method): I3 every agent on its
  owner under one epoch (after the method: within 10 s of the heal), I1 single owner
  over the whole session history, I2 the stores agree with every acknowledged change,
  I4 every shard map written by the leader of its revision. Each probe returns its
  number of violations, tolerance 0.
- method: start the writer and the sampler, apply the fault's steps (each a `mooring`
  command on a role or a name, with a pause after it), then heal (undo whatever is
  still in effect) and mark the moment.
- rollbacks: heal again (idempotent), so an interrupted run leaves the cluster whole,
  and stop the writer and the sampler (they also stop when their cluster is gone).

`extensions[0]` (name "mooring") says what cluster the experiment needs.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

__all__ = [
    "FAULTS",
    "SMOKE",
    "Fault",
    "Step",
    "build",
    "campaign",
    "load",
    "write_all",
]

FOLDER = Path(__file__).parent / "experiments"


@dataclasses.dataclass(frozen=True)
class Step:
    action: (
        str  # kill | stop | pause | resume | start | scale | rolling-restart | partition | isolate
    )
    target: str = ""  # a role (leader, follower, etcd-leader, etcd-follower, last) or a name
    after: float = 0.0  # seconds to wait once it is done
    replicas: int = 0  # for scale
    peer: str = ""  # for partition: the other side (a name, a role, `fleets`, `etcd`)
    one_way: bool = False  # for partition: drop only target's packets to peer
    delay_ms: float = 0.0  # for shape: added to the replicas' link to etcd, each way
    rate: float | None = None  # for shape: bytes/s on that link


@dataclasses.dataclass(frozen=True)
class Fault:
    name: str
    title: str
    steps: tuple[Step, ...]
    etcd_members: int = 1
    tags: tuple[str, ...] = ()
    netns: bool = False  # every process in a network namespace of its own (partitions)


FAULTS: dict[str, Fault] = {
    f.name: f
    for f in (
        Fault(
            "kill-follower",
            "SIGKILL a replica that does not lead; start it again",
            (Step("kill", "follower", after=5.0),),
            tags=("replica", "kill"),
        ),
        Fault(
            "kill-follower-briefly",
            "SIGKILL a follower and start it again 2 s later, before its lease runs out",
            (Step("kill", "follower", after=2.0),),
            tags=("replica", "kill"),
        ),
        Fault(
            "kill-leader",
            "SIGKILL the leading replica; start it again",
            (Step("kill", "leader", after=6.0),),
            tags=("replica", "leader", "kill"),
        ),
        Fault(
            "stop-follower",
            "SIGTERM a replica that does not lead (it hands its agents over); start it again",
            (Step("stop", "follower", after=4.0),),
            tags=("replica", "stop"),
        ),
        Fault(
            "pause-follower",
            "SIGSTOP a replica past its lease and liveness TTL; SIGCONT it",
            (Step("pause", "follower", after=6.5),),
            tags=("replica", "pause"),
        ),
        Fault(
            "pause-leader",
            "SIGSTOP the leader past its lease; SIGCONT it (it must not lead on)",
            (Step("pause", "leader", after=6.5),),
            tags=("replica", "leader", "pause"),
        ),
        Fault(
            "restart-fleet",
            "SIGKILL the agent fleet process (every agent at once); start it again",
            (Step("kill", "fleet", after=3.0),),
            tags=("agent", "kill"),
        ),
        Fault(
            "kill-redis",
            "SIGKILL Redis (the session plane, no persistence); start it again, empty",
            (Step("kill", "redis", after=5.0),),
            tags=("redis", "kill"),
        ),
        Fault(
            "pause-redis",
            "SIGSTOP Redis for 5 s; SIGCONT it",
            (Step("pause", "redis", after=5.0),),
            tags=("redis", "pause"),
        ),
        Fault(
            "kill-etcd-follower",
            "SIGKILL one etcd member that does not lead (3 members); start it again",
            (Step("kill", "etcd-follower", after=5.0),),
            etcd_members=3,
            tags=("etcd", "kill"),
        ),
        Fault(
            "kill-etcd-leader",
            "SIGKILL etcd's raft leader (3 members); start it again",
            (Step("kill", "etcd-leader", after=5.0),),
            etcd_members=3,
            tags=("etcd", "leader", "kill"),
        ),
        Fault(
            "pause-etcd-leader",
            "SIGSTOP etcd's raft leader for 6 s (3 members); SIGCONT it",
            (Step("pause", "etcd-leader", after=6.0),),
            etcd_members=3,
            tags=("etcd", "leader", "pause"),
        ),
        Fault(
            "rolling-restart",
            "SIGTERM and start every replica in turn, each once the cluster is whole again",
            (Step("rolling-restart"),),
            tags=("replica", "stop"),
        ),
        Fault(
            "partition-follower-etcd",
            "drop every packet between a follower and etcd for 8 s",
            (Step("partition", "follower", peer="etcd", after=8.0),),
            tags=("network", "etcd"),
            netns=True,
        ),
        Fault(
            "partition-leader-etcd",
            "drop every packet between the leader and etcd for 8 s (it must stop leading)",
            (Step("partition", "leader", peer="etcd", after=8.0),),
            tags=("network", "etcd", "leader"),
            netns=True,
        ),
        Fault(
            "partition-follower-redis",
            "drop every packet between a follower and Redis for 6 s",
            (Step("partition", "follower", peer="redis", after=6.0),),
            tags=("network", "redis"),
            netns=True,
        ),
        Fault(
            "one-way-follower-to-redis",
            "drop a follower's packets to Redis, not Redis's to it, for 6 s",
            (Step("partition", "follower", peer="redis", one_way=True, after=6.0),),
            tags=("network", "redis", "asymmetric"),
            netns=True,
        ),
        Fault(
            "one-way-redis-to-follower",
            "drop Redis's packets to a follower, not the follower's to Redis, for 6 s",
            (Step("partition", "redis", peer="follower", one_way=True, after=6.0),),
            tags=("network", "redis", "asymmetric"),
            netns=True,
        ),
        Fault(
            "partition-follower-agents",
            "drop every packet between a follower and every agent for 8 s",
            (Step("partition", "follower", peer="fleets", after=8.0),),
            tags=("network", "agent"),
            netns=True,
        ),
        Fault(
            "isolate-agent",
            "cut one agent off from everything for 8 s",
            (Step("isolate", "fleet1", after=8.0),),
            tags=("network", "agent"),
            netns=True,
        ),
        Fault(
            "slow-etcd",
            "250 ms more each way between every replica and etcd for 10 s (userspace proxy)",
            (Step("shape", delay_ms=250.0, after=10.0),),
            tags=("network", "etcd", "latency"),
            netns=True,
        ),
        Fault(
            "throttled-etcd",
            "every replica's link to etcd capped at 20 kB/s for 10 s (userspace proxy)",
            (Step("shape", rate=20_000.0, after=10.0),),
            tags=("network", "etcd", "bandwidth"),
            netns=True,
        ),
        Fault(
            "scale-out-in",
            "scale out to 4 replicas under load, then back in to 3",
            (Step("scale", replicas=4, after=4.0), Step("scale", replicas=3, after=2.0)),
            tags=("replica", "scale"),
        ),
    )
}

SMOKE = ("kill-leader", "pause-follower", "partition-follower-redis")
"""The subset `make test` runs: a crash, a hang past the lease, a partition."""

PYTHON = "python"


def _provider(module: str, func: str, **arguments: Any) -> dict[str, Any]:
    return {
        "type": PYTHON,
        "module": module,
        "func": func,
        "arguments": {"directory": "${mooring_dir}", **arguments},
    }


def _probe(name: str, func: str) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": name,
        "tolerance": 0,
        "provider": _provider("chaos.probes", func),
    }


def _step(index: int, step: Step) -> dict[str, Any]:
    if step.action == "rolling-restart":
        provider = _provider("chaos.actions", "rolling_restart")
        name = "rolling-restart"
    elif step.action == "partition":
        provider = _provider(
            "chaos.actions",
            "partition",
            target=step.target,
            peer=step.peer,
            one_way=step.one_way,
        )
        name = f"{'drop' if step.one_way else 'partition'}-{step.target}-{step.peer}"
    elif step.action == "shape":
        provider = _provider("chaos.actions", "shape", delay_ms=step.delay_ms, rate=step.rate)
        name = f"shape-etcd-link-{step.delay_ms:g}ms" + (f"-{step.rate:g}Bps" if step.rate else "")
    elif step.action == "isolate":
        provider = _provider("chaos.actions", "isolate", target=step.target)
        name = f"isolate-{step.target}"
    elif step.action == "scale":
        provider = _provider("chaos.actions", "scale", replicas=step.replicas)
        name = f"scale-to-{step.replicas}"
    else:
        provider = _provider("chaos.actions", "fault", action=step.action, target=step.target)
        name = f"{step.action}-{step.target}"
    activity: dict[str, Any] = {"type": "action", "name": f"{index}-{name}", "provider": provider}
    if step.after:
        activity["pauses"] = {"after": step.after}
    return activity


def build(fault: Fault, *, agents: int = 8, replicas: int = 3) -> dict[str, Any]:
    """The chaostoolkit experiment of one fault."""
    heal = {"type": "action", "name": "heal", "provider": _provider("chaos.actions", "heal")}
    return {
        "version": "1.0.0",
        "title": f"{fault.name}: {fault.title}",
        "description": (
            "Under a steady writer, the fault's steps, then a heal; the cluster must keep"
            " I1-I4 (shared/DESIGN.md) and be whole again within 10 s of the heal."
        ),
        "tags": ["mooring", *fault.tags],
        "configuration": {"mooring_dir": {"type": "env", "key": "MOORING_DIR"}},
        "extensions": [
            {
                "name": "mooring",
                "fault": fault.name,
                "cluster": {
                    "replicas": replicas,
                    "agents": agents,
                    "etcd_members": fault.etcd_members,
                    # in namespaces, one fleet process per agent: one can be cut off alone
                    **({"netns": True, "fleets": agents} if fault.netns else {}),
                },
            }
        ],
        "steady-state-hypothesis": {
            "title": "every agent on its owner; I1-I4 hold",
            "probes": [
                _probe("i3-every-agent-on-its-owner", "i3_converged"),
                _probe("i1-single-owner", "i1_single_owner"),
                _probe("i2-nothing-lost", "i2_nothing_lost"),
                _probe("i4-fenced-leadership", "i4_fenced_leadership"),
            ],
        },
        "method": [
            {
                "type": "action",
                "name": "0-start-writer-and-sampler",
                "provider": _provider("chaos.actions", "start_observers"),
                "pauses": {"after": 1.0},
            },
            *(_step(i, step) for i, step in enumerate(fault.steps, start=1)),
            heal,
        ],
        "rollbacks": [
            heal,
            {
                "type": "action",
                "name": "stop-writer-and-sampler",
                "provider": _provider("chaos.actions", "stop_observers"),
            },
        ],
    }


def campaign(seed: int, iterations: int) -> list[Fault]:
    """`iterations` random faults from `seed`: kind, target role and duration."""
    rng = random.Random(seed)
    out = []
    targets = {
        "kill": ["leader", "follower", "redis", "fleet", "etcd-leader", "etcd-follower"],
        "stop": ["leader", "follower"],
        "pause": ["leader", "follower", "redis", "etcd-leader", "etcd-follower"],
    }
    for i in range(1, iterations + 1):
        action = rng.choice(sorted(targets))
        target = rng.choice(targets[action])
        held = round(rng.uniform(1.0, 8.0), 1)
        out.append(
            Fault(
                f"campaign-{seed}-{i:03d}",
                f"{action} {target} for {held} s (seed {seed}, iteration {i})",
                (Step(action, target, after=held),),
                etcd_members=3,
                tags=("campaign", action),
            )
        )
    return out


def write_all(folder: Path = FOLDER) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fault in FAULTS.values():
        path = folder / f"{fault.name}.json"
        path.write_text(json.dumps(build(fault), indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def load(name: str) -> dict[str, Any]:
    """A shipped experiment by name (or a path to any experiment file)."""
    path = Path(name)
    if not path.exists():
        path = FOLDER / f"{name}.json"
    if not path.exists():
        known = ", ".join(sorted(FAULTS))
        raise ValueError(f"no experiment {name!r}: one of {known}, or a path to a JSON file")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
