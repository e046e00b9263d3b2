"""A local etcd cluster: one or more real `etcd` members on loopback (or placed elsewhere).

Each member gets free ports, its own data directory and a log file; with `ServerTLS`, clients
speak TLS; `enable_auth` turns on etcd's users (`mooring._etcdauth`). `stop()` leaves no
process behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mooring import _etcdauth as etcdauth
from mooring import _processes as processes
from mooring import _servertls as servertls
from mooring import _serviceprocs as serviceprocs

__all__ = ["EtcdCluster"]


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
    metrics_port: int | None = None  # plain-HTTP /health beside a TLS client port

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


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
        tls: servertls.ServerTLS | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """`binary`: the etcd to run (default: `etcd` on PATH, Debian's 3.4).
        `placement`: per member, (argv prefix, address) to run it elsewhere, e.g. in a
        network namespace of its own (then on the standard ports).
        `tls`: serve clients over TLS only (peers stay plaintext on loopback); /health
        is then served over plain HTTP on a port of its own. `extra_args`: appended to
        every member's command line (e.g. `--auth-token-ttl 5`)."""
        self.root = Path(root)
        self.host = host
        self.binary = binary
        self.tls = tls
        self.extra_args = tuple(extra_args)
        self.token = f"mooring-{os.getpid()}-{int(time.time() * 1000)}"
        self.members = []
        ports = serviceprocs.PLACED_PORTS
        for i in range(members):
            placed = placement[i] if placement else None
            self.members.append(
                _EtcdMember(
                    name=f"etcd{i}",
                    client_port=ports["etcd-client"] if placed else serviceprocs.free_port(host),
                    peer_port=ports["etcd-peer"] if placed else serviceprocs.free_port(host),
                    data_dir=self.root / f"etcd{i}",
                    log_path=self.root / f"etcd{i}.log",
                    host=placed[1] if placed else host,
                    prefix=placed[0] if placed else (),
                    metrics_port=serviceprocs.free_port(host) if tls else None,
                )
            )

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    @property
    def url(self) -> str:
        """etcd://HOST:PORT,... or, with TLS, etcds://HOST:PORT,...?ca=FILE (as
        `--coordination` takes it; a client certificate and a user are the caller's)."""
        if self.tls is None:
            return "etcd://" + ",".join(self.endpoints)
        ca = urllib.parse.quote(str(self.tls.ca), safe="/")
        return "etcds://" + ",".join(self.endpoints) + f"?ca={ca}"

    def enable_auth(self, auth: etcdauth.EtcdAuth) -> None:
        """Turn on etcd's authentication (see `etcdauth.enable`), through the JSON gateway
        of the first member."""
        etcdauth.enable(auth, gateway=self._gateway)

    def _gateway(self, path: str, body: Mapping[str, Any]) -> None:
        member = self.members[0]
        scheme = "http" if self.tls is None else "https"
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca))
        request = urllib.request.Request(
            f"{scheme}://{member.host}:{member.client_port}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            response.read()

    def _client_args(self, member: _EtcdMember) -> list[str]:
        if self.tls is None:
            url = f"http://{member.host}:{member.client_port}"
            return ["--listen-client-urls", url, "--advertise-client-urls", url]
        url = f"https://{member.host}:{member.client_port}"
        args = ["--listen-client-urls", url, "--advertise-client-urls", url]
        args += ["--cert-file", str(self.tls.cert), "--key-file", str(self.tls.key)]
        args += ["--listen-metrics-urls", f"http://{member.host}:{member.metrics_port}"]
        if self.tls.client_ca is not None:
            args += ["--trusted-ca-file", str(self.tls.client_ca), "--client-cert-auth"]
        return args

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{m.host}:{m.peer_port}" for m in self.members)

    def start_member(self, index: int) -> None:
        member = self.members[index]
        binary = self.binary or serviceprocs.require_binary("etcd")
        member.data_dir.mkdir(parents=True, exist_ok=True)
        state = "existing" if (member.data_dir / "member").exists() else "new"
        cmd = [
            *member.prefix,
            binary,
            "--name",
            member.name,
            "--data-dir",
            str(member.data_dir),
            *self._client_args(member),
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
            *self.extra_args,
        ]
        member.proc, _ = processes.spawn(cmd, log=member.log_path)

    def start(self, *, timeout: float = 20.0) -> EtcdCluster:
        for i in range(len(self.members)):
            self.start_member(i)
        for member in self.members:
            serviceprocs.wait_tcp(member.host, member.client_port, timeout=timeout)
        self.wait_healthy(timeout=timeout)
        return self

    def wait_healthy(self, *, timeout: float = 20.0) -> None:
        """Wait until a linearizable read succeeds through every running member."""
        deadline = time.monotonic() + timeout
        for member in self.members:
            if member.proc is None or member.proc.poll() is not None:
                continue
            while True:
                try:
                    port = member.metrics_port or member.client_port
                    url = f"http://{member.host}:{port}/health"
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
            serviceprocs.stop_process(member.proc)
            member.proc = None
