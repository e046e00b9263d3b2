"""Start and stop the real backing services (etcd, Redis) from PATH.

Used by `mooring up` and by the test fixtures, so tests run the very code
that newcomers run. Every process gets free loopback ports, its own data
directory and a log file; nothing is left behind by `stop()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "EtcdCluster",
    "MissingBinaryError",
    "RedisServer",
    "free_port",
    "require_binary",
    "stop_process",
    "wait_tcp",
]

INSTALL_HINT = {
    "etcd": "etcd not found on PATH: install it with `apt-get install etcd-server`",
    "redis-server": "redis-server not found on PATH: install it with `apt-get install redis-server`",
}


class MissingBinaryError(RuntimeError):
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


@dataclasses.dataclass
class _EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()  # runs after it, e.g. `ip netns exec NS`

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


PLACED_PORTS = {"etcd-client": 2379, "etcd-peer": 2380, "redis": 6379}
"""Ports of a service placed on an address of its own (a network namespace)."""


class EtcdCluster:
    """One or more etcd members on loopback, each a real `etcd` process."""

    def __init__(
        self,
        root: Path,
        *,
        members: int = 1,
        host: str = "127.0.0.1",
        binary: str | None = None,
        placement: list[tuple[tuple[str, ...], str]] | None = None,
    ) -> None:
        """`binary`: the etcd to run (default: `etcd` on PATH, Debian's 3.4).
        `placement`: per member, (argv prefix, address) to run it elsewhere, e.g. in a
        network namespace of its own (then on the standard ports)."""
        self.root = Path(root)
        self.host = host
        self.binary = binary
        self.token = f"mooring-{os.getpid()}-{int(time.time() * 1000)}"
        self.members = []
        for i in range(members):
            placed = placement[i] if placement else None
            self.members.append(
                _EtcdMember(
                    name=f"etcd{i}",
                    client_port=PLACED_PORTS["etcd-client"] if placed else free_port(host),
                    peer_port=PLACED_PORTS["etcd-peer"] if placed else free_port(host),
                    data_dir=self.root / f"etcd{i}",
                    log_path=self.root / f"etcd{i}.log",
                    host=placed[1] if placed else host,
                    prefix=placed[0] if placed else (),
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(self.endpoints)

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{m.host}:{m.peer_port}" for m in self.members)

    def start_member(self, index: int) -> None:
        member = self.members[index]
        binary = self.binary or require_binary("etcd")
        member.data_dir.mkdir(parents=True, exist_ok=True)
        state = "existing" if (member.data_dir / "member").exists() else "new"
        cmd = [
            *member.prefix,
            binary,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            "--listen-client-urls",
            f"http://{member.host}:{member.client_port}",
            "--advertise-client-urls",
            f"http://{member.host}:{member.client_port}",
            "--listen-peer-urls",
            f"http://{member.host}:{member.peer_port}",
            "--initial-advertise-peer-urls",
            f"http://{member.host}:{member.peer_port}",
            "--initial-cluster",
            self._initial_cluster(),
            "--initial-cluster-state",
            state,
            "--initial-cluster-token",
            self.token,
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        log = member.log_path.open("ab")
        member.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()

    def start(self, *, timeout: float = 20.0) -> EtcdCluster:
        for i in range(len(self.members)):
            self.start_member(i)
        for member in self.members:
            wait_tcp(member.host, member.client_port, timeout=timeout)
        self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, *, timeout: float = 20.0) -> None:
        """Wait until a linearizable read succeeds through every running member."""
        import urllib.request

        deadline = time.monotonic() + timeout
        for member in self.members:
            if member.proc is None or member.proc.poll() is not None:
                continue
            while True:
                try:
                    url = f"http://{member.host}:{member.client_port}/health"
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        if b'"true"' in resp.read():
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"etcd member {member.name} not healthy after {timeout}s")
                time.sleep(0.05)

    def kill_member(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.members[index].proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                proc.wait()

    def stop(self) -> None:
        for member in self.members:
            stop_process(member.proc)
            member.proc = None


class RedisServer:
    """A real `redis-server` on loopback, without persistence."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),  # runs after it, e.g. `ip netns exec NS`
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.prefix = prefix
        self.port = port or free_port(host)
        self.log_path = self.root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}"

    def start(self, *, timeout: float = 10.0) -> RedisServer:
        binary = require_binary("redis-server")
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self.prefix,
            binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--protected-mode",
            "no",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_tcp(self.host, self.port, timeout=timeout)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
