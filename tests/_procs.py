"""Helpers for tests that run real `mooring` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

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
