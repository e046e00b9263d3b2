"""Sync benchmark: store-to-agent change throughput and latency through one principal.

Run: `python bench/bench_sync.py` (about a minute on 2 cores). Prints a table; it is not a test.

Setup, all real and on loopback, all in one temp dir that is removed at the end:
  etcd      one real `etcd` member (`mooring._services.EtcdCluster`), data on disk
  principal `python -m mooring principal serve` in its own process, with --metrics
  fleet     100 real `agent.Agent` instances (managed mode) in ONE other process
            (`bench/_fleet.py fleet`), each with its own SQLite file and registry
  writer    this process: `principal.HubStore.apply_desired` (on etcd), one task per
            agent writing its 10 Applications one after another (100 writers at once)

Rounds (each 100 agents x 10 Applications = 1,000 changes, started once every agent is
welcomed and resynced): `create` writes 1,000 new Applications, `update` changes all of
them. Each spec carries `mooring.bench/written-at` (time.time_ns() just before the
apply_desired call); the fleet records the wall-clock time right after the agent's
SQLite write. Both processes share the host clock.
  thr/s     changes applied on agents / (last apply - first write)
  p50/p99   per change: written-at -> applied on the agent
  write/s   the writer alone: changes / (first write - last apply_desired return)
  call ms   p50 duration of one apply_desired call (3 etcd round trips)

Peer, same run: a bare grpc.aio bidirectional-stream echo (`bench/_fleet.py echo`, its
own process) with the principal's certificate, client certificates required and the
principal's server channel arguments; 100 clients in this process, each on its own
channel with one agent's certificate and the agent's channel arguments, each writing 10
messages of the serialized size of one of our ResourceEvent envelopes (pipelined) and
reading the echoes. thr/s = 1,000 / (first send - last echo); p50/p99 = round trip.
Median of 5 bursts by throughput. Ratios are ours / peer: throughput below 1 and
latency above 1 are the price of the store, the watch and the agent's apply.

CPU: seconds of CPU each process used during each run (from /proc), so a saturated
process (about 1 s per wall second per core) is visible; "idle, connected" is the same
over 2 s with every agent connected and nothing to sync.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import _replica as replica  # noqa: E402  (bench/, this script's folder)
import _running as running  # noqa: E402

import principal  # noqa: E402
from agent import _dialing as dialing  # noqa: E402
from agent import _settings as agent_settings  # noqa: E402
from mooring import _services as services  # noqa: E402
from principal import _pki as pki  # noqa: E402
from principal import _sync as sync_  # noqa: E402
from proto import _credentials as credentials  # noqa: E402
from proto import exposition, pb  # noqa: E402

FLEET = Path(__file__).resolve().parent / "_fleet.py"
WRITTEN_AT = "mooring.bench/written-at"
ROUND = "mooring.bench/round"
ECHO_METHOD = "/mooring.bench.Echo/Echo"
PREFIX = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
IDLE_SECONDS = 2.0


# ----------------------------------------------------------------------------- processes
def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    out = {name: cpu_seconds(pid) for name, pid in pids.items()}
    out["bench"] = time.process_time()
    return out


def event_counts(port: int) -> dict[str, float]:
    """The replica's counts so far: events sent, acks, and seconds spent waiting for them."""
    samples = exposition.scrape(f"127.0.0.1:{port}", timeout=2)
    if samples is None:
        raise RuntimeError(f"the replica's /metrics on port {port} does not answer")
    return {
        "sent": samples.value("mooring_events_sent_total", type="event") or 0.0,
        "acked": samples.value("mooring_event_ack_seconds_count") or 0.0,
        "ack_seconds": samples.value("mooring_event_ack_seconds_sum") or 0.0,
    }


# ----------------------------------------------------------------------------- workload
def app_doc(name: str, *, round_name: str, revision: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "annotations": {WRITTEN_AT: str(time.time_ns()), ROUND: round_name},
        },
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example/platform/apps.git",
                "path": f"apps/{name}",
                "targetRevision": revision,
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
            "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
        },
    }


@dataclasses.dataclass
class Result:
    label: str
    changes: int
    applied: int
    throughput: float  # per second
    p50: float  # milliseconds
    p99: float
    worst: float
    write_rate: float | None = None  # per second
    call_p50: float | None = None  # milliseconds
    sessions: int | None = None
    cpu: dict[str, float] = dataclasses.field(default_factory=dict)
    wall: float = 0.0
    extra: dict[str, float] = dataclasses.field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def run_round(
    desired: principal.HubStore,
    fleet: running.Child,
    *,
    round_name: str,
    agents: Sequence[str],
    apps: int,
    revision: str,
    pids: dict[str, int],
    metrics_port: int,
    label: str | None = None,
    writers: int = 1,
) -> Result:
    """One round: every agent's `apps` Applications written, `writers` tasks per agent
    (each writing its share one after another), until the fleet applied them all."""
    expect = len(agents) * apps
    await fleet.send({"cmd": "collect", "round": round_name, "expect": expect, "timeout": 60})
    before, cpu0 = event_counts(metrics_port), cpu_snapshot(pids)
    calls: list[float] = []
    returned: dict[tuple[str, str], int] = {}

    async def writer(agent: str, share: range) -> None:
        for i in share:
            name = f"app-{i:02d}"
            doc = app_doc(name, round_name=round_name, revision=revision)
            t0 = time.perf_counter()
            _, changed = await desired.apply_desired(agent, doc)
            calls.append(time.perf_counter() - t0)
            returned[(agent, name)] = time.time_ns()
            assert changed, f"{agent}/{name} unchanged in round {round_name}"

    wall0 = time.monotonic()
    first = time.time_ns()
    await asyncio.gather(
        *(writer(agent, range(w, apps, writers)) for agent in agents for w in range(writers))
    )
    written = time.time_ns()
    reply = await fleet.line(within=90)
    wall = time.monotonic() - wall0
    counts, cpu1 = event_counts(metrics_port), cpu_snapshot(pids)
    records = reply["records"]
    latencies = [(applied - stamp) / 1e6 for _, _, stamp, applied in records]
    after = [(ap - returned[(a, n)]) / 1e6 for a, n, _, ap in records if (a, n) in returned]
    last = max((applied for *_, applied in records), default=written)
    sent, acked, ack_sum = (counts[k] - before[k] for k in ("sent", "acked", "ack_seconds"))
    return Result(
        label=label or f"mooring {round_name}",
        changes=expect,
        applied=len(records),
        throughput=len(records) / ((last - first) / 1e9),
        p50=percentile(latencies, 0.50),
        p99=percentile(latencies, 0.99),
        worst=max(latencies, default=float("nan")),
        write_rate=expect / ((written - first) / 1e9),
        call_p50=percentile(calls, 0.50) * 1000,
        sessions=int(reply["sessions"]),
        cpu={name: cpu1[name] - cpu0[name] for name in cpu0},
        wall=wall,
        extra={
            "events_sent": sent,
            "acks": acked,
            "ack_mean_ms": (ack_sum / acked * 1000) if acked else float("nan"),
            "after_p50": percentile(after, 0.50),
            "after_p99": percentile(after, 0.99),
        },
    )


# ----------------------------------------------------------------------------- peer
async def peer_burst(
    calls: Sequence[Any], payload: bytes, *, per_stream: int
) -> tuple[float, list[float]]:
    """One timed burst over already-open streams: (throughput/s, round trips in ms)."""
    rtts: list[float] = []
    start = asyncio.Event()
    begin = time.perf_counter_ns()
    ends: list[int] = []

    async def one(call: Any) -> None:
        sent: list[int] = []

        async def write() -> None:
            for _ in range(per_stream):
                sent.append(time.perf_counter_ns())
                await call.write(payload)

        await start.wait()
        writing = asyncio.create_task(write())
        for i in range(per_stream):
            echoed = await call.read()
            now = time.perf_counter_ns()
            assert len(echoed) == len(payload)
            rtts.append((now - sent[i]) / 1e6)
        ends.append(time.perf_counter_ns())
        await writing

    tasks = [asyncio.create_task(one(call)) for call in calls]
    begin = time.perf_counter_ns()
    start.set()
    await asyncio.gather(*tasks)
    return len(calls) * per_stream / ((max(ends) - begin) / 1e9), rtts


async def run_peer(
    *,
    port: int,
    tls_dirs: Sequence[Path],
    payload: bytes,
    per_stream: int,
    repeats: int,
    pids: dict[str, int],
) -> Result:
    options = dialing.channel_options(
        agent_settings.AgentSettings(
            name="peer",
            mode="managed",
            endpoints=(f"127.0.0.1:{port}",),
            tls_dir=tls_dirs[0],
            state=Path("unused.db"),
        )
    )
    channels = [
        grpc.aio.secure_channel(
            f"127.0.0.1:{port}", credentials.channel_credentials(tls_dir), options=options
        )
        for tls_dir in tls_dirs
    ]
    try:
        calls = [channel.stream_stream(ECHO_METHOD)() for channel in channels]

        async def warm(call: Any) -> None:  # connect and open the stream, as our agents are
            await call.write(payload)
            await call.read()

        await asyncio.wait_for(asyncio.gather(*(warm(c) for c in calls)), 30)
        runs = []
        for _ in range(repeats):
            cpu0, wall0 = cpu_snapshot(pids), time.monotonic()
            throughput, rtts = await peer_burst(calls, payload, per_stream=per_stream)
            cpu1, wall = cpu_snapshot(pids), time.monotonic() - wall0
            runs.append((throughput, rtts, {k: cpu1[k] - cpu0[k] for k in cpu0}, wall))
        for call in calls:
            await call.done_writing()
        throughput, rtts, cpu, wall = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
        total = len(calls) * per_stream
        return Result(
            label="peer grpc echo",
            changes=total,
            applied=len(rtts),
            throughput=throughput,
            p50=percentile(rtts, 0.50),
            p99=percentile(rtts, 0.99),
            worst=max(rtts),
            cpu=cpu,
            wall=wall,
        )
    finally:
        for channel in channels:
            await channel.close()


# ----------------------------------------------------------------------------- report
def print_results(rows: Sequence[Result]) -> None:
    """The main table: one line per run."""
    head = (
        f"{'run':<17}{'changes':>8}{'applied':>8}{'thr/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'max ms':>9}{'write/s':>9}{'call ms':>9}{'sessions':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        write = f"{r.write_rate:>9.0f}" if r.write_rate is not None else f"{'-':>9}"
        call = f"{r.call_p50:>9.2f}" if r.call_p50 is not None else f"{'-':>9}"
        sessions = f"{r.sessions:>9d}" if r.sessions is not None else f"{'-':>9}"
        print(
            f"{r.label:<17}{r.changes:>8d}{r.applied:>8d}{r.throughput:>9.0f}{r.p50:>9.1f}"
            f"{r.p99:>9.1f}{r.worst:>9.1f}{write}{call}{sessions}"
        )


def print_cpu(rows: Sequence[Result], *, idle: Mapping[str, float] | None = None) -> None:
    """CPU seconds of every process during each run (and while idle, when given)."""
    names = sorted({name for r in rows for name in r.cpu})
    print(f"{'CPU s during run':<17}{'wall s':>8}" + "".join(f"{n:>11}" for n in names))
    if idle is not None:
        print(
            f"{'idle, connected':<17}{IDLE_SECONDS:>8.2f}"
            + "".join(f"{idle[n]:>11.2f}" if n in idle else f"{'-':>11}" for n in names)
        )
    for r in rows:
        print(
            f"{r.label:<17}{r.wall:>8.2f}"
            + "".join(f"{r.cpu[n]:>11.2f}" if n in r.cpu else f"{'-':>11}" for n in names)
        )


def print_events(results: Sequence[Result]) -> None:
    """Per Mooring run: what the principal's metrics say it sent, and the latency after
    the writer's call returned."""
    for r in results:
        print(
            f"{r.label}: principal sent {r.extra['events_sent']:.0f} events, "
            f"{r.extra['acks']:.0f} acked, mean send->ack {r.extra['ack_mean_ms']:.1f} ms; "
            f"apply_desired return -> applied p50 {r.extra['after_p50']:.1f} ms, "
            f"p99 {r.extra['after_p99']:.1f} ms"
        )


def report(
    results: list[Result],
    peer: Result,
    *,
    agents: int,
    apps: int,
    size: int,
    connect: float,
    idle: dict[str, float],
) -> None:
    print(
        f"Mooring sync: {agents} agents x {apps} Applications (managed) through ONE principal, "
        f"real etcd, mTLS; {os.cpu_count()} CPUs"
    )
    print(
        f"envelope: one ResourceEvent = {size} bytes serialized; fleet connected and resynced "
        f"in {connect:.2f}s"
    )
    print()
    print_results([*results, peer])
    print()
    print(f"{'ratio (ours/peer)':<17}{'thr':>9}{'p50':>9}{'p99':>9}")
    for r in results:
        print(
            f"{r.label:<17}{r.throughput / peer.throughput:>8.3f}x{r.p50 / peer.p50:>8.1f}x"
            f"{r.p99 / peer.p99:>8.1f}x"
        )
    print()
    print_cpu([*results, peer], idle=idle)
    print()
    print_events(results)


# ----------------------------------------------------------------------------- main
async def start_principal(
    tmp: Path,
    *,
    env: Mapping[str, str] | None = None,
    log: str = "principal.log",
    **fields: Any,
) -> tuple[running.Child, int, int]:
    """`mooring principal serve` as p1 (`_replica.serve_argv`, `fields` its settings) on
    free ports, once it listens for agents and for /metrics; with those two ports."""
    port, metrics_port = services.free_port(), services.free_port()
    argv = replica.serve_argv(port=port, metrics_port=metrics_port, **fields)
    child = await running.spawn("principal", argv, log=tmp / log, env=env)
    try:
        await asyncio.to_thread(services.wait_tcp, "127.0.0.1", port, timeout=20)
        await asyncio.to_thread(services.wait_tcp, "127.0.0.1", metrics_port, timeout=20)
    except BaseException:
        child.kill()
        raise
    return child, port, metrics_port


async def start_fleet(
    tmp: Path,
    *,
    pki_dir: Path,
    port: int,
    agents: int,
    prefix: str = PREFIX,
    state_dir: Path,
    log: str = "fleet.log",
) -> running.Child:
    """`bench/_fleet.py fleet` with `agents` agents PREFIX-000..., dialling 127.0.0.1:port."""
    await asyncio.to_thread(state_dir.mkdir)
    return await running.spawn(
        "fleet",
        [
            str(FLEET),
            "fleet",
            "--pki",
            str(pki_dir),
            "--endpoint",
            f"127.0.0.1:{port}",
            "--agents",
            str(agents),
            "--prefix",
            prefix,
            "--state-dir",
            str(state_dir),
        ],
        log=tmp / log,
        pipes=True,
    )


async def stop_fleet(fleet: running.Child) -> None:
    """Ask the fleet to stop its agents and exit; kill it if it does not."""
    await fleet.send({"cmd": "stop"})
    with contextlib.suppress(TimeoutError, RuntimeError):
        await fleet.line(within=15)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(fleet.proc.wait(), 10)
    await fleet.stop()


async def bench(args: argparse.Namespace, tmp: Path, children: list[running.Child]) -> None:
    cluster = services.EtcdCluster(tmp / "etcd")
    try:
        await asyncio.to_thread(cluster.start)
        etcd_pid = cluster.members[0].proc.pid  # type: ignore[union-attr]

        pki_dir = tmp / "pki"
        pki.init_ca(pki_dir)
        principal_tls = pki.issue_principal(pki_dir, name="p1", sans=["localhost", "127.0.0.1"])
        names = [f"{PREFIX}-{i:03d}" for i in range(args.agents)]
        agent_tls = [pki.issue_agent(pki_dir, name=name) for name in names]

        server, port, metrics_port = await start_principal(
            tmp, tls_dir=principal_tls, coordination=cluster.url
        )
        children.append(server)
        fleet = await start_fleet(
            tmp, pki_dir=pki_dir, port=port, agents=args.agents, state_dir=tmp / "fleet"
        )
        children.append(fleet)
        ready = await fleet.line(within=70)
        pids = {"principal": server.pid, "fleet": fleet.pid, "etcd": etcd_pid}
        cpu0 = cpu_snapshot(pids)
        await asyncio.sleep(IDLE_SECONDS)  # baseline: connected, nothing to sync
        cpu1 = cpu_snapshot(pids)
        idle = {name: cpu1[name] - cpu0[name] for name in cpu0}

        desired = principal.open_hub_store(cluster.url, timeout=10.0)
        await desired.connect()
        try:
            results = []
            for round_name, revision in (("create", "v1"), ("update", "v2")):
                results.append(
                    await run_round(
                        desired,
                        fleet,
                        round_name=round_name,
                        agents=names,
                        apps=args.apps,
                        revision=revision,
                        pids=pids,
                        metrics_port=metrics_port,
                    )
                )
            sample = await desired.get_resource(
                names[-1], "Application", f"app-{args.apps - 1:02d}"
            )
            assert sample is not None
        finally:
            await desired.close()
        envelope = pb.Envelope(seq=args.apps + 2, event=sync_.upsert_event(sample))
        payload = envelope.SerializeToString()

        await stop_fleet(fleet)
        await server.stop()

        echo_port = services.free_port()
        echo = await running.spawn(
            "echo",
            [str(FLEET), "echo", "--tls-dir", str(principal_tls), "--port", str(echo_port)],
            log=tmp / "echo.log",
            pipes=True,
        )
        children.append(echo)
        await echo.line(within=20)
        peer = await run_peer(
            port=echo_port,
            tls_dirs=agent_tls,
            payload=payload,
            per_stream=args.apps,
            repeats=5,
            pids={"echo": echo.pid, "etcd": etcd_pid},
        )
        await echo.stop()
        report(
            results,
            peer,
            agents=args.agents,
            apps=args.apps,
            size=len(payload),
            connect=float(ready["connect_seconds"]),
            idle=idle,
        )
    finally:
        for child in children:  # before etcd, so nobody logs a vanished store
            child.kill()
        await asyncio.to_thread(cluster.stop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--apps", type=int, default=10, help="Applications per agent")
    parser.add_argument("--budget", type=float, default=170.0, help="seconds for the whole run")
    args = parser.parse_args()
    return running.run(
        functools.partial(bench, args), prefix="mooring-bench-sync-", budget=args.budget
    )


if __name__ == "__main__":
    sys.exit(main())
