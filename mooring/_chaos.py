"""`mooring chaos run`: run chaos experiments on fresh local clusters and report.

    mooring chaos run [--experiment NAME ...] [--smoke] [--campaign N --seed S]
                      [--dir DIR] [--report DIR] [--agents N]

Experiments needing the same cluster (replicas, agents, etcd members) share one
`mooring up`, started fresh in DIR (default .mooring-chaos) and stopped at the end;
the checkers judge the cluster's whole life, so a later experiment also answers for
what earlier ones left. Each experiment runs as `chaos run` (chaostoolkit) with the
writer and the sampler around it; its run dir under the report folder keeps the
experiment, the journal, the checkers' results, the samples and agents.png. The
report folder gets summary.md and figures.json. A campaign draws N faults from the
seed and prints the seed first, so a failure can be replayed with the same numbers.

Exit status: 0 when every experiment passed, 1 otherwise.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from chaos import _local as local
from chaos import actions, experiments, report
from mooring import _launcher as launcher

__all__ = ["ChaosOptions", "run"]

CHAOS_TIMEOUT = 600.0
"""Seconds one experiment may take before it is stopped and failed."""


@dataclasses.dataclass(frozen=True)
class ChaosOptions:
    directory: Path
    report: Path | None = None  # default: DIR/../chaos-report-<time>
    experiments: tuple[str, ...] = ()  # names or paths; empty with no campaign: all
    smoke: bool = False
    campaign: int = 0
    seed: int | None = None
    agents: int = 8

    def __post_init__(self) -> None:
        if self.campaign < 0:
            raise ValueError(f"--campaign must not be negative, got {self.campaign}")
        if self.agents < 1:
            raise ValueError(f"--agents must be at least 1, got {self.agents}")
        if self.campaign and (self.experiments or self.smoke):
            raise ValueError("--campaign runs random faults: give it without --experiment/--smoke")


@dataclasses.dataclass
class _Planned:
    name: str
    kind: str  # what the convergence figures are grouped by
    experiment: dict[str, Any]

    @property
    def cluster(self) -> tuple[int, int, int]:
        spec = self.experiment.get("extensions", [{}])[0].get("cluster", {})
        return (
            int(spec.get("replicas", 3)),
            int(spec.get("agents", 8)),
            int(spec.get("etcd_members", 1)),
        )


def _plan(options: ChaosOptions, seed: int) -> list[_Planned]:
    if options.campaign:
        return [
            _Planned(f.name, f"{f.steps[0].action} {f.steps[0].target}", _sized(f, options))
            for f in experiments.campaign(seed, options.campaign)
        ]
    names = list(options.experiments) or list(
        experiments.SMOKE if options.smoke else experiments.FAULTS
    )
    out = []
    for name in names:
        fault = experiments.FAULTS.get(name)
        data = _sized(fault, options) if fault else experiments.load(name)
        kind = str(data.get("extensions", [{}])[0].get("fault") or Path(name).stem)
        out.append(_Planned(name if fault else Path(name).stem, kind, data))
    return out


def _sized(fault: experiments.Fault, options: ChaosOptions) -> dict[str, Any]:
    return experiments.build(fault, agents=options.agents)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _up(directory: Path, cluster: tuple[int, int, int], out: TextIO) -> None:
    replicas, agents, members = cluster
    launcher.down(directory, out=io.StringIO())
    said = io.StringIO()
    launcher.up(
        launcher.UpOptions(
            directory=directory,
            replicas=replicas,
            agents=agents,
            etcd_members=members,
            detach=True,
        ),
        out=said,
    )
    last = said.getvalue().strip().splitlines()[-1:]
    print(
        f"cluster: {replicas} replicas, {agents} agents, {members} etcd member(s) in"
        f" {directory} ({last[0].strip() if last else 'up'})",
        file=out,
        flush=True,
    )


def _experiment(plan: _Planned, directory: Path, run: Path, out: TextIO) -> dict[str, Any]:
    run.mkdir(parents=True, exist_ok=True)
    source = run / "experiment.json"
    source.write_text(json.dumps(plan.experiment, indent=2) + "\n", encoding="utf-8")
    env = {"MOORING_DIR": str(directory), local.RUN_ENV: str(run)}
    began = time.monotonic()
    with _env(**env):
        actions.start_observers(str(directory))
        try:
            with (run / "chaostoolkit.out").open("wb") as console:
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "chaostoolkit",  # the `chaos` command, with this interpreter
                        "--no-version-check",
                        "--log-file",
                        str(run / "chaostoolkit.log"),
                        "run",
                        "--rollback-strategy",
                        "always",
                        "--journal-path",
                        str(run / "journal.json"),
                        str(source),
                    ],
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=CHAOS_TIMEOUT,
                    cwd=run,
                    check=False,
                )
        except subprocess.TimeoutExpired:
            print(f"  {plan.name}: stopped after {CHAOS_TIMEOUT:.0f} s", file=out)
        finally:
            actions.stop_observers(str(directory))
            with contextlib.suppress(local.CliError):
                actions.heal(str(directory))
    verdict = report.judge(run, fault=plan.name, kind=plan.kind)
    report.plot(run, directory, title=str(plan.experiment.get("title", plan.name)))
    took = "-" if verdict["converge_s"] is None else f"{verdict['converge_s']:.2f} s"
    print(
        f"  {plan.name}: {'pass' if verdict['passed'] else 'FAIL'}"
        f" (converged {took} after the heal; {verdict['acknowledged']} changes acknowledged;"
        f" {time.monotonic() - began:.0f} s)"
        + (f": {'; '.join(verdict['reasons'])}" if verdict["reasons"] else ""),
        file=out,
        flush=True,
    )
    for violation in verdict["violations"][:5]:
        print(
            f"    {violation['invariant']} {violation['subject']}: {violation['message']}",
            file=out,
        )
    return verdict


def run(options: ChaosOptions, *, out: TextIO = sys.stdout) -> int:
    seed = options.seed if options.seed is not None else random.SystemRandom().randrange(1, 10**6)
    directory = options.directory.resolve()
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    report_dir = (options.report or directory.parent / f"chaos-report-{stamp}").resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    plans = _plan(options, seed)
    if options.campaign:
        print(
            f"mooring: campaign of {options.campaign} faults, seed {seed}"
            f" (replay: mooring chaos run --campaign {options.campaign} --seed {seed})",
            file=out,
            flush=True,
        )
    print(f"mooring: {len(plans)} experiments; report in {report_dir}", file=out, flush=True)
    verdicts: list[dict[str, Any]] = []
    began = time.monotonic()
    try:
        for cluster, group in _groups(plans):
            _up(directory, cluster, out)
            try:
                for plan in group:
                    verdicts.append(_experiment(plan, directory, report_dir / plan.name, out))
            finally:
                launcher.down(directory, out=io.StringIO())
                _keep_logs(directory, report_dir, cluster)
    finally:
        header = (
            f"{len(verdicts)} experiments, {time.monotonic() - began:.0f} s, "
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC}"
            + (f", campaign seed {seed}" if options.campaign else "")
        )
        summary = report.write_summary(report_dir, verdicts, header=header)
    failed = [v for v in verdicts if not v["passed"]]
    print(
        f"mooring: {len(verdicts) - len(failed)}/{len(verdicts)} passed; {summary}",
        file=out,
        flush=True,
    )
    return 1 if failed or len(verdicts) < len(plans) else 0


def _groups(plans: Sequence[_Planned]) -> list[tuple[tuple[int, int, int], list[_Planned]]]:
    """Plans by the cluster they need, first appearance first."""
    out: dict[tuple[int, int, int], list[_Planned]] = {}
    for plan in plans:
        out.setdefault(plan.cluster, []).append(plan)
    return list(out.items())


def _keep_logs(directory: Path, report_dir: Path, cluster: tuple[int, int, int]) -> None:
    """Copy the cluster's logs, session history and chaos logs into the report."""
    keep = report_dir / "cluster-{}r-{}a-{}e".format(*cluster)
    for sub in ("logs", "history", "chaos"):
        if (directory / sub).exists():
            shutil.copytree(directory / sub, keep / sub, dirs_exist_ok=True)
