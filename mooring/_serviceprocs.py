"""Process and port helpers shared by the local backing services (etcd, Redis).

Finding a service's binary on PATH (with an install hint when it is missing), picking
free loopback ports, waiting for a listener, and stopping a process with a grace period.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time

from mooring import _errors as errors

__all__ = [
    "INSTALL_HINT",
    "PLACED_PORTS",
    "MissingBinaryError",
    "free_port",
    "require_binary",
    "stop_process",
    "wait_tcp",
]

INSTALL_HINT = {
    "etcd": "etcd not found on PATH: install it with `apt-get install etcd-server`",
    "redis-server": "redis-server not found on PATH: install it with `apt-get install redis-server`",
}

PLACED_PORTS = {"etcd-client": 2379, "etcd-peer": 2380, "redis": 6379}
"""Ports of a service placed on an address of its own (a network namespace)."""


class MissingBinaryError(errors.MooringError, RuntimeError):
    """A backing service's binary is not installed."""


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingBinaryError(INSTALL_HINT.get(name, f"{name} not found on PATH"))
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_tcp(host: str, port: int, *, timeout: float = 10.0) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:.0f}s"
                ) from None
            time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes] | None, *, grace: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
