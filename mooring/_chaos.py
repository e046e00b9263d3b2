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
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from chaos import actions, experiments, local, report
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
    def cluster(self) -> _Cluster:
        spec = self.experiment.get("extensions", [{}])[0].get("cluster", {})
        return _Cluster(
            replicas=int(spec.get("replicas", 3)),
            agents=int(spec.get("agents", 8)),
            etcd_members=int(spec.get("etcd_members", 1)),
            netns=bool(spec.get("netns", False)),
            fleets=int(spec.get("fleets", 1)),
        )


@dataclasses.dataclass(frozen=True)
class _Cluster:
    replicas: int
    agents: int
    etcd_members: int
    netns: bool = False  # every process in a network namespace of its own
    fleets: int = 1

    def __str__(self) -> str:
        where = " in network namespaces" if self.netns else ""
        return (
            f"{self.replicas} replicas, {self.agents} agents, {self.etcd_members} etcd"
            f" member(s){where}"
        )

    @property
    def slug(self) -> str:
        return f"cluster-{self.replicas}r-{self.agents}a-{self.etcd_members}e" + (
            "-netns" if self.netns else ""
        )

    def members(self) -> list[str]:
        """The namespaces a topology for this cluster needs (one spare replica, for a
        scale out), the runner's own (ctl) first."""
        return [
            "ctl",
            *(f"etcd{i}" for i in range(self.etcd_members)),
            "redis",
            *(f"p{i}" for i in range(1, self.replicas + 2)),
            *(f"fleet{i}" for i in range(1, self.fleets + 1)),
        ]


def _plan(options: ChaosOptions, seed: int) -> list[_Planned]:
    if options.campaign:
        return [
            _Planned(f.name, f"{f.steps[0].action} {f.steps[0].target}", _sized(f, options))
            for f in experiments.campaign(seed, options.campaign)
        ]
    names = [*(experiments.SMOKE if options.smoke else ()), *options.experiments]
    names = list(dict.fromkeys(names)) or list(experiments.FAULTS)
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


NETNS_ENV = "MOORING_CHAOS_NETNS"
"""Set (to DIR/netns.json) in the runner that the outer one started inside a topology."""


LINK_PORT = 2389
"""Where, in etcd0's namespace, the replicas' proxy to etcd listens."""


def _etcd_link(directory: Path, where: dict[str, str]) -> str:
    """Start the userspace proxy the replicas reach etcd through (no shaping until an
    experiment writes DIR/etcd-link.json); its URL. It lives in etcd0's namespace, so
    the topology's end stops it."""
    from chaos import actions, proxy

    control = directory / actions.LINK_FILE
    proxy.write_control(control, proxy.Limits())
    host = where["host"]
    with (directory / "etcd-link.log").open("ab") as log:
        subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                where["namespace"],
                sys.executable,
                "-m",
                "chaos.proxy",
                "--listen",
                f"{host}:{LINK_PORT}",
                "--target",
                f"{host}:2379",
                "--control",
                str(control),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    proxy.wait_applied(control, proxy.Limits(), timeout=10.0)
    return f"etcd://{host}:{LINK_PORT}"


def _up(directory: Path, cluster: _Cluster, out: TextIO) -> None:
    launcher.down(directory, out=io.StringIO())
    placement = None
    via = None
    if cluster.netns:
        members = json.loads(Path(os.environ[NETNS_ENV]).read_text())["members"]
        placement = {name: where for name, where in members.items() if name != "ctl"}
        if cluster.etcd_members == 1:
            via = _etcd_link(directory, members["etcd0"])
    said = io.StringIO()
    launcher.up(
        launcher.UpOptions(
            directory=directory,
            replicas=cluster.replicas,
            agents=cluster.agents,
            etcd_members=cluster.etcd_members,
            fleets=cluster.fleets,
            detach=True,
            netns=placement,
            replica_coordination=via,
        ),
        out=said,
    )
    last = said.getvalue().strip().splitlines()[-1:]
    print(
        f"cluster: {cluster} in {directory} ({last[0].strip() if last else 'up'})",
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
    (run / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n", encoding="utf-8")
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
    """Run the planned experiments; 0 when every one passed. SIGTERM stops the run as
    Ctrl-C does, tearing down its clusters and namespaces (a test's timeout or a CI
    cancel then leaves nothing running)."""
    if threading.current_thread() is not threading.main_thread():
        return _run(options, out=out)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(options, out=out)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run(options: ChaosOptions, *, out: TextIO) -> int:
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
    inside = bool(os.environ.get(NETNS_ENV))
    try:
        for cluster, group in _groups(plans):
            if cluster.netns and not inside:
                verdicts += _in_namespaces(cluster, group, options, directory, report_dir, out)
                continue
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


def _in_namespaces(
    cluster: _Cluster,
    group: Sequence[_Planned],
    options: ChaosOptions,
    directory: Path,
    report_dir: Path,
    out: TextIO,
) -> list[dict[str, Any]]:
    """Run `group` on a cluster whose every process has a network namespace of its own:
    make the topology here, run this runner again inside its `ctl` namespace (so both
    ends of all traffic are in namespaces the suite made), then remove the topology."""
    from chaos import netns

    logging.getLogger("chaos.netns").setLevel(logging.WARNING)  # each rule: not news here
    prefix = f"mc{os.getpid() % 10**6}"
    directory.mkdir(parents=True, exist_ok=True)
    description = directory / "netns.json"
    with netns.Topology.create(prefix, cluster.members()) as topo:
        description.write_text(json.dumps(topo.describe(), indent=2) + "\n", encoding="utf-8")
        names: list[str] = []
        for plan in group:
            if plan.name in experiments.FAULTS:
                names.append(plan.name)
            else:  # a file: hand over the experiment as planned
                source = report_dir / "experiments" / f"{plan.name}.json"
                source.parent.mkdir(parents=True, exist_ok=True)
                source.write_text(json.dumps(plan.experiment, indent=2), encoding="utf-8")
                names.append(str(source))
        argv = [sys.executable, "-m", "mooring", "chaos", "run", "--dir", str(directory)]
        argv += ["--report", str(report_dir), "--agents", str(options.agents)]
        for name in names:
            argv += ["--experiment", name]
        subprocess.run(
            topo.argv("ctl", argv),
            env={**os.environ, NETNS_ENV: str(description)},
            stdin=subprocess.DEVNULL,
            check=False,
            timeout=CHAOS_TIMEOUT * (len(group) + 1),
        )
    description.unlink(missing_ok=True)
    verdicts = []
    for plan in group:
        path = report_dir / plan.name / "verdict.json"
        if path.exists():
            verdicts.append(json.loads(path.read_text(encoding="utf-8")))
    return verdicts


def _groups(plans: Sequence[_Planned]) -> list[tuple[_Cluster, list[_Planned]]]:
    """Plans by the cluster they need, first appearance first."""
    out: dict[_Cluster, list[_Planned]] = {}
    for plan in plans:
        out.setdefault(plan.cluster, []).append(plan)
    return list(out.items())


def _keep_logs(directory: Path, report_dir: Path, cluster: _Cluster) -> None:
    """Copy the cluster's logs, session history and chaos logs into the report."""
    keep = report_dir / cluster.slug
    for sub in ("logs", "history", "chaos"):
        if (directory / sub).exists():
            shutil.copytree(directory / sub, keep / sub, dirs_exist_ok=True)
