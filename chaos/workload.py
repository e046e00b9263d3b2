"""The writer: a known sequence of changes applied during a fault, each outcome logged.

`python -m chaos.workload --dir DIR [--rate N]` applies Applications named
`chaos-0..2` to every agent in turn, where each one's producer writes: a managed
agent's on the hub (`HubStore.apply_desired`), an autonomous agent's in its local
store (`AgentStore.apply_local`). Each change sets `spec.source.targetRevision` to a
unique `WRITER-SEQ`; every seventh is a delete. After each, one JSON line goes to
DIR/chaos/workload.jsonl (kept across runs: I2 judges the cluster's whole life):
{writer, seq, t, agent, mode, op, name, rev, ok, error}, where ok is true
(acknowledged), or null (an error: the change may or may not have landed). SIGTERM
finishes the change in flight, logs it, and exits; so does the end of its cluster.
While RUN/workload.pause exists it writes nothing and says so with RUN/workload.paused
(a probe checking I2 quiesces it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import agent
import principal
from chaos import _local as local

__all__ = ["NAMES", "PREFIX", "manifest", "run"]

PREFIX = "chaos-"
NAMES = tuple(f"{PREFIX}{k}" for k in range(3))
DELETE_EVERY = 7
OP_TIMEOUT = 5.0


def manifest(name: str, rev: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://github.com/argoproj/argocd-example-apps.git",
                "path": "guestbook",
                "targetRevision": rev,
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


class _Stop:
    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True


async def run(directory: Path, *, rate: float, out: Path, stop: _Stop) -> int:
    state = local.cluster(directory)
    agents = [(a["name"], a["mode"], a.get("state")) for a in state["agents"]]
    hub = principal.open_hub_store(state.get("store") or state["coordination"])
    await hub.connect()
    seq = 0
    writer = os.urandom(3).hex()
    run = local.run_dir(directory)
    pause, paused = run / "workload.pause", run / "workload.paused"
    next_check = 0.0
    try:
        with out.open("a", encoding="utf-8", buffering=1) as log:
            while not stop.requested:
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + 2.0
                    if not local.cluster_running(directory):
                        break  # the cluster is gone (a run that never stopped us)
                if pause.exists():
                    paused.touch()
                    await asyncio.sleep(0.05)
                    continue
                paused.unlink(missing_ok=True)
                began = time.monotonic()
                name_, mode, path = agents[seq % len(agents)]
                name = NAMES[(seq // len(agents)) % len(NAMES)]
                op = "delete" if seq % DELETE_EVERY == DELETE_EVERY - 1 else "apply"
                rev = f"{writer}-{seq}"
                ok: bool | None = True
                error = ""
                try:
                    if mode == "managed":
                        await asyncio.wait_for(_hub_op(hub, name_, op, name, rev), OP_TIMEOUT)
                    else:
                        await asyncio.to_thread(_local_op, path, op, name, rev)
                except Exception as err:  # any failure: the outcome is unknown
                    ok, error = None, f"{type(err).__name__}: {err}"[:300]
                line = {
                    "writer": writer,
                    "seq": seq,
                    "t": time.monotonic(),
                    "agent": name_,
                    "mode": mode,
                    "op": op,
                    "name": name,
                    "rev": rev,
                    "ok": ok,
                    "error": error,
                }
                log.write(json.dumps(line, sort_keys=True) + "\n")
                seq += 1
                idle = 1.0 / rate - (time.monotonic() - began)
                if idle > 0:
                    await asyncio.sleep(idle)
    finally:
        await hub.close()
    return seq


async def _hub_op(hub: principal.HubStore, agent_name: str, op: str, name: str, rev: str) -> None:
    if op == "apply":
        await hub.apply_desired(agent_name, manifest(name, rev))
    else:
        await hub.delete_desired(agent_name, "Application", name)


def _local_op(path: str, op: str, name: str, rev: str) -> None:
    store = agent.AgentStore(path, create=False)
    try:
        if op == "apply":
            store.apply_local(manifest(name, rev))
        else:
            store.delete_local("Application", name)
    finally:
        store.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.workload", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the cluster's state dir")
    parser.add_argument("--rate", type=float, default=4.0, help="changes per second")
    parser.add_argument("--out", type=Path, help="log file (default DIR/chaos/workload.jsonl)")
    args = parser.parse_args()
    stop = _Stop()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    out = args.out or local.chaos_dir(args.dir) / "workload.jsonl"
    asyncio.run(run(args.dir, rate=args.rate, out=out, stop=stop))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
