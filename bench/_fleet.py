"""Helper processes for `bench/bench_sync.py`; not run by hand.

python bench/_fleet.py fleet --pki DIR --endpoint H:P --agents N --state-dir DIR
    Hosts N real `agent.Agent` instances (managed mode) in this one process, each with
    its own SQLite file and its own Prometheus registry. Prints one JSON line
    {"ready": ...} once every agent is welcomed and resynced, then answers JSON-line
    commands on stdin:
        {"cmd": "collect", "round": R, "expect": N, "timeout": S}
            -> {"round": R, "records": [[agent, name, written_ns, applied_ns], ...],
                "sessions": n}
        {"cmd": "stop"} -> {"stopped": true}, then exits (also on stdin EOF).

    Apply times are taken by wrapping each agent's `LocalStore.apply_remote_upsert`
    on the instance (the agent code is untouched): right after the SQLite write that
    changed the row, the wrapper reads the annotations the bench stamped into the spec
    (`mooring.bench/written-at`, `mooring.bench/round`) and records (written, now).

python bench/_fleet.py echo --tls-dir DIR --port P
    The peer: a bare grpc.aio bidirectional-stream echo server with the principal's
    mTLS setup (same certificate, client certificates required) and the principal's
    server channel arguments. Prints {"ready": true}; serves until SIGTERM.

python bench/_fleet.py echo-client --pki DIR --endpoint H:P --connections N --prefix P
    For `bench/bench_memory.py`'s floor: opens N client connections to the echo server
    (one channel each, with agent P-i's certificate, the way N hosted agents dial), each
    with one open stream that sends one ECHO_BYTES message and reads its echo. Prints
    {"ready": true, "open": N}, then holds them open until stdin says {"cmd": "stop"}
    or closes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import prometheus_client as prom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import _client as agent_client
from agent import _localstore as localstore
from agent import _settings as agent_settings
from principal import _agentserver as agentserver
from proto import _credentials as credentials
from proto import codec

WRITTEN_AT = "mooring.bench/written-at"
ROUND = "mooring.bench/round"
ECHO_SERVICE = "mooring.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"
ECHO_BYTES = 400
"""About one Hello with a small inventory, the first thing an agent sends."""
ECHO_DIAL_CONCURRENCY = 32

Recorder = Callable[[str, str, str, int, int], None]


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def instrument(store: localstore.LocalStore, record: Recorder, *, agent: str) -> None:
    """Record (round, agent, name, written_ns, applied_ns) per stamped upsert that changed it."""
    original = store.apply_remote_upsert

    async def apply_remote_upsert(kind: str, name: str, **kwargs: Any) -> bool:
        changed = await original(kind, name, **kwargs)
        if changed:
            annotations = (kwargs["obj"].get("metadata") or {}).get("annotations") or {}
            written = annotations.get(WRITTEN_AT)
            if written:
                applied = time.time_ns()
                record(str(annotations.get(ROUND, "")), agent, name, int(written), applied)
        return changed

    store.apply_remote_upsert = apply_remote_upsert  # type: ignore[method-assign]


async def run_fleet(args: argparse.Namespace) -> None:
    records: dict[str, list[tuple[str, str, int, int]]] = defaultdict(list)
    waiting: dict[str, tuple[int, asyncio.Event]] = {}

    def record(round_name: str, agent: str, name: str, written: int, applied: int) -> None:
        bucket = records[round_name]
        bucket.append((agent, name, written, applied))
        target = waiting.get(round_name)
        if target is not None and len(bucket) >= target[0]:
            target[1].set()

    agents = []
    for i in range(args.agents):
        name = f"{args.prefix}-{i:03d}"
        settings = agent_settings.AgentSettings(
            name=name,
            mode="managed",
            endpoints=(args.endpoint,),
            tls_dir=args.pki / "agents" / name,
            state=args.state_dir / f"{name}.db",
        )
        agent = agent_client.Agent(settings, registry=prom.CollectorRegistry())
        instrument(agent.store, record, agent=name)
        agents.append(agent)
    started = time.monotonic()
    tasks = [asyncio.create_task(a.run(), name=f"agent:{a.settings.name}") for a in agents]

    def sessions() -> int:
        return int(sum(a.registry.get_sample_value("mooring_sessions_total") or 0 for a in agents))

    try:
        waits = [a.welcomed.wait() for a in agents]
        await asyncio.wait_for(asyncio.gather(*waits), args.connect_timeout)
        emit({"ready": True, "connect_seconds": time.monotonic() - started, "sessions": sessions()})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            command = json.loads(line)
            if command["cmd"] == "stop":
                return
            if command["cmd"] == "collect":
                round_name, expect = command["round"], int(command["expect"])
                done = asyncio.Event()
                waiting[round_name] = (expect, done)
                if len(records[round_name]) >= expect:
                    done.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), float(command["timeout"]))
                del waiting[round_name]
                got = records.pop(round_name, [])
                emit({"round": round_name, "records": got, "sessions": sessions()})
    finally:
        for agent in agents:
            agent.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)
        emit({"stopped": True})


async def run_echo(args: argparse.Namespace) -> None:
    async def echo(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            await context.write(message)

    handler = grpc.method_handlers_generic_handler(
        ECHO_SERVICE, {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(
        options=agentserver.grpc_server_options(codec.DEFAULT_MAX_MESSAGE_BYTES)
    )
    server.add_generic_rpc_handlers((handler,))
    creds = credentials.server_credentials(args.tls_dir)
    if server.add_secure_port(f"127.0.0.1:{args.port}", creds) == 0:
        raise OSError(f"cannot listen on 127.0.0.1:{args.port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    emit({"ready": True})
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)


async def run_echo_client(args: argparse.Namespace) -> None:
    gate = asyncio.Semaphore(ECHO_DIAL_CONCURRENCY)
    payload = b"x" * ECHO_BYTES
    held: list[tuple[grpc.aio.Channel, Any]] = []

    async def one(i: int) -> None:
        creds = credentials.channel_credentials(args.pki / "agents" / f"{args.prefix}-{i:03d}")
        async with gate:
            channel = grpc.aio.secure_channel(
                args.endpoint, creds, options=[("grpc.ssl_target_name_override", "localhost")]
            )
            call = channel.stream_stream(ECHO_METHOD)()
            await call.write(payload)
            answer = await call.read()
            if answer != payload:
                raise RuntimeError(f"connection {i}: no echo")
            held.append((channel, call))

    await asyncio.gather(*(one(i) for i in range(args.connections)))
    emit({"ready": True, "open": len(held)})
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or json.loads(line).get("cmd") == "stop":
            break
    for channel, _ in held:
        await channel.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/_fleet.py")
    roles = parser.add_subparsers(dest="role", required=True)
    fleet = roles.add_parser("fleet")
    fleet.add_argument("--pki", type=Path, required=True)
    fleet.add_argument("--endpoint", required=True)
    fleet.add_argument("--agents", type=int, required=True)
    fleet.add_argument("--prefix", default="bench")
    fleet.add_argument("--state-dir", type=Path, required=True)
    fleet.add_argument("--connect-timeout", type=float, default=60.0)
    echo = roles.add_parser("echo")
    echo.add_argument("--tls-dir", type=Path, required=True)
    echo.add_argument("--port", type=int, required=True)
    client = roles.add_parser("echo-client")
    client.add_argument("--pki", type=Path, required=True)
    client.add_argument("--endpoint", required=True)
    client.add_argument("--connections", type=int, required=True)
    client.add_argument("--prefix", default="mem")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    roles_run = {"fleet": run_fleet, "echo": run_echo, "echo-client": run_echo_client}
    asyncio.run(roles_run[args.role](args))


if __name__ == "__main__":
    main()
