"""The report of a chaos run: per experiment a verdict, figures and a plot; a summary.

`judge(run)` reads one experiment's run dir (journal.json, results.jsonl,
samples.jsonl, the cluster's fault marks) and says whether it passed: chaostoolkit
completed, the steady state was met before (chaostoolkit exits 0 when it was not: the
journal's `steady_states.before.steady_state_met` says) and after the method, and no
checker found a violation. `plot(run)` draws agents connected per replica over time
with the fault window shaded. `write_summary` writes summary.md and figures.json.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaos import _local as local

__all__ = ["judge", "percentiles", "plot", "write_summary"]

PROBES = ("i1", "i2", "i3", "i4")
BEGINS = ("kill", "stop", "pause", "scale", "partition", "shape")


def _journal(run: Path) -> dict[str, Any]:
    path = run / "journal.json"
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def judge(run: Path, *, fault: str, kind: str) -> dict[str, Any]:
    """One experiment's verdict and figures."""
    journal = _journal(run)
    states = journal.get("steady_states") or {}
    before = (states.get("before") or {}).get("steady_state_met")
    after = (states.get("after") or {}).get("steady_state_met")
    results = local.read_jsonl(run / "results.jsonl")
    # The last result of each probe is the after-method one (when the method ran).
    last: dict[str, dict[str, Any]] = {}
    for line in results:
        last[line["probe"]] = line
    violations = [v for line in results for v in line["violations"]]
    reasons = []
    if journal.get("status") != "completed":
        reasons.append(f"chaostoolkit status {journal.get('status') or 'missing'}")
    if before is not True:
        reasons.append("steady state not met before the method")
    if after is not True:
        reasons.append("steady state not met after the method")
    if violations:
        reasons.append(f"{len(violations)} invariant violations")
    missing = [p for p in PROBES if p not in last]
    if missing:
        reasons.append(f"no result from {', '.join(missing)}")
    i2 = (last.get("i2") or {}).get("figures", {})
    i3 = (last.get("i3") or {}).get("figures", {})
    return {
        "experiment": run.name,
        "fault": fault,
        "kind": kind,
        "passed": not reasons,
        "reasons": reasons,
        "violations": violations,
        "converge_s": i3.get("converge_s") if i3.get("after_heal") else None,
        "changes": i2.get("changes"),
        "acknowledged": i2.get("acknowledged"),
        "unknown": i2.get("unknown"),
        "history_events": ((last.get("i1") or {}).get("figures") or {}).get("events"),
        **_unserved(run, agents=i3.get("agents")),
        "duration_s": _duration(journal),
    }


def _unserved(run: Path, *, agents: int | None) -> dict[str, float | None]:
    """Agent-seconds without a session, and the most agents without one at once, over
    the run, as the replicas count their sessions (10 Hz): what the fault cost users."""
    samples = local.read_jsonl(run / "samples.jsonl")
    if not agents or len(samples) < 2:
        return {"unserved_agent_s": None, "unserved_max": None}
    total, worst = 0.0, 0
    for sample, after in itertools.pairwise(samples):
        served = sum((r or {}).get("open") or 0 for r in sample["replicas"].values())
        missing = max(0, agents - int(served))
        worst = max(worst, missing)
        total += missing * (after["t"] - sample["t"])
    return {"unserved_agent_s": round(total, 1), "unserved_max": worst}


def _duration(journal: dict[str, Any]) -> float | None:
    value = journal.get("duration")
    return round(float(value), 1) if isinstance(value, int | float) else None


def _windows(marks: Sequence[dict[str, Any]], run: str) -> list[tuple[float, float, str]]:
    ours = [m for m in marks if m.get("run") == run]
    out = []
    began: tuple[float, str] | None = None
    for m in ours:
        if m["event"] in BEGINS and began is None:
            began = (m["t"], f"{m['event']} {m.get('target', m.get('replicas', ''))}")
        elif m["event"] == "heal" and began is not None:
            out.append((began[0], m["t"], began[1]))
            began = None
    return out


def plot(run: Path, directory: Path, *, title: str) -> Path | None:
    """RUN/agents.png: sessions open per replica over time, the fault window shaded."""
    samples = local.read_jsonl(run / "samples.jsonl")
    if not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = samples[0]["t"]
    replicas = sorted({rid for s in samples for rid in s["replicas"]})
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=110)
    for rid in replicas:
        xs = [s["t"] - t0 for s in samples]
        ys = [
            ((s["replicas"].get(rid) or {}).get("open") if s["replicas"].get(rid) else math.nan)
            for s in samples
        ]
        ax.step(xs, [math.nan if y is None else y for y in ys], where="post", label=rid)
    for start, end, what in _windows(local.marks(directory), run.name):
        ax.axvspan(start - t0, end - t0, color="tab:red", alpha=0.15)
        ax.text(start - t0, ax.get_ylim()[1] * 0.95, what, fontsize=8, va="top")
    ax.set_xlabel("seconds")
    ax.set_ylabel("agents connected")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = run / "agents.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def percentiles(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p99": round(p99, 2),
        "max": round(ordered[-1], 2),
    }


def write_summary(report: Path, verdicts: Sequence[dict[str, Any]], *, header: str) -> Path:
    by_kind: dict[str, list[float]] = {}
    for v in verdicts:
        if v["converge_s"] is not None:
            by_kind.setdefault(v["kind"], []).append(v["converge_s"])
    convergence = {k: percentiles(vs) for k, vs in sorted(by_kind.items())}
    figures: dict[str, Any] = {
        "experiments": list(verdicts),
        "passed": sum(1 for v in verdicts if v["passed"]),
        "failed": sum(1 for v in verdicts if not v["passed"]),
        "violations": sum(len(v["violations"]) for v in verdicts),
        "convergence_after_heal_s": convergence,
    }
    (report / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# Mooring chaos report",
        "",
        header,
        "",
        f"**{figures['passed']} passed, {figures['failed']} failed, "
        f"{figures['violations']} invariant violations.**",
        "",
        "| experiment | verdict | converged after heal (s) | agent-s unserved (most at once)"
        " | writes so far (acked / unknown) | why not |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        took = "-" if v["converge_s"] is None else f"{v['converge_s']:.2f}"
        changes = f"{v['changes']} ({v['acknowledged']} / {v['unknown']})"
        unserved = (
            "-"
            if v.get("unserved_agent_s") is None
            else f"{v['unserved_agent_s']} ({v['unserved_max']})"
        )
        lines.append(
            f"| [{v['experiment']}]({v['experiment']}/) | {'pass' if v['passed'] else 'FAIL'} |"
            f" {took} | {unserved} | {changes} | {'; '.join(v['reasons']) or ''} |"
        )
    lines += [
        "",
        "## Convergence after the heal, per fault kind",
        "",
        "| fault kind | n | p50 (s) | p99 (s) | max (s) |",
        "|---|---|---|---|---|",
    ]
    for kind, p in convergence.items():
        lines.append(f"| {kind} | {p['n']} | {p['p50']} | {p['p99']} | {p['max']} |")
    failures = [v for v in verdicts if v["violations"]]
    if failures:
        lines += ["", "## Violations", ""]
        for v in failures:
            for item in v["violations"][:20]:
                lines.append(
                    f"- {v['experiment']}: {item['invariant']} {item['subject']}: {item['message']}"
                )
    lines += ["", "## Plots", ""]
    for v in verdicts:
        if (report / v["experiment"] / "agents.png").exists():
            lines.append(f"![{v['experiment']}]({v['experiment']}/agents.png)")
    out = report / "summary.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out
