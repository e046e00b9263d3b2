"""A userspace TCP proxy that adds latency and caps bandwidth (this kernel has no tc netem).

One listening address forwards to one target. Each direction (`to_target`: what clients
send, `to_client`: what the target answers) has its own `Shaping`: an added delay in ms
with optional uniform jitter, and a bandwidth cap in bytes/s enforced by a token bucket
that all connections through the proxy share (a link's capacity, not a per-connection
quota). Limits can change at any time; a new delay applies to bytes read after the
change, a new rate at once.

Every chunk read is stamped with the time it may leave (read time + delay, never earlier
than the chunk before it), queued, and written by a second task when due: a stream's
bytes keep their order, a delay pipelines instead of stalling the reader (like a long
link, not a slow one), and each connection has its own pair of tasks, so connections
never wait on each other. A full queue (64 reads, at most 4 MiB, per direction and
connection) stops reading, so TCP backpressure reaches the sender. EOF is forwarded
(half-close) after the data before it; a reset on either side closes both. The TCP
handshake itself is not delayed, only the bytes; a target that cannot be reached closes
the accepted client connection (the client sees EOF, not a refusal).

As a process, for experiments:

    python3 -m chaos.proxy --listen 127.0.0.1:7001 --target 127.0.0.1:6379 --control redis.json

The control file is JSON, re-read whenever it changes (polled every 0.1 s; write it with
`write_control`, which replaces it atomically); a missing file means no shaping, a broken
one is logged and the previous limits stay. Top-level fields apply to both directions,
per-direction objects override them:

    {"delay_ms": 50, "to_client": {"rate": 100000}}

After every change it applied (and once at start) the proxy writes `<control>.status`
(JSON: pid, listen, target, limits), so an experiment can wait until its change is in
force (`wait_applied`). SIGTERM or SIGINT closes the listener and every connection, and
the process exits 0.

In-process (tests): `async with Proxy(listen="127.0.0.1:0", target=...) as proxy:` then
`proxy.address`, `proxy.limits = Limits(...)`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from chaos import _forwarding as forwarding
from chaos import _impairment as impairment
from chaos import _proxycontrol as proxycontrol

__all__ = [
    "Limits",
    "Proxy",
    "Shaping",
    "main",
    "parse_hostport",
    "read_status",
    "status_path",
    "wait_applied",
    "write_control",
]

logger = logging.getLogger(__name__)

# The parts, named here where experiments and tests look for them: what a link's
# impairment is (chaos/_impairment.py), the forwarding (chaos/_forwarding.py) and the
# control and status files (chaos/_proxycontrol.py). This module is the process.
Limits = impairment.Limits
Shaping = impairment.Shaping
Proxy = forwarding.Proxy
parse_hostport = forwarding.parse_hostport
status_path = proxycontrol.status_path
write_control = proxycontrol.write_control
read_status = proxycontrol.read_status
wait_applied = proxycontrol.wait_applied

POLL_INTERVAL = 0.1  # seconds between looks at the control file


async def _follow(control: Path, proxy: forwarding.Proxy, stop: asyncio.Event) -> None:
    """Re-read the control file whenever its identity or contents change."""
    seen: tuple[int, int, int] | None = None
    while not stop.is_set():
        stamp = proxycontrol.identity(control)
        if stamp != seen:
            seen = stamp
            try:
                proxy.limits = proxycontrol.read_control(control)
            except (OSError, ValueError, TypeError) as err:
                logger.error("proxy: control file %s ignored: %s", control, err)
            else:
                proxycontrol.write_status(
                    control, listen=proxy.address_text, target=proxy.target, limits=proxy.limits
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_INTERVAL)


async def _run(args: argparse.Namespace) -> None:
    control = Path(args.control)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    proxy = forwarding.Proxy(listen=args.listen, target=args.target, seed=args.seed)
    proxy.limits = proxycontrol.read_control(control)  # a broken file at start is an error
    async with proxy:
        await _follow(control, proxy, stop)
        logger.info("proxy %s: stopping (%d connections)", proxy.address_text, proxy.connections)
    logger.info("proxy stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m chaos.proxy", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: any)")
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--control", required=True, help="JSON file with the limits, re-read")
    parser.add_argument("--seed", type=int, default=None, help="jitter's random seed")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        parse_hostport(args.listen)
        parse_hostport(args.target)
        asyncio.run(_run(args))
    except (ValueError, OSError) as err:
        print(f"chaos.proxy: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
