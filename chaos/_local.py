"""What the chaos suite knows about a local cluster: its state dir, its CLI, its metrics.

Everything here goes through what an operator has too: DIR/cluster.json (the local
cluster's documented state file), the `mooring` CLI, the processes' /metrics ports,
and the public store APIs (`principal.open_hub_store`, `agent.AgentStore`). Nothing
imports principal's or agent's private modules.

What outlives one experiment is kept per cluster, in DIR/chaos: faults.jsonl (every
fault and heal, with both clocks and the run it belongs to) and workload.jsonl (the
writer's log): the checkers judge the cluster's whole life, not one run. What belongs
to one run lives in its "run dir" (samples.jsonl at 10 Hz, results.jsonl, the journal,
the observers' pids); actions and probes find it in MOORING_CHAOS_RUN, else DIR/chaos/run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import parser as prom_parser

from chaos import _errors as errors

__all__ = [
    "CliError",
    "alive",
    "chaos_dir",
    "cluster",
    "cluster_running",
    "mark",
    "marks",
    "mooring",
    "run_dir",
    "scrape",
    "unlabelled",
]

RUN_ENV = "MOORING_CHAOS_RUN"
CLI_TIMEOUT = 60.0
SCRAPE_TIMEOUT = 0.5


class CliError(errors.ChaosError, RuntimeError):
    """A `mooring` command failed; the message is its last stderr line."""


def cluster(directory: str | Path) -> dict[str, Any]:
    """DIR/cluster.json, as `mooring up` wrote it."""
    path = Path(directory) / "cluster.json"
    if not path.exists():
        raise CliError(f"no cluster in {directory}: start one with `mooring up --dir {directory}`")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def mooring(*args: str, timeout: float = CLI_TIMEOUT) -> str:
    """Run `python -m mooring ARGS` with this interpreter; its stdout, or CliError."""
    proc = subprocess.run(
        [sys.executable, "-m", "mooring", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise CliError(f"mooring {' '.join(args)}: {last}")
    return proc.stdout


def cluster_running(directory: str | Path) -> bool:
    """Whether any etcd member cluster.json records still runs (same pid, same start
    time): the observers stop by themselves once their cluster is gone."""
    try:
        members = cluster(directory).get("etcd") or []
    except (CliError, ValueError):
        return False
    for member in members:
        process = member.get("process") or {}
        if isinstance(process.get("pid"), int) and alive(
            process["pid"], start=process.get("start")
        ):
            return True
    return False


def alive(pid: int, *, start: int | None = None) -> bool:
    """Whether `pid` runs (not a zombie; with the kernel start time cluster.json records,
    when given, so a reused pid does not count)."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[0] not in "ZX" and (start is None or int(fields[19]) == start)


def scrape(address: str, *, timeout: float = SCRAPE_TIMEOUT) -> dict[str, float] | None:
    """Unlabelled samples of http://ADDRESS/metrics (None when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as resp:
            return unlabelled(resp.read().decode())
    except (OSError, ValueError):
        return None


def unlabelled(text: str) -> dict[str, float]:
    """Sample name -> value of each unlabelled sample in Prometheus text (ValueError if it
    is not that format). The chaos suite reads only unlabelled gauges, and Mooring's own
    label-aware reader (`proto.exposition`) is out of its reach by design: it sees a
    cluster as an operator does (.importlinter's chaos-public contract)."""
    return {
        sample.name: float(sample.value)
        for family in prom_parser.text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def chaos_dir(directory: str | Path) -> Path:
    """DIR/chaos: what the checkers need from every run on this cluster (created)."""
    path = Path(directory) / "chaos"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir(directory: str | Path) -> Path:
    """Where this run's artifacts go (created)."""
    path = Path(os.environ.get(RUN_ENV) or chaos_dir(directory) / "run")
    path.mkdir(parents=True, exist_ok=True)
    return path


def mark(directory: str | Path, event: str, **fields: Any) -> dict[str, Any]:
    """Append one fault/heal event to DIR/chaos/faults.jsonl, with the host's monotonic
    clock (the one the replicas' session history uses), the wall clock and the run."""
    line = {
        "t": time.monotonic(),
        "wall": time.time(),
        "event": event,
        "run": run_dir(directory).name,
        **fields,
    }
    with (chaos_dir(directory) / "faults.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    return line


def marks(directory: str | Path) -> list[dict[str, Any]]:
    return read_jsonl(chaos_dir(directory) / "faults.jsonl")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines of a file (missing: none); a torn last line (a killed writer) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
