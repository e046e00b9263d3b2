"""Helper processes for `bench/bench_memory.py`'s floor; not run by hand.

python bench/_echo.py server --tls-dir DIR --port P
    A bare grpc.aio server with the principal's TLS credentials
    (`proto._credentials.server_credentials`: client certificates required) and the
    principal's server options (`principal._server.grpc_server_options`), serving one
    generic stream-stream echo method. Prints {"ready": true}; serves until SIGTERM.

python bench/_echo.py client --pki DIR --endpoint H:P --connections N --prefix P
    Opens N client connections (one channel each, with agent P-i's certificate, the way
    N hosted agents dial), each with one open stream that sends one MESSAGE_BYTES
    message and reads its echo. Prints {"ready": true, "open": N}, then holds them open
    until stdin says {"cmd": "stop"} or closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from principal import _server as principal_server
from proto import _credentials as credentials
from proto import codec

SERVICE = "mooring.bench.Echo"
METHOD = f"/{SERVICE}/Echo"
MESSAGE_BYTES = 400
"""About one Hello with a small inventory, the first thing an agent sends."""
DIAL_CONCURRENCY = 32


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def run_server(args: argparse.Namespace) -> None:
    async def echo(request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        while True:
            message = await context.read()
            if message is grpc.aio.EOF:
                return
            await context.write(message)

    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Echo": grpc.stream_stream_rpc_method_handler(echo)}
    )
    server = grpc.aio.server(
        options=principal_server.grpc_server_options(codec.DEFAULT_MAX_MESSAGE_BYTES)
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


async def run_client(args: argparse.Namespace) -> None:
    gate = asyncio.Semaphore(DIAL_CONCURRENCY)
    payload = b"x" * MESSAGE_BYTES
    held: list[tuple[grpc.aio.Channel, Any]] = []

    async def one(i: int) -> None:
        creds = credentials.channel_credentials(args.pki / "agents" / f"{args.prefix}-{i:03d}")
        async with gate:
            channel = grpc.aio.secure_channel(
                args.endpoint, creds, options=[("grpc.ssl_target_name_override", "localhost")]
            )
            call = channel.stream_stream(METHOD)()
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
    parser = argparse.ArgumentParser(prog="bench/_echo.py")
    roles = parser.add_subparsers(dest="role", required=True)
    server = roles.add_parser("server")
    server.add_argument("--tls-dir", type=Path, required=True)
    server.add_argument("--port", type=int, required=True)
    client = roles.add_parser("client")
    client.add_argument("--pki", type=Path, required=True)
    client.add_argument("--endpoint", required=True)
    client.add_argument("--connections", type=int, required=True)
    client.add_argument("--prefix", default="mem")
    args = parser.parse_args()
    asyncio.run(run_server(args) if args.role == "server" else run_client(args))


if __name__ == "__main__":
    main()
