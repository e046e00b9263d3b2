"""Memory benchmark: RSS of an agent process, per hosted agent, and per principal session.

Run: `python bench/bench_memory.py` (about 2 minutes on 2 cores). Prints a table; it is
not a test. RSS is VmRSS from /proc/PID/status, read after the process has been
connected and idle for SETTLE seconds.

Setup, all real and on loopback, in one temp dir removed at the end: one real etcd
member (`mooring._services.EtcdCluster`), one `mooring principal serve` (no Redis: one
replica), every agent with APPS Applications in the principal store (managed mode).
  agent process  one `mooring agent run` process, connected and resynced, idle
  floor          `python -c "import grpc, prometheus_client, cryptography"` idle: the
                 interpreter and libraries every agent process carries (the peer)
  fleet          `bench/_fleet.py fleet --agents N` (N in-process `agent.Agent`s) for N =
                 0, 100, 500, 1000, one process each; per-agent cost = least-squares slope
  principal      the same principal before any agent connected (0 sessions) and with each
                 fleet connected; per session = (RSS at 1,000 - RSS at 0) / 1,000, and the
                 marginal slope over 100..1,000 sessions
  session floor  what grpcio + mTLS alone costs per connection: `bench/_fleet.py echo`, a
                 bare grpc.aio server with the principal's TLS credentials and server
                 options and a generic stream-stream echo handler, before and with 1,000
                 client connections (`bench/_fleet.py echo-client`, another process, one agent
                 certificate and one channel each), each with one open stream that sent one
                 400-byte message; per connection = (RSS at 1,000 - RSS at 0) / 1,000.
                 The principal's figure is printed beside it as a ratio and as our own
                 overhead (principal - floor).
Targets (printed beside the figures with the ratio figure / target): one agent process
<= 60 MB; principal <= 50 KB per open session. The session target is below the floor of
grpcio + mTLS (about 90 KB per connection on grpcio 1.85, mostly fixed TLS buffers in
C-core), so it is MISSED whatever Mooring does; the overhead line is what we control.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import _replica as replica  # noqa: E402  (bench/, this script's folder)

from mooring import _launcher as launcher  # noqa: E402
from mooring import _services as services  # noqa: E402
from principal import _pki as pki  # noqa: E402
from proto import exposition  # noqa: E402
from tests._poll import wait_for  # noqa: E402

FLEET = Path(__file__).resolve().parent / "_fleet.py"
PREFIX = "mem"
APPS = 3
SETTLE = 3.0
"""Seconds a process stays connected and idle before its RSS is read."""
SCRAPE_TIMEOUT = 1.0
"""Seconds to wait for one /metrics answer."""
POLL = 0.1
"""Seconds between looks while waiting for sessions to open or close."""
FLEET_SIZES = (0, 100, 500, 1000)
AGENT_LIMIT_MB = 60.0
SESSION_LIMIT_KB = 50.0
HOST = "127.0.0.1"


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def sample(address: str, name: str) -> float | None:
    """The unlabelled `name` sample at ADDRESS's /metrics (None: no answer, or none)."""
    samples = exposition.scrape(address, timeout=SCRAPE_TIMEOUT)
    return None if samples is None else samples.value(name)


def spawn(argv: Sequence[str], *, log: Path, pipes: bool = False) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.PIPE if pipes else subprocess.DEVNULL,
            stdout=subprocess.PIPE if pipes else handle,
            stderr=handle,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def slope(points: Sequence[tuple[int, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx


def ok(value: float, limit: float) -> str:
    return f"{value / limit:5.2f}x  {'ok' if value <= limit else 'MISSED'}"


def bench(tmp: Path, children: list[subprocess.Popen[bytes]]) -> None:
    started = time.monotonic()
    cluster = services.EtcdCluster(tmp / "etcd")
    cluster.start()
    try:
        pki_dir = tmp / "pki"
        pki.init_ca(pki_dir)
        principal_tls = pki.issue_principal(pki_dir, name="p1", sans=[HOST, "localhost"])
        biggest = max(FLEET_SIZES)
        names = [f"{PREFIX}-{i:03d}" for i in range(biggest)]
        for name in [*names, "solo"]:
            pki.issue_agent(pki_dir, name=name)
        asyncio.run(
            launcher.seed_managed(
                cluster.url,
                [*names, "solo"],
                apps=[f"app-{i}" for i in range(APPS)],
                concurrency=16,
            )
        )

        port, mport = services.free_port(), services.free_port()
        principal = spawn(
            replica.serve_argv(
                port=port, metrics_port=mport, tls_dir=principal_tls, coordination=cluster.url
            ),
            log=tmp / "principal.log",
        )
        children.append(principal)
        services.wait_tcp(HOST, port, timeout=30)
        services.wait_tcp(HOST, mport, timeout=30)

        def sessions() -> float | None:
            return sample(f"{HOST}:{mport}", "mooring_sessions_open")

        def sessions_become(n: int, what: str, *, timeout: float) -> None:
            wait_for(
                sessions, until=lambda got: got == n, timeout=timeout, interval=POLL, what=what
            )

        time.sleep(SETTLE)
        principal_rss: list[tuple[int, int]] = [(0, rss_kb(principal.pid))]

        # the floor: interpreter + the libraries an agent imports, doing nothing
        floor = spawn(
            [
                "-c",
                "import grpc, prometheus_client, cryptography, sqlite3, yaml, time; time.sleep(60)",
            ],
            log=tmp / "floor.log",
        )
        children.append(floor)

        # one agent process
        agent_metrics = f"{HOST}:{services.free_port()}"
        agent = spawn(
            [
                "-m",
                "mooring",
                "--log-level",
                "WARNING",
                "agent",
                "run",
                "--name",
                "solo",
                "--mode",
                "managed",
                "--endpoints",
                f"{HOST}:{port}",
                "--tls-dir",
                str(pki_dir / "agents" / "solo"),
                "--state",
                str(tmp / "solo.db"),
                "--metrics",
                agent_metrics,
            ],
            log=tmp / "agent.log",
        )
        children.append(agent)
        wait_for(
            lambda: sample(agent_metrics, "mooring_agent_connected"),
            until=lambda connected: connected == 1.0,
            timeout=30,
            interval=POLL,
            what="the agent process connected",
        )
        time.sleep(SETTLE)
        agent_kb, floor_kb = rss_kb(agent.pid), rss_kb(floor.pid)
        stop(agent)
        stop(floor)
        sessions_become(0, "the agent's session closed", timeout=20)

        # fleets of N in-process agents
        fleet_rss: list[tuple[int, int]] = []
        for size in FLEET_SIZES:
            state_dir = tmp / f"fleet-{size}"
            state_dir.mkdir()
            fleet = spawn(
                [
                    str(FLEET),
                    "fleet",
                    "--pki",
                    str(pki_dir),
                    "--endpoint",
                    f"{HOST}:{port}",
                    "--agents",
                    str(size),
                    "--prefix",
                    PREFIX,
                    "--state-dir",
                    str(state_dir),
                    "--connect-timeout",
                    "90",
                ],
                log=tmp / f"fleet-{size}.log",
                pipes=True,
            )
            children.append(fleet)
            assert fleet.stdout is not None and fleet.stdin is not None
            ready = json.loads(fleet.stdout.readline() or b"{}")
            if not ready.get("ready"):
                raise RuntimeError(f"fleet of {size} did not start; see {tmp}/fleet-{size}.log")
            sessions_become(size, f"{size} sessions open", timeout=30)
            time.sleep(SETTLE)
            fleet_rss.append((size, rss_kb(fleet.pid)))
            if size:
                principal_rss.append((size, rss_kb(principal.pid)))
            print(
                f"  fleet {size}: fleet {fleet_rss[-1][1] / 1024:.1f} MB, principal "
                f"{rss_kb(principal.pid) / 1024:.1f} MB ({time.monotonic() - started:.0f}s)",
                file=sys.stderr,
            )
            with contextlib.suppress(OSError):
                fleet.stdin.write(b'{"cmd": "stop"}\n')
                fleet.stdin.flush()
            stop(fleet, grace=20)
            sessions_become(0, "the fleet's sessions closed", timeout=30)
        stop(principal)
        echo_rss = session_floor(tmp, pki_dir, principal_tls, children, connections=biggest)
        print(
            f"  session floor: echo server {echo_rss[0] / 1024:.1f} MB at 0, "
            f"{echo_rss[1] / 1024:.1f} MB at {biggest} ({time.monotonic() - started:.0f}s)",
            file=sys.stderr,
        )
        report(
            agent_kb=agent_kb,
            floor_kb=floor_kb,
            fleet_rss=fleet_rss,
            principal_rss=principal_rss,
            echo_rss=echo_rss,
        )
    finally:
        for child in children:
            stop(child, grace=5)
        cluster.stop()


def session_floor(
    tmp: Path,
    pki_dir: Path,
    server_tls: Path,
    children: list[subprocess.Popen[bytes]],
    *,
    connections: int,
) -> tuple[int, int]:
    """RSS of a bare grpc.aio mTLS echo server idle, then with `connections` open streams."""
    port = services.free_port()
    server = spawn(
        [str(FLEET), "echo", "--tls-dir", str(server_tls), "--port", str(port)],
        log=tmp / "echo-server.log",
        pipes=True,
    )
    children.append(server)
    try:
        assert server.stdout is not None
        if not json.loads(server.stdout.readline() or b"{}").get("ready"):
            raise RuntimeError(f"echo server did not start; see {tmp}/echo-server.log")
        time.sleep(SETTLE)
        idle = rss_kb(server.pid)
        client = spawn(
            [
                str(FLEET),
                "echo-client",
                "--pki",
                str(pki_dir),
                "--endpoint",
                f"{HOST}:{port}",
                "--connections",
                str(connections),
                "--prefix",
                PREFIX,
            ],
            log=tmp / "echo-client.log",
            pipes=True,
        )
        children.append(client)
        assert client.stdout is not None and client.stdin is not None
        ready = json.loads(client.stdout.readline() or b"{}")
        if ready.get("open") != connections:
            raise RuntimeError(f"echo client did not connect; see {tmp}/echo-client.log")
        time.sleep(SETTLE)
        loaded = rss_kb(server.pid)
        with contextlib.suppress(OSError):
            client.stdin.write(b'{"cmd": "stop"}\n')
            client.stdin.flush()
        stop(client)
        return idle, loaded
    finally:
        stop(server)


def report(
    *,
    agent_kb: int,
    floor_kb: int,
    fleet_rss: list[tuple[int, int]],
    principal_rss: list[tuple[int, int]],
    echo_rss: tuple[int, int],
) -> None:
    print(
        f"Mooring memory (VmRSS, connected and idle {SETTLE:g} s; managed agents with {APPS} "
        f"Applications each; one principal on real etcd, mTLS; {os.cpu_count()} CPUs)"
    )
    print()
    agent_mb, floor_mb = agent_kb / 1024, floor_kb / 1024
    print(f"{'what':<44}{'RSS':>10}{'target':>12}{'ratio':>14}")
    print(
        f"{'one `mooring agent run` process':<44}{agent_mb:>7.1f} MB{'<= 60 MB':>12}"
        f"  {ok(agent_mb, AGENT_LIMIT_MB)}"
    )
    print(
        f"{'  floor: python + grpc, prometheus, crypto':<44}{floor_mb:>7.1f} MB"
        f"{'':>12}  agent / floor {agent_mb / floor_mb:.2f}x"
    )
    print()
    print(f"{'agents in one fleet process':<30}" + "".join(f"{n:>10d}" for n, _ in fleet_rss))
    print(f"{'fleet RSS MB':<30}" + "".join(f"{kb / 1024:>10.1f}" for _, kb in fleet_rss))
    print(f"{'principal sessions':<30}" + "".join(f"{n:>10d}" for n, _ in principal_rss))
    print(f"{'principal RSS MB':<30}" + "".join(f"{kb / 1024:>10.1f}" for _, kb in principal_rss))
    print()
    per_agent = slope(fleet_rss)
    print(
        f"per hosted agent (slope over {', '.join(str(n) for n, _ in fleet_rss)}): "
        f"{per_agent:.0f} KB; fleet of 1,000 = {fleet_rss[-1][1] / 1024:.0f} MB vs 1,000 agent "
        f"processes = {1000 * agent_mb / 1024:.1f} GB ({1000 * agent_kb / fleet_rss[-1][1]:.0f}x)"
    )
    base = dict(principal_rss)
    at_max = max(base)
    per_session = (base[at_max] - base[0]) / at_max
    marginal = slope([p for p in principal_rss if p[0] > 0])
    print(
        f"principal per open session: ({base[at_max] / 1024:.1f} MB at {at_max} - "
        f"{base[0] / 1024:.1f} MB at 0) / {at_max} = {per_session:.1f} KB  <= 50 KB  "
        f"{ok(per_session, SESSION_LIMIT_KB)}"
    )
    print(f"  marginal slope over 100..{at_max} sessions: {marginal:.1f} KB per session")
    per_connection = (echo_rss[1] - echo_rss[0]) / at_max
    print(
        f"  floor: bare grpc.aio mTLS echo server, ({echo_rss[1] / 1024:.1f} MB at {at_max} - "
        f"{echo_rss[0] / 1024:.1f} MB at 0) / {at_max} = {per_connection:.1f} KB per connection "
        f"with one open stream"
    )
    print(
        f"  principal / floor {per_session / per_connection:.2f}x; Mooring's own overhead "
        f"(principal - floor) {per_session - per_connection:.1f} KB per session"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mooring-bench-memory-"))
    children: list[subprocess.Popen[bytes]] = []

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        bench(tmp, children)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, AssertionError) as err:  # AssertionError: a wait_for timed out
        for log in sorted(tmp.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-10:]
            if tail:
                print(f"--- {log.name}\n" + "\n".join(tail), file=sys.stderr)
        print(f"bench failed: {err}", file=sys.stderr)
        return 1
    finally:
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
