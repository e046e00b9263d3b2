"""Hardening benchmark: connection floods on a replica's ports, and a SIGKILL during one.

Floods one replica's agent and metrics ports of a real 3-replica cluster, and SIGKILLs
another replica during a flood.

Run: `python bench/bench_hardening.py` (about 90 s on 2 cores) or `--quick` (smaller
numbers, about 50 s); every size is a flag. `--replica-nofile 1024` starts the cluster
with systemd's default soft limit on open files. Prints figures beside limits; it is not
a test. Every connection is to 127.0.0.1.

Setup, all real and on loopback, in one temp dir removed at the end: `mooring up --detach
--replicas 3 --agents 50` (in-process `mooring._launcher.up`): one etcd member, one Redis,
3 `mooring principal serve` processes and one `mooring fleet run` hosting the agents. The
flooded replica is the leader (it republishes the shard map when a peer dies); the killed
one is a non-leader. RSS is VmRSS from /proc/PID/status, sampled every 0.25 s
with the replica's open file descriptors (/proc/PID/fd).

Phases:
  calm      10 new agents (registered, certified, one Application each) dial with the
            flooded replica first in their endpoints, no flood: time to session, the
            peer figure for the flood's;
  metrics   on the flooded replica's --metrics port, /metrics scraped every 0.25 s with
            a 1 s timeout: alone; during 200 idle connections opened once; during 200
            idle connections each reopened once the server closes it; during 64
            connections trickling one byte of a request a second (slowloris);
  flood     on its agent port: 2,000 plain TCP connections that send nothing, then 500
            TLS connections: half with a valid agent certificate, which complete the
            handshake and never send the HTTP/2 preface, half without a client
            certificate. The plain and certified ones are reopened as soon as the
            replica closes them (a persistent attacker). Held for the handshake timeout
            + 5 s; 10 more new agents dial during it; the 50 connected agents are
            watched through the fleet's status file. Then closed, and RSS watched 30 s;
  kill      the same flood again; SIGKILL a non-leader replica; per agent it held, kill
            -> resynced on a survivor (the fleet's own failover records).
Limits (printed with the ratio figure / limit): RSS growth <= 50 KB per held connection,
while held and at the peak after the attacker's reopening (bench_memory's budget for an
open agent session: a connection that never authenticated must not cost more); RSS 30 s
after the flood within 50% of its growth; no held connection outlives the handshake
timeout + 2 s; every real agent
served within 2 x the agent's connect timeout (2 x 5 s: an agent that needed longer had a
dial time out, i.e. the flood denied it service); no connected agent loses its session;
/metrics answers within 1 s (the scrape timeout a Prometheus job on 1 s would use);
recovery p99 <= 2 s and max <= 5 s (bench_failover's non-leader targets).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import functools
import io
import json
import os
import resource
import signal
import ssl
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import _cluster as cluster  # noqa: E402  (bench/, this script's folder)
import _flood as flooding  # noqa: E402

from agent import _settings as agent_settings  # noqa: E402
from mooring import _fleet as fleet_  # noqa: E402
from mooring import _launcher as launcher  # noqa: E402
from mooring import _state as state_  # noqa: E402
from principal import _agentserver as agentserver  # noqa: E402
from principal import _pki as pki  # noqa: E402
from proto import _exposition as exposition  # noqa: E402
from proto import codec  # noqa: E402

DIALER = Path(__file__).resolve().parent / "_dialer.py"
TIMELINE_EVERY = 2.0
"""Seconds between the RSS samples printed as the flood's timeline."""
SETTLE_TIMEOUT = 90.0
RECOVERY_TIMEOUT = 40.0
"""Seconds the agents of the killed replica may take to be home before it is reported."""
SCRAPE_TIMEOUT = 1.0
SCRAPE_PERIOD = 0.25
TRICKLE = b"GET /metrics HTTP/1.0\r\n" + b"X-Slow: 1\r\n" * 100
"""What a slowloris sends, a byte every flooding.TRICKLE_EVERY s (below the metrics
port's read timeout): a request line, then headers that never end."""
ATTACKER = "flood-holder"
"""An agent certificate from the cluster's CA, for a name that is not registered."""

RSS_PER_CONNECTION_KB = 50.0
RETAINED_FRACTION = 0.5
CONNECT_TIMEOUT = next(
    float(f.default)  # type: ignore[arg-type]
    for f in dataclasses.fields(agent_settings.AgentSettings)
    if f.name == "connect_timeout"
)
SERVED_WITHIN = 2 * CONNECT_TIMEOUT
RECOVERY_P99 = 2.0
RECOVERY_MAX = 5.0

FULL = {
    "agents": 50,
    "tcp": 2000,
    "tls": 500,
    "new_agents": 10,
    "metrics_idle": 200,
    "trickle": 64,
    "metrics_window": 8.0,
    "extra_hold": 5.0,
    "after": 30.0,
}
QUICK = {
    "agents": 20,
    "tcp": 300,
    "tls": 60,
    "new_agents": 5,
    "metrics_idle": 100,
    "trickle": 64,
    "metrics_window": 4.0,
    "extra_hold": 2.0,
    "after": 8.0,
}


class FleetWatch:
    """Every connected agent's session as the fleet reports it (its status file, rewritten
    every second): which ever showed disconnected or opened another session."""

    def __init__(self, state: state_.ClusterState) -> None:
        self.paths = [Path(f.status_file) for f in state.fleets]
        self.baseline = self.read()
        self.lost: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    def read(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for path in self.paths:
            out.update(fleet_.read_status(path) or {})
        return out

    def start(self) -> None:
        self.baseline = self.read()
        self.lost = set()
        self._task = asyncio.create_task(self._run(), name="fleet-watch")

    async def _run(self) -> None:
        while True:
            for name, info in self.read().items():
                before = self.baseline.get(name, {}).get("sessions")
                if not info.get("connected") or info.get("sessions") != before:
                    self.lost.add(name)
            await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# ----------------------------------------------------------------------------- agents
@dataclasses.dataclass
class Dialled:
    took: dict[str, float]  # agent -> seconds from its start to welcomed and resynced
    replica: dict[str, str]
    errors: dict[str, dict[str, int]]  # agent -> failed attempts by reason
    missing: list[str]


async def prepare_agents(state: state_.ClusterState, names: Sequence[str]) -> None:
    """Register `names` (managed), give each one Application and a certificate."""
    store = state.store or state.coordination
    await launcher.register_agents(store, {n: "managed" for n in names})
    await launcher.seed_managed(store, list(names))
    for name in names:
        pki.issue_agent(Path(state.pki), name=name)


async def dial(
    tmp: Path,
    state: state_.ClusterState,
    names: Sequence[str],
    *,
    endpoints: Sequence[str],
    patience: float,
    children: set[int],
) -> Dialled:
    """Start `names` as real agents in one process, all at once; their times to session
    (those not served within `patience` seconds are reported missing)."""
    spec = tmp / f"dial-{names[0]}.json"
    agents = [
        {
            "name": n,
            "endpoints": list(endpoints),
            "tls_dir": str(Path(state.pki) / "agents" / n),
            "state": str(tmp / f"{n}.db"),
        }
        for n in names
    ]
    spec.write_text(json.dumps({"agents": agents, "timeout": patience}))
    with (tmp / f"dial-{names[0]}.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(DIALER),
            "--spec",
            str(spec),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    children.add(proc.pid)
    assert proc.stdout is not None and proc.stdin is not None
    got = Dialled({}, {}, {}, list(names))
    try:
        async with asyncio.timeout(patience + 30):
            while line := await proc.stdout.readline():
                record = json.loads(line)
                if record.get("done"):
                    got.missing, got.errors = record["missing"], record["errors"]
                    break
                got.took[record["agent"]] = record["welcomed"] - record["started"]
                got.replica[record["agent"]] = record["replica"]
        proc.stdin.write(b"stop\n")
        await proc.stdin.drain()
        proc.stdin.close()
        async with asyncio.timeout(15):
            await proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        children.discard(proc.pid)
    return got


# ----------------------------------------------------------------------------- metrics port
def scrape_once(url: str) -> float | None:
    """Seconds /metrics took to answer 200 in full, None if it did not (refused, reset,
    timed out)."""
    started = flooding.now()
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT) as resp:
            resp.read()
            if resp.status != 200:
                return None
    except (OSError, ValueError):
        return None
    return flooding.now() - started


def scrape_for(url: str, seconds: float) -> list[tuple[float, float | None]]:
    """(started at, seconds or None) for a scrape every SCRAPE_PERIOD s, `seconds` long."""
    out: list[tuple[float, float | None]] = []
    end = flooding.now() + seconds
    while flooding.now() < end:
        tick = flooding.now()
        out.append((tick, scrape_once(url)))
        time.sleep(max(0.0, SCRAPE_PERIOD - (flooding.now() - tick)))
    return out


@dataclasses.dataclass
class Attack:
    """One flood of the metrics port and the scrapes made meanwhile."""

    what: str
    flood: flooding.Flood
    opened: float
    scrapes: list[tuple[float, float | None]]  # (started at, seconds or None)


async def attack(
    port: int,
    what: str,
    count: int,
    *,
    seconds: float,
    reopen: bool = True,
    trickle: bytes = b"",
) -> Attack:
    flood = flooding.Flood(port)
    await flood.add("idle", count, reopen=reopen, trickle=trickle)
    opened = flooding.now()
    scrapes = await asyncio.to_thread(scrape_for, f"http://{flooding.HOST}:{port}/metrics", seconds)
    await flood.stop()
    deadline = flooding.now() + exposition.REQUEST_TIMEOUT + 2.0
    while flooding.now() < deadline:  # the next attack starts on a port that answers again
        if (
            await asyncio.to_thread(scrape_once, f"http://{flooding.HOST}:{port}/metrics")
            is not None
        ):
            break
        await asyncio.sleep(0.1)
    return Attack(what, flood, opened, scrapes)


async def metrics_phase(
    address: str, *, idle: int, trickle: int, window: float
) -> tuple[list[float | None], list[Attack]]:
    """Scrapes alone, then during: `idle` connections opened once; `idle` reopened
    whenever closed; `trickle` connections sending a request a byte a second."""
    port = int(address.rpartition(":")[2])
    calm = [
        await asyncio.to_thread(scrape_once, f"http://{flooding.HOST}:{port}/metrics")
        for _ in range(8)
    ]
    timeout = exposition.REQUEST_TIMEOUT
    return calm, [
        await attack(port, f"{idle} idle, opened once", idle, seconds=timeout + 2.0, reopen=False),
        await attack(port, f"{idle} idle, reopened when closed", idle, seconds=window),
        await attack(
            port,
            f"{trickle} trickling a request (1 byte/{flooding.TRICKLE_EVERY:g} s)",
            trickle,
            seconds=max(window, timeout + 2.0),
            reopen=False,
            trickle=TRICKLE,
        ),
    ]


# ----------------------------------------------------------------------------- agent port
async def open_flood(
    port: int, contexts: dict[str, ssl.SSLContext], *, tcp: int, tls: int, sampler: flooding.Sampler
) -> flooding.Flood:
    """The agent-port flood: `tcp` plain connections, then `tls` TLS ones (half with the
    attacker's certificate, half without); returns once each made its first attempt."""
    flood = flooding.Flood(port)
    sampler.flood = flood
    await flood.add("tcp", tcp)
    holders = tls // 2
    await asyncio.gather(
        flood.add("tls+cert", holders, context=contexts["cert"]),
        flood.add("tls-no-cert", tls - holders, context=contexts["none"], reopen=False),
    )
    return flood


@dataclasses.dataclass
class Recovery:
    victim: str
    affected: int
    from_kill: list[float]
    failover: list[float]
    missing: int
    collateral: int
    converged: float
    leader_before: str | None
    leader_after: str | None
    held_by: dict[str, int]  # survivor -> agents of the victim it serves now
    peak_kb: int  # the flooded replica's RSS peak during this second flood
    held_at_end: int  # connections the second flood held when every agent was home


async def kill_phase(
    directory: Path,
    *,
    target: str,
    port: int,
    contexts: dict[str, ssl.SSLContext],
    tcp: int,
    tls: int,
    sampler: flooding.Sampler,
) -> Recovery:
    """Flood `target` once more, SIGKILL another non-leader, and time its agents' way home."""
    before = await asyncio.to_thread(cluster.collect, directory)
    live = [r for r in before["replicas"] if r["live"]]
    victim = sorted(r["id"] for r in live if r["id"] not in (target, before["leader"]))[0]
    pid = next(int(r["pid"]) for r in live if r["id"] == victim)
    flooded = flooding.now()
    flood = await open_flood(port, contexts, tcp=tcp, tls=tls, sampler=sampler)
    await asyncio.sleep(1.0)
    placed = FleetWatch(state_.load(directory)).read()
    on_victim = {n for n, a in placed.items() if a.get("replica_id") == victim}
    killed = flooding.now()
    os.kill(pid, signal.SIGKILL)
    try:
        try:
            after, _ = await asyncio.to_thread(
                functools.partial(
                    cluster.wait_converged,
                    directory,
                    replicas=len(live) - 1,
                    timeout=RECOVERY_TIMEOUT,
                    dead=victim,
                    interval=0.25,
                )
            )
            took = flooding.now() - killed
        except RuntimeError as err:  # reported as such: agents missing, recovery inf
            print(f"  after the kill: {err}", file=sys.stderr)
            after = await asyncio.to_thread(cluster.collect, directory)
            took = float("inf")
        held_at_end = flood.holding()
    finally:
        await flood.stop()
        sampler.flood = None
    flood_window = [s.rss_kb for s in sampler.window(flooded, flooding.now())]
    placed = FleetWatch(state_.load(directory)).read()
    from_kill, failover = [], []
    missing = collateral = 0
    held_by: collections.Counter[str] = collections.Counter()
    for name, info in placed.items():
        records = [(lost, t) for lost, t in info.get("failovers", []) if lost >= killed - 0.5]
        if name not in on_victim:
            collateral += bool(records)
            continue
        held_by[info.get("replica_id") or "-"] += 1
        if not records:
            missing += 1
            continue
        done = max(lost + t for lost, t in records)
        from_kill.append(done - killed)
        failover.append(done - records[0][0])
    return Recovery(
        victim=victim,
        affected=len(on_victim),
        from_kill=from_kill,
        failover=failover,
        missing=missing,
        collateral=collateral,
        converged=took,
        leader_before=before["leader"],
        leader_after=after["leader"],
        held_by=dict(held_by),
        peak_kb=max(flood_window, default=0),
        held_at_end=held_at_end,
    )


# ----------------------------------------------------------------------------- report
def verdict(value: float, limit: float, unit: str, *, fmt: str = ".2f") -> str:
    ratio = f"{value / limit:5.2f}x" if limit else "   - "
    good = value <= limit
    return f"{value:>9{fmt}} {unit:<4}<= {limit:<7g}{unit:<4}{ratio}  {'ok' if good else 'MISSED'}"


def row(what: str, text: str) -> str:
    return f"  {what:<58}{text}"


def describe_config() -> list[str]:
    options = dict(agentserver.grpc_server_options(codec.DEFAULT_MAX_MESSAGE_BYTES))
    keys = (
        "grpc.server_handshake_timeout_ms",
        "grpc.max_connection_idle_ms",
        "grpc.keepalive_time_ms",
        "grpc.keepalive_timeout_ms",
    )
    shown = ", ".join(f"{k.removeprefix('grpc.')}={options.get(k, 'unset')}" for k in keys)
    return [
        f"agent port (principal/_agentserver.py grpc_server_options): {shown}",
        f"metrics port (proto/_exposition.py): MAX_CONNECTIONS={exposition.MAX_CONNECTIONS}, "
        f"REQUEST_TIMEOUT={exposition.REQUEST_TIMEOUT:g} s (a deadline for the whole request; the oldest waiting connection is shed for a new one)",
    ]


def describe_kind(flood: flooding.Flood, kind: str, *, timeout: float, end: float) -> str:
    first = flood.first_generation(kind)
    failed = {reason: n for (k, reason), n in flood.failed.items() if k == kind}
    if not first:
        return f"{kind}: none opened ({sum(failed.values())} failed to open: {failed})"
    lives = flooding.lifetimes(first)
    held_to_end = sum(1 for c in first if c.closed is None)
    reopened = sum(1 for c in flood.conns if c.kind == kind and c.generation > 0)
    return (
        f"{kind}: {len(first)} opened; closed by the replica within 1 s {flooding.closed_within(first, 1.0)}, "
        f"within {timeout - 1:g} s {flooding.closed_within(first, timeout - 1)}, within {timeout + 2:g} s "
        f"{flooding.closed_within(first, timeout + 2)}, held to the end ({end:.0f} s) {held_to_end}; "
        f"lifetime p50 {flooding.percentile(lives, 0.5):.2f} s, max {max(lives, default=float('nan')):.2f} s"
        f"; reopened {reopened}, failed to open {sum(failed.values())}"
        + (f" {failed}" if failed else "")
    )


def scrape_summary(scrapes: Sequence[tuple[float, float | None]]) -> tuple[int, int, float, float]:
    """(answered within the timeout, total, p50 s, max s of those answered)."""
    answered = [s for _, s in scrapes if s is not None and s <= SCRAPE_TIMEOUT]
    return (
        len(answered),
        len(scrapes),
        flooding.percentile(answered, 0.5),
        max(answered, default=float("nan")),
    )


def dial_line(got: Dialled) -> str:
    took = list(got.took.values())
    errors: collections.Counter[str] = collections.Counter()
    for per in got.errors.values():
        errors.update(per)
    where = collections.Counter(got.replica.values())
    return (
        f"{len(took)}/{len(took) + len(got.missing)} served; p50 {flooding.percentile(took, 0.5):.2f} s, "
        f"max {max(took, default=float('nan')):.2f} s; failed attempts {dict(errors) or 0}; "
        f"on {dict(sorted(where.items()))}"
    )


# ----------------------------------------------------------------------------- main
async def campaign(
    args: argparse.Namespace, directory: Path, tmp: Path, children: set[int]
) -> None:
    started = flooding.now()
    state = state_.load(directory)
    status = await asyncio.to_thread(cluster.collect, directory)
    target = status["leader"]
    if target is None:
        raise RuntimeError("no leader")
    record = next(r for r in state.replicas if r.id == target)
    assert record.process is not None
    pid = record.process.pid
    port = int(record.endpoint.rpartition(":")[2])
    endpoints = [record.endpoint] + [r.endpoint for r in state.replicas if r.id != target]
    timeout = agentserver.HANDSHAKE_TIMEOUT_MS / 1000
    hold = timeout + args.extra_hold

    def log(what: str) -> None:
        print(f"  {what} ({flooding.now() - started:.0f}s)", file=sys.stderr)

    pki_dir = Path(state.pki)
    pki.issue_agent(pki_dir, name=ATTACKER)
    ca = pki_dir / "agents" / ATTACKER / "ca.crt"
    contexts = {
        "cert": flooding.tls_context(pki_dir / "agents" / ATTACKER, ca),
        "none": flooding.tls_context(None, ca),
    }
    calm_names = [f"calm-{i:02d}" for i in range(1, args.new_agents + 1)]
    late_names = [f"late-{i:02d}" for i in range(1, args.new_agents + 1)]
    await prepare_agents(state, [*calm_names, *late_names])

    sampler = flooding.Sampler(pid)
    sampler.start()
    watch = FleetWatch(state)
    try:
        calm = await dial(
            tmp,
            state,
            calm_names,
            endpoints=endpoints,
            patience=SERVED_WITHIN * 3,
            children=children,
        )
        log(f"calm dial: {dial_line(calm)}")

        metrics = await metrics_phase(
            record.metrics, idle=args.metrics_idle, trickle=args.trickle, window=args.metrics_window
        )
        log("metrics port floods done")

        await asyncio.sleep(2.0)
        quiet = flooding.now()
        await asyncio.sleep(2.0)
        before_kb = sampler.median_rss(quiet, flooding.now())
        before_fds, before_threads = sampler.samples[-1].fds, sampler.samples[-1].threads
        placed = watch.read()
        on_target = {n for n, a in placed.items() if a.get("replica_id") == target}
        watch.start()
        flood_started = flooding.now()
        flood = await open_flood(port, contexts, tcp=args.tcp, tls=args.tls, sampler=sampler)
        opened = flooding.now()
        log(f"flood open: {dict(flood.held)} held after {opened - flood_started:.1f}s")
        await asyncio.sleep(1.0)
        during = await dial(
            tmp,
            state,
            late_names,
            endpoints=endpoints,
            patience=max(1.0, hold - 2.0),
            children=children,
        )
        log(f"dial during the flood: {dial_line(during)}")
        await asyncio.sleep(max(0.0, opened + hold - flooding.now()))
        at_close = sampler.samples[-1]
        await flood.stop()
        sampler.flood = None
        stopped = flooding.now()
        await watch.stop()
        log("flood closed; watching RSS")
        await asyncio.sleep(args.after)
        after = sampler.samples[-1]

        recovery = await kill_phase(
            directory,
            target=target,
            port=port,
            contexts=contexts,
            tcp=args.tcp,
            tls=args.tls,
            sampler=sampler,
        )
        log(f"kill: {recovery.victim} -> {recovery.affected} agents resynced")
    finally:
        await sampler.stop()
        await watch.stop()

    window = sampler.window(flood_started, stopped)
    peak = max(window, key=lambda s: s.rss_kb)
    # holding, before the replica closes the first of them and the attacker reopens them
    held_kb = sampler.median_rss(opened + 0.5, flood_started + timeout - 0.5)
    most_held = max(s.held for s in window)
    max_fds, max_threads = max(s.fds for s in window), max(s.threads for s in window)
    report(
        args,
        target=target,
        pid=pid,
        timeout=timeout,
        hold=hold,
        calm=calm,
        during=during,
        metrics=metrics,
        flood=flood,
        flood_span=(flood_started, opened, stopped),
        rss=(before_kb, held_kb, peak, at_close, after),
        fds=(before_fds, max_fds),
        threads=(before_threads, max_threads),
        most_held=most_held,
        timeline=sampler.window(flood_started, after.t),
        lost=watch.lost,
        on_target=on_target,
        agents=len(placed),
        recovery=recovery,
    )


def report(
    args: argparse.Namespace,
    *,
    target: str,
    pid: int,
    timeout: float,
    hold: float,
    calm: Dialled,
    during: Dialled,
    metrics: tuple[list[float | None], list[Attack]],
    flood: flooding.Flood,
    flood_span: tuple[float, float, float],
    rss: tuple[float, float, flooding.Sample, flooding.Sample, flooding.Sample],
    fds: tuple[int, int],
    threads: tuple[int, int],
    most_held: int,
    timeline: list[flooding.Sample],
    lost: set[str],
    on_target: set[str],
    agents: int,
    recovery: Recovery,
) -> None:
    flood_started, opened, stopped = flood_span
    before_kb, held_kb, peak, at_close, after = rss
    print(
        f"Mooring hardening: 3 replicas, {agents} connected agents (one fleet process); real "
        f"etcd + Redis, mTLS; all on loopback; {os.cpu_count()} CPUs shared by every process "
        f"and this attacker"
    )
    print(
        f"flooded replica {target} (the leader, pid {pid}, max open files {flooding.max_open_files(pid)}); "
        f"{args.tcp} plain TCP + {args.tls} TLS ({args.tls // 2} with a certificate, "
        f"{args.tls - args.tls // 2} without) held {hold:g} s, reopened when closed"
    )
    for line in describe_config():
        print(line)
    print()
    print(
        f"agent port flood, opened in {opened - flood_started:.1f} s, closed after {stopped - opened:.1f} s:"
    )
    for kind in ("tcp", "tls+cert", "tls-no-cert"):
        print(f"  {describe_kind(flood, kind, timeout=timeout, end=stopped - flood_started)}")
    print(
        f"  replica RSS: before {before_kb / 1024:.1f} MB, holding (median until the first "
        f"timeouts) {held_kb / 1024:.1f} MB, peak {peak.rss_kb / 1024:.1f} MB "
        f"(holding {peak.held} at {peak.t - flood_started:.1f} s), at close "
        f"{at_close.rss_kb / 1024:.1f} MB, {after.t - stopped:.0f} s after {after.rss_kb / 1024:.1f} MB"
    )
    print(
        f"  replica fds: before {fds[0]}, peak {fds[1]} (attacker holding at most {most_held}), "
        f"{after.t - stopped:.0f} s after {after.fds}; threads: before {threads[0]}, peak "
        f"{threads[1]}, {after.t - stopped:.0f} s after {after.threads}"
    )
    step = max(1, round(TIMELINE_EVERY / flooding.SAMPLE_PERIOD))
    shown = [s for s in timeline if s.t >= flood_started][::step]
    print(
        f"  timeline, every {TIMELINE_EVERY:g} s from the flood's start (closed at "
        f"{stopped - flood_started:.0f} s), RSS MB/held: "
        + " ".join(f"{s.rss_kb / 1024:.0f}/{s.held}" for s in shown)
    )
    print(f"  new agents, no flood:     {dial_line(calm)}")
    print(f"  new agents, during flood: {dial_line(during)}")
    lost_on = len(lost & on_target)
    print(
        f"  connected agents that lost their session: {len(lost)} of {agents} "
        f"({lost_on} of the {len(on_target)} on {target})"
        + (f": {', '.join(sorted(lost)[:8])}" if lost else "")
    )
    print()
    calm_scrapes, attacks = metrics
    calm_n, calm_total, calm_p50, calm_max = scrape_summary([(0.0, s) for s in calm_scrapes])
    timeout_m = exposition.REQUEST_TIMEOUT
    print(f"metrics port (--metrics of {target}), a scrape every {SCRAPE_PERIOD:g} s:")
    print(
        f"  alone: {calm_n}/{calm_total} answered, p50 {calm_p50 * 1000:.1f} ms, "
        f"max {calm_max * 1000:.1f} ms"
    )
    for a in attacks:
        n, total, p50, worst_s = scrape_summary(a.scrapes)
        first = a.flood.first_generation("idle")
        answered = [t - a.opened for t, s in a.scrapes if s is not None and s <= SCRAPE_TIMEOUT]
        span = a.scrapes[-1][0] - a.opened if a.scrapes else 0.0
        print(
            f"  {a.what}, {span:.0f} s: {n}/{total} answered within {SCRAPE_TIMEOUT:g} s"
            + (
                f" (first at {answered[0]:.1f} s; p50 {p50 * 1000:.1f} ms, max {worst_s * 1000:.1f} ms)"
                if answered
                else ""
            )
            + f"; of the first {len(first)} connections the server closed {flooding.closed_within(first, 0.5)} "
            f"at once, {flooding.closed_within(first, timeout_m + 1) - flooding.closed_within(first, 0.5)} after "
            f"<= {timeout_m + 1:g} s, {sum(1 for c in first if c.closed is None)} never"
            f"; {len(a.flood.conns)} connections in all"
        )
    print()
    held_by = ", ".join(f"{r}={n}" for r, n in sorted(recovery.held_by.items()))
    print(
        f"SIGKILL of {recovery.victim} during a second flood on {target}: {recovery.affected} "
        f"agents; kill -> resynced p50 {flooding.percentile(recovery.from_kill, 0.5):.2f} s, p99 "
        f"{flooding.percentile(recovery.from_kill, 0.99):.2f} s, max "
        f"{max(recovery.from_kill, default=float('nan')):.2f} s (loss -> resynced p99 "
        f"{flooding.percentile(recovery.failover, 0.99):.2f} s); missing {recovery.missing}, other agents "
        f"that lost a session {recovery.collateral}; now on {held_by}; all on their owner "
        f"{recovery.converged:.1f} s after the kill; leader {recovery.leader_before} -> "
        f"{recovery.leader_after}; the flood held {recovery.held_at_end} connections then; "
        f"replica RSS peak {recovery.peak_kb / 1024:.1f} MB"
    )
    print()
    growth_kb = peak.rss_kb - before_kb
    per_conn = growth_kb / most_held if most_held else float("nan")
    retained = (after.rss_kb - before_kb) / growth_kb if growth_kb > 0 else 0.0
    holders = [c for c in flood.conns if c.kind in ("tcp", "tls+cert") and c.generation == 0]
    closed_in_time = flooding.closed_within(holders, timeout + 2)
    served = list(during.took.values())
    worst = max(served, default=float("inf")) if not during.missing else float("inf")
    print("summary (figure, limit, ratio figure / limit):")
    print(
        row(
            "RSS growth per held connection, holding",
            verdict(
                (held_kb - before_kb) / max(most_held, 1), RSS_PER_CONNECTION_KB, "KB", fmt=".1f"
            ),
        )
    )
    print(
        row(
            "RSS growth per held connection, peak (after reopening)",
            verdict(per_conn, RSS_PER_CONNECTION_KB, "KB", fmt=".1f"),
        )
    )
    print(
        row(
            f"RSS kept {args.after:g} s after the flood, share of its growth",
            verdict(retained * 100, RETAINED_FRACTION * 100, "%", fmt=".0f"),
        )
    )
    print(
        row(
            "held connections not closed within handshake timeout + 2 s",
            verdict(len(holders) - closed_in_time, 0, "", fmt="d"),
        )
    )
    print(row("slowest new agent served during the flood", verdict(worst, SERVED_WITHIN, "s")))
    print(
        row(
            "  same, no flood (peer, same run)",
            f"{max(calm.took.values(), default=float('nan')):>9.2f} s    "
            f"flood / calm {worst / max(calm.took.values(), default=float('nan')):.2f}x",
        )
    )
    print(
        row(
            "connected agents that lost their session in the flood",
            verdict(len(lost), 0, "", fmt="d"),
        )
    )
    for a, label in zip(attacks, ("idle, opened once", "idle, reopened", "trickle"), strict=True):
        n, total, _, _ = scrape_summary(a.scrapes)
        print(
            row(
                f"/metrics scrapes not answered in {SCRAPE_TIMEOUT:g} s, {label}",
                verdict(total - n, 0, "", fmt="d") + f"  (of {total})",
            )
        )
    homed = recovery.from_kill + [float("inf")] * recovery.missing  # never served: infinite
    print(
        row(
            "recovery p99, kill -> resynced elsewhere",
            verdict(flooding.percentile(homed, 0.99), RECOVERY_P99, "s"),
        )
    )
    print(
        row(
            "recovery max, kill -> resynced elsewhere",
            verdict(max(homed, default=float("inf")), RECOVERY_MAX, "s"),
        )
    )


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def bench(args: argparse.Namespace, directory: Path) -> None:
    """The cluster up in `directory`, converged, then the campaign; the attacker's and
    dialers' processes (their groups) are killed on the way out."""
    children: set[int] = set()
    started = flooding.now()
    try:
        if args.replica_nofile:  # the cluster starts with this soft limit; we keep ours
            resource.setrlimit(
                resource.RLIMIT_NOFILE,
                (args.replica_nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
            )
        launcher.up(
            launcher.UpOptions(directory=directory, replicas=3, agents=args.agents, detach=True),
            out=io.StringIO(),
        )
        flooding.raise_nofile()
        cluster.wait_converged(directory, replicas=3, timeout=SETTLE_TIMEOUT, interval=0.25)
        print(f"  cluster up and converged ({flooding.now() - started:.0f}s)", file=sys.stderr)
        (directory / "bench").mkdir()
        asyncio.run(campaign(args, directory, directory / "bench", children))
        print(f"  done in {flooding.now() - started:.0f}s", file=sys.stderr)
    finally:
        for child in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child, signal.SIGKILL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller numbers, under a minute")
    parser.add_argument("--agents", type=int, help=f"connected agents (default {FULL['agents']})")
    parser.add_argument("--tcp", type=int, help=f"plain TCP connections (default {FULL['tcp']})")
    parser.add_argument(
        "--tls", type=int, help=f"TLS connections, half with a certificate (default {FULL['tls']})"
    )
    parser.add_argument(
        "--new-agents",
        type=int,
        help=f"agents dialling calm and during the flood (default {FULL['new_agents']})",
    )
    parser.add_argument(
        "--metrics-idle",
        type=int,
        help=f"idle connections to --metrics (default {FULL['metrics_idle']})",
    )
    parser.add_argument(
        "--trickle",
        type=int,
        help=f"slowloris connections to --metrics (default {FULL['trickle']})",
    )
    parser.add_argument("--metrics-window", type=float, help="seconds of each metrics flood")
    parser.add_argument(
        "--extra-hold", type=float, help="seconds the flood is held beyond the handshake timeout"
    )
    parser.add_argument(
        "--after",
        type=float,
        help=f"seconds RSS is watched after the flood (default {FULL['after']:g})",
    )
    parser.add_argument(
        "--replica-nofile",
        type=int,
        help="soft RLIMIT_NOFILE the cluster starts with (default: this process's hard limit; "
        "1024 is systemd's default soft limit)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the state dir (logs)")
    args = resolve(parser.parse_args())
    limit = flooding.raise_nofile()
    needed = args.tcp + args.tls + args.metrics_idle + 256
    if limit < needed:
        print(f"RLIMIT_NOFILE {limit} < {needed} needed", file=sys.stderr)
        return 1
    bench_ = functools.partial(bench, args)
    return cluster.run(bench_, prefix="mooring-bench-hardening-", keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
