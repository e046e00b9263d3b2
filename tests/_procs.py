"""Helpers for tests that run real `mooring` processes, and the replica settings they
start from (in-process replicas too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import principal
from mooring import _services as services
from proto import exposition

SCRAPE_TIMEOUT = 2.0
"""Seconds a test waits for one /metrics answer on loopback."""


def scrape(port: int) -> exposition.Samples | None:
    """The samples of http://127.0.0.1:PORT/metrics; None if it does not answer."""
    return exposition.scrape(f"127.0.0.1:{port}", timeout=SCRAPE_TIMEOUT)


class Proc:
    """One `python -m mooring ...` process with its log file."""

    def __init__(self, args: list[str], *, log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        handle = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mooring", *self.args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
        )
        handle.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def replica_settings(
    replica_id: str,
    *,
    listen: str | None = None,
    heartbeat_interval: float | None = None,
    **fields: Any,
) -> principal.PrincipalSettings:
    """Replica `replica_id`'s settings as `principal serve` builds them from its flags: on
    `listen` (a free 127.0.0.1 port by default), advertised there unless `fields` name
    `advertise`, the heartbeat timeout derived from `heartbeat_interval` as the flag's."""
    listen = listen or f"127.0.0.1:{free_port()}"
    fields.setdefault("advertise", listen)
    if heartbeat_interval is not None:
        fields["session"] = principal.session.SessionSettings(
            heartbeat_interval=heartbeat_interval,
            heartbeat_timeout=heartbeat_interval * principal.flags.HEARTBEAT_TIMEOUT_FACTOR,
        )
    return principal.PrincipalSettings(replica_id=replica_id, listen=listen, **fields)


def serve(settings: principal.PrincipalSettings) -> list[str]:
    """`mooring principal serve` for `settings`, as the launcher runs it: the flags
    `principal.flags.to_argv` gives. Secret fields (--redis) are not among them: they
    travel in `principal.flags.to_env(settings)`, as `replica` passes them."""
    return ["principal", "serve", *principal.flags.to_argv(settings)]


def replica(
    settings: principal.PrincipalSettings, *, log: Path, env: dict[str, str] | None = None
) -> Proc:
    """The replica `settings` describe (not started yet): `serve`, with its secret
    fields and `env` in its environment."""
    return Proc(serve(settings), log=log, env={**principal.flags.to_env(settings), **(env or {})})


def mooring(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mooring", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"mooring {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        )
    return result


free_port = services.free_port
