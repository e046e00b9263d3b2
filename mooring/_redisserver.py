"""A local Redis: one real `redis-server` on loopback, without persistence.

Optionally with a password (and an ACL user) and TLS; `redacted` hides a password in a
Redis URL for output people read.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.parse
from pathlib import Path

from mooring import _processes as processes
from mooring import _servertls as servertls
from mooring import _serviceprocs as serviceprocs

__all__ = ["RedisServer", "redacted"]


def redacted(url: str) -> str:
    """`url` with any password in it replaced by `***`, for output people read."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


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
        tls: servertls.ServerTLS | None = None,
    ) -> None:
        if user is not None and not password:
            raise ValueError("a Redis ACL user needs a password")
        self.root = Path(root)
        self.host = host
        self.prefix = prefix
        self.port = port or serviceprocs.free_port(host)
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
        binary = serviceprocs.require_binary("redis-server")
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
        self.proc, _ = processes.spawn(cmd, log=self.log_path)
        serviceprocs.wait_tcp(self.host, self.port, timeout=timeout)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait()

    def stop(self) -> None:
        serviceprocs.stop_process(self.proc)
        self.proc = None
