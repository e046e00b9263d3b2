"""Start and stop the real backing services (etcd, Redis) from PATH.

Used by `mooring up` and by the test fixtures, so tests run the very code
that newcomers run. Every process gets free loopback ports, its own data
directory and a log file; nothing is left behind by `stop()`.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mooring import _errors as errors

__all__ = [
    "EtcdAuth",
    "EtcdCluster",
    "MissingBinaryError",
    "RedisServer",
    "ServerTLS",
    "free_port",
    "require_binary",
    "stop_process",
    "wait_tcp",
]

INSTALL_HINT = {
    "etcd": "etcd not found on PATH: install it with `apt-get install etcd-server`",
    "redis-server": "redis-server not found on PATH: install it with `apt-get install redis-server`",
}


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


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def redacted(url: str) -> str:
    """`url` with any password in it replaced by `***`, for output people read."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """A backing service's TLS identity (PEM files): clients must then speak TLS to it."""

    cert: Path  # the server's certificate; it must name the address clients dial (IP SAN)
    key: Path  # its private key
    ca: Path  # the CA that issued `cert`: what clients verify the server with
    client_ca: Path | None = None  # require a client certificate issued by this CA


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


PLACED_PORTS = {"etcd-client": 2379, "etcd-peer": 2380, "redis": 6379}
"""Ports of a service placed on an address of its own (a network namespace)."""


@dataclasses.dataclass(frozen=True)
class EtcdAuth:
    """etcd's own authentication, as a local cluster turns it on: a `root` user (only to
    administer) and `user`, allowed to read and write the keys under `prefix` alone.
    The passwords live in 0600 files under `directory`, made once and kept, so a cluster
    restarted on its data dir keeps its users."""

    directory: Path
    user: str = "mooring"
    prefix: str = "/mooring/"

    @property
    def password_file(self) -> Path:
        return self.directory / f"etcd-{self.user}.password"

    @property
    def root_password_file(self) -> Path:
        return self.directory / "etcd-root.password"

    def url(self, base: str) -> str:
        """The etcd URL `base` logging in as this user (its password by file)."""
        options = urllib.parse.urlencode(
            {"user": self.user, "password-file": str(self.password_file)}, safe="/"
        )
        return base + ("&" if "?" in base else "?") + options

    def passwords(self) -> tuple[str, str]:
        """(root's, the user's) passwords, made on the first call."""
        return _secret_file(self.root_password_file), _secret_file(self.password_file)


def _secret_file(path: Path) -> str:
    """The secret in `path` (0600), or a new random one written there first."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        return secret


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
        tls: ServerTLS | None = None,
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
                    metrics_port=free_port(host) if tls else None,
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

    def enable_auth(self, auth: EtcdAuth) -> None:
        """Turn on etcd's authentication (a no-op when it is on already, as on a restart
        from existing data): users root and `auth.user`, the latter with read-write on
        `auth.prefix` only. Through the JSON gateway of the first member."""
        probe = {"key": _b64(auth.prefix)}
        try:
            self._gateway("/v3/kv/range", probe)
        except urllib.error.HTTPError as err:
            if b"user name is empty" in err.read():
                return  # auth is on already
            raise
        root_password, password = auth.passwords()
        user = auth.user
        end = auth.prefix[:-1] + chr(ord(auth.prefix[-1]) + 1)  # the prefix's range end
        grant = {"permType": "READWRITE", "key": _b64(auth.prefix), "range_end": _b64(end)}
        for path, body in (
            ("/v3/auth/user/add", {"name": "root", "password": root_password}),
            ("/v3/auth/role/add", {"name": "root"}),
            ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
            ("/v3/auth/user/add", {"name": user, "password": password}),
            ("/v3/auth/role/add", {"name": user}),
            ("/v3/auth/role/grant", {"name": user, "perm": grant}),
            ("/v3/auth/user/grant", {"user": user, "role": user}),
            ("/v3/auth/enable", {}),
        ):
            self._gateway(path, body)

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
            stop_process(member.proc)
            member.proc = None


class RedisServer:
    """A real `redis-server` on loopback, without persistence. With `password`, clients
    must authenticate (the default user's password, kept in a 0600 config file rather
    than on the command line, and in the URL: `redis://:PASSWORD@HOST:PORT`); with `user`
    too, as that ACL user (all keys, channels and commands) while the default user is
    off. With `tls`, it speaks TLS only (`rediss://`), on `port`."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        prefix: tuple[str, ...] = (),  # runs after it, e.g. `ip netns exec NS`
        password: str | None = None,
        user: str | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        if user is not None and not password:
            raise ValueError("a Redis ACL user needs a password")
        self.root = Path(root)
        self.host = host
        self.prefix = prefix
        self.port = port or free_port(host)
        self.password = password
        self.user = user
        self.tls = tls
        self.log_path = self.root / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis://[[USER]:PASSWORD@]HOST:PORT, or with TLS rediss://...?ssl_ca_certs=CA (a
        client certificate, when required, is the caller's to add)."""
        auth = ""
        if self.password:
            user = urllib.parse.quote(self.user or "", safe="")
            auth = f"{user}:{urllib.parse.quote(self.password, safe='')}@"
        if self.tls is None:
            return f"redis://{auth}{self.host}:{self.port}"
        ca = urllib.parse.quote(str(self.tls.ca), safe="/")
        return f"rediss://{auth}{self.host}:{self.port}?ssl_ca_certs={ca}"

    def _config(self) -> list[str]:
        """The config file's path (redis-server's first argument) when a password is set."""
        if not self.password:
            return []
        path = self.root / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            if self.user is None:
                handle.write(f'requirepass "{self.password}"\n')
            else:
                handle.write("user default off\n")
                handle.write(f'user {self.user} on ">{self.password}" ~* &* +@all\n')
        return [str(path)]

    def _port_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        return [
            "--port",
            "0",
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls.cert),
            "--tls-key-file",
            str(self.tls.key),
            "--tls-ca-cert-file",
            str(self.tls.client_ca or self.tls.ca),
            "--tls-auth-clients",
            "yes" if self.tls.client_ca else "no",
        ]

    def start(self, *, timeout: float = 10.0) -> RedisServer:
        binary = require_binary("redis-server")
        self.root.mkdir(parents=True, exist_ok=True)
        cmd = [
            *self.prefix,
            binary,
            *self._config(),
            *self._port_args(),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.root),
            "--protected-mode",
            "yes" if self.password else "no",
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
