"""`mooring stop|kill|pause|resume|start NAME`: one process of a local cluster.

NAME is anything `mooring status` and DIR/logs name: a replica (p2), an etcd member
(etcd1), redis, prometheus, the agent fleet (fleet, or fleet2 with several), or an
agent that runs in its own process (edge-03, with `up --agent-processes`).

- stop: SIGTERM and wait (a replica hands its agents over first); SIGKILL after 10 s.
- kill: SIGKILL, as a crash.
- pause / resume: SIGSTOP / SIGCONT, as a process that hangs (a long GC pause, a
  frozen VM) and then carries on as if nothing happened.
- start: run it again with the command it was started with (a replica gets a fresh
  process on the same ports; etcd and Redis keep their ports and data dirs).

Each says what it did, and whether the target was the leader.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from mooring import _launcher as launcher
from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from mooring import _status as status_
from proto import catalog, exposition

__all__ = ["ACTIONS", "control", "logs"]

ACTIONS = ("stop", "kill", "pause", "resume", "start")
START_TIMEOUT = 30.0


@dataclasses.dataclass
class _Target:
    name: str
    kind: str  # replica | etcd | redis | prometheus | fleet | agent
    log: Path
    endpoint: str | None  # HOST:PORT it listens on, to wait for after a start
    get: Callable[[], processes.Handle | None]
    set: Callable[[processes.Handle], None]


def _targets(state: state_.ClusterState) -> dict[str, _Target]:
    out: dict[str, _Target] = {}

    def add(name: str, kind: str, record: Any, log: str, endpoint: str | None) -> None:
        def put(handle: processes.Handle) -> None:
            record.process = handle

        out[name] = _Target(name, kind, Path(log), endpoint, get=lambda: record.process, set=put)

    for r in state.replicas:
        add(r.id, "replica", r, r.log, r.endpoint)
    for m in state.etcd:
        add(m.name, "etcd", m, m.log, m.endpoint)
    if state.redis_server:
        redis = state.redis_server
        add("redis", "redis", redis, redis.log, redis.endpoint)
    if state.prometheus:
        prom = state.prometheus
        add("prometheus", "prometheus", prom, prom.log, prom.endpoint)
    for i, f in enumerate(state.fleets, start=1):
        add("fleet" if len(state.fleets) == 1 else f"fleet{i}", "fleet", f, f.log, None)
    for a in state.agents:
        if a.process is not None and a.log:
            add(a.name, "agent", a, a.log, None)
    return out


def _leader_note(state: state_.ClusterState, name: str) -> str:
    record = next((r for r in state.replicas if r.id == name), None)
    if record is None or not processes.alive(record.process):
        return ""
    samples = exposition.scrape(record.metrics, timeout=status_.SCRAPE_TIMEOUT)
    leader = samples is not None and samples.value(catalog.LEADER.name) == 1.0
    return " (it was the leader)" if leader else ""


def control(
    directory: Path,
    action: str,
    name: str,
    *,
    kinds: tuple[str, ...] | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Apply `action` to the process called `name` in the local cluster in `directory`
    (only a process of one of `kinds` when given: `mooring replica`)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}: {', '.join(ACTIONS)}")
    directory = directory.resolve()
    with state_.locked(directory):
        state = state_.load(directory)
        targets = {n: t for n, t in _targets(state).items() if kinds is None or t.kind in kinds}
        target = targets.get(name)
        if target is None:
            known = ", ".join(targets) or "none"
            raise ValueError(f"nothing called {name!r} runs in {directory} (known: {known})")
    label = f"replica {name}" if target.kind == "replica" else name
    with state_.locked(directory):
        state = state_.load(directory)
        target = _targets(state)[name]
        handle = target.get()
        alive = processes.alive(handle)
        if action == "start":
            if alive:
                print(f"mooring: {label} is already running", file=out)
                return 0
            if target.kind == "replica":  # a fresh certificate and argv, on its old ports
                record = launcher.restart_replica(state, name)
                state_.save(directory, state)
                assert record.process is not None
                print(
                    f"mooring: started {label} on {record.endpoint} (pid {record.process.pid})",
                    file=out,
                )
                return 0
            if handle is None:
                raise ValueError(f"{name} was never started here: nothing to start again")
            _proc, fresh = processes.respawn(handle, log=target.log)
            target.set(fresh)
            state_.save(directory, state)
            _wait_started(target, fresh)
            print(f"mooring: started {label} (pid {fresh.pid})", file=out)
            return 0
        if not alive or handle is None:
            print(f"mooring: {label} is not running", file=out)
            return 0
        role = _leader_note(state, name)
        if action == "kill":
            os.kill(handle.pid, signal.SIGKILL)
            deadline = time.monotonic() + launcher.STOP_GRACE
            while processes.alive(handle) and time.monotonic() < deadline:
                time.sleep(0.01)
            verb = "killed"
        elif action == "stop":
            processes.terminate([handle], grace=launcher.STOP_GRACE)
            verb = "stopped"
        elif action == "pause":
            processes.stop_signal(handle.pid, signal.SIGSTOP)
            verb = "paused"
        else:
            processes.stop_signal(handle.pid, signal.SIGCONT)
            verb = "resumed"
    again = {
        "kill": f"; start it again with `mooring start {name} --dir {directory}`",
        "stop": f"; start it again with `mooring start {name} --dir {directory}`",
        "pause": f"; `mooring resume {name} --dir {directory}` lets it carry on",
    }.get(action, "")
    print(f"mooring: {verb} {label} (pid {handle.pid}){role}{again}", file=out)
    return 0


def logs(
    directory: Path,
    name: str,
    *,
    tail: int = -1,
    follow: bool = False,
    path_only: bool = False,
    out: TextIO = sys.stdout,
    poll: float = 0.2,
) -> int:
    """Print the log of the process called `name` (its last `tail` lines; then what is
    appended, with `follow`, until interrupted). An agent of a fleet has no log of its
    own: the lines of its fleet's log that name it are shown."""
    directory = directory.resolve()
    state = state_.load(directory)
    targets = _targets(state)
    pick: Callable[[str], bool] = lambda line: True  # noqa: E731
    target = targets.get(name)
    if target is None and any(a.name == name for a in state.agents) and state.fleets:
        fleet = next(t for t in targets.values() if t.kind == "fleet")  # agents go to fleet 1..
        index = [a.name for a in state.agents].index(name) % len(state.fleets)
        fleet = targets.get(f"fleet{index + 1}", fleet)
        word = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
        pick, target = (lambda line: bool(word.search(line))), fleet
        if not path_only:
            print(
                f"mooring: {name} runs in {fleet.name}: its lines of {fleet.log}", file=sys.stderr
            )
    if target is None:
        known = ", ".join([*targets, *(a.name for a in state.agents if a.name not in targets)])
        raise ValueError(f"nothing called {name!r} runs in {directory} (known: {known or 'none'})")
    if path_only:
        print(target.log, file=out)
        return 0
    if not target.log.exists():
        raise RuntimeError(f"{target.log} does not exist (has {target.name} ever run?)")
    with target.log.open(errors="replace") as handle:
        lines = [line for line in handle if pick(line)]
        for line in lines[len(lines) - tail :] if 0 <= tail < len(lines) else lines:
            out.write(line)
        out.flush()
        while follow:
            line = handle.readline()
            if not line:
                time.sleep(poll)
                continue
            if pick(line):
                out.write(line)
                out.flush()
    return 0


def _wait_started(target: _Target, handle: processes.Handle) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if not processes.alive(handle):
            raise RuntimeError(f"{target.name} exited at once; see {target.log}")
        if target.endpoint is None:
            return
        host, _, port = target.endpoint.rpartition(":")
        try:
            services.wait_tcp(host, int(port), timeout=0.2)
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{target.name} not listening on {target.endpoint} after"
                    f" {START_TIMEOUT:.0f}s; see {target.log}"
                ) from None
