"""chaostoolkit probes: is the cluster whole, and did I1-I4 hold?

Each `i*` probe returns the number of violations (the experiments' tolerance is 0) and
appends what it found to RUN/results.jsonl ({probe, t, value, violations, figures}),
which the report reads. They are meaningful before the method too: the cluster's
start must satisfy the invariants as well.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path
from typing import Any

from chaos import _local as local
from chaos import evidence, invariants, sampler

__all__ = [
    "i1_single_owner",
    "i2_nothing_lost",
    "i3_converged",
    "i4_fenced_leadership",
    "wait_whole",
]

HOLD = 1.0
"""Seconds the cluster must stay whole for I3 to call it converged."""
QUIESCE_TIMEOUT = 10.0


def _record(
    directory: str, probe: str, violations: list[invariants.Violation], **figures: Any
) -> int:
    line = {
        "probe": probe,
        "t": time.monotonic(),
        "violations": [v.to_json() for v in violations],
        "figures": figures,
    }
    with (local.run_dir(directory) / "results.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    return len(violations)


def _agents(directory: str) -> int:
    return len(local.cluster(directory)["agents"])


def wait_whole(directory: str, timeout: float = 30.0) -> float:
    """Seconds until every agent is on its owner under one epoch (scraping at 10 Hz)."""
    began = time.monotonic()
    agents = _agents(directory)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            replicas = {r["id"]: r["metrics"] for r in local.cluster(directory)["replicas"]}
            if (
                invariants.convergence_time(
                    [sampler.sample(replicas, pool)], after=0, agents=agents
                )
                is not None
            ):
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise local.CliError(f"the cluster is not whole after {timeout:.0f} s")
            time.sleep(0.1)


def _last_heal(directory: str) -> float | None:
    """The last heal of this run (before the method: none)."""
    run = local.run_dir(directory).name
    marks = local.marks(directory)
    heals = [m["t"] for m in marks if m["event"] == "heal" and m.get("run") == run]
    return max(heals) if heals else None


def i3_converged(directory: str, bound: float = invariants.CONVERGENCE_BOUND) -> int:
    """I3: from the last heal (or now, before any fault), seconds until the cluster is
    whole for good, from the sampler's 10 Hz samples."""
    heal = _last_heal(directory)
    start = heal if heal is not None else time.monotonic()
    agents = _agents(directory)
    path = local.run_dir(directory) / "samples.jsonl"
    if not path.exists():  # no sampler (yet): scrape the replicas ourselves, from now
        try:
            took_now = wait_whole(directory, timeout=bound)
            return _record(directory, "i3", [], converge_s=took_now, after_heal=False, samples=0)
        except local.CliError as err:
            return _record(
                directory, "i3", [invariants.Violation("I3", "cluster", str(err))], after_heal=False
            )
    deadline = start + bound + HOLD + 2.0
    while True:
        samples = [s for s in local.read_jsonl(path) if s["t"] >= start]
        took = invariants.convergence_time(samples, after=start, agents=agents)
        last = samples[-1]["t"] if samples else start
        if took is not None and last - (start + took) >= HOLD:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    took, violations = invariants.converged(samples, heal_t=start, agents=agents, bound=bound)
    if not samples:
        violations = [invariants.Violation("I3", "cluster", "no samples: is the sampler running?")]
    return _record(
        directory,
        "i3",
        violations,
        converge_s=took,
        after_heal=heal is not None,
        samples=len(samples),
        agents=agents,
    )


def i1_single_owner(directory: str) -> int:
    events = evidence.history(directory)
    violations = invariants.single_owner(events, local.marks(directory))
    return _record(directory, "i1", violations, events=len(events))


def i4_fenced_leadership(directory: str) -> int:
    maps, leaders = evidence.leadership(directory)
    violations = invariants.fenced_leadership(maps, leaders)
    return _record(directory, "i4", violations, maps=len(maps), leader_versions=len(leaders))


def i2_nothing_lost(directory: str, timeout: float = invariants.CONVERGENCE_BOUND) -> int:
    """I2: quiesce the writer, then give the stores `timeout` seconds to agree with its
    log; the writer carries on afterwards."""
    run = local.run_dir(directory)
    pause, paused = run / "workload.pause", run / "workload.paused"
    writing = (run / "workload.pid").exists()
    pause.touch()
    try:
        if writing:
            _wait_file(paused, QUIESCE_TIMEOUT)
        began = time.monotonic()
        log = local.read_jsonl(local.chaos_dir(directory) / "workload.jsonl")
        while True:
            violations = invariants.nothing_lost(log, evidence.snapshot(directory))
            if not violations or time.monotonic() - began > timeout:
                break
            time.sleep(0.2)
        acked = sum(1 for op in log if op["ok"] is True)
        unknown = sum(1 for op in log if op["ok"] is None)
        return _record(
            directory,
            "i2",
            violations,
            changes=len(log),
            acknowledged=acked,
            unknown=unknown,
            agreed_s=None if violations else time.monotonic() - began,
        )
    finally:
        pause.unlink(missing_ok=True)


def _wait_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise local.CliError(f"the writer did not pause within {timeout:.0f} s")
        time.sleep(0.05)
