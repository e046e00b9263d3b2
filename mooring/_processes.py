"""Processes of a local cluster, known by pid: start, wait until ready, identify, stop.

A pid alone is not an identity: after a crash the number may be reused. Every
process `mooring up` starts is recorded with its kernel start time (field 22 of
/proc/PID/stat), and a pid counts as ours only while that start time matches.
A zombie (exited, not yet reaped: the container's init may never reap it) counts
as dead.

A process may be placed in a network namespace of its own (the chaos suite), and is
ready once it listens on its address (or, with none, as long as it runs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

__all__ = [
    "HOST",
    "READY_TIMEOUT",
    "Handle",
    "Started",
    "alive",
    "last_line",
    "placed",
    "respawn",
    "spawn",
    "spawn_mooring",
    "start_time",
    "stop_signal",
    "terminate",
    "wait_ready",
]

HOST = "127.0.0.1"
"""Where a local cluster's processes listen, unless placed in a network namespace."""
READY_TIMEOUT = 30.0
"""Seconds for every replica to listen and the fleet to report after `up` or `scale`."""


@dataclasses.dataclass(frozen=True)
class Handle:
    """A process we started: its pid and kernel start time (None where /proc is absent),
    and the command and environment that start it again (`respawn`)."""

    pid: int
    start: int | None
    argv: tuple[str, ...] = ()
    env: dict[str, str] | None = None  # None: the starter's environment

    @classmethod
    def of(cls, proc: subprocess.Popen[bytes], *, env: dict[str, str] | None = None) -> Handle:
        args = proc.args
        argv = tuple(str(a) for a in args) if isinstance(args, list | tuple) else (str(args),)
        return cls(pid=proc.pid, start=start_time(proc.pid), argv=argv, env=env)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"pid": self.pid, "start": self.start}
        if self.argv:
            data["argv"] = list(self.argv)
        if self.env is not None:
            data["env"] = dict(self.env)
        return data

    @classmethod
    def from_json(cls, data: Any) -> Handle | None:
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            return None
        start = data.get("start")
        argv = data.get("argv")
        env = data.get("env")
        return cls(
            pid=data["pid"],
            start=start if isinstance(start, int) else None,
            argv=tuple(str(a) for a in argv) if isinstance(argv, list) else (),
            env={str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else None,
        )


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if unknown."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None and len(fields) > 19 else None


def stop_signal(pid: int, sig: int, *, timeout: float = 5.0) -> None:
    """SIGSTOP or SIGCONT `pid` and wait until the kernel shows it stopped (state T) or
    running again: a signal is delivered asynchronously, and a request can still be
    answered in between."""
    os.kill(pid, sig)
    want_stopped = sig == signal.SIGSTOP
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fields = _stat(pid)
        if fields is None or (fields[0] in ("T", "t")) == want_stopped:
            return
        time.sleep(0.001)


def alive(handle: Handle | None) -> bool:
    """True while the recorded process runs (not a zombie, same start time)."""
    if handle is None:
        return False
    _reap(handle.pid)
    if Path("/proc/self/stat").exists():
        fields = _stat(handle.pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        return handle.start is None or int(fields[19]) == handle.start
    try:
        os.kill(handle.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (no zombie left behind)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(
    cmd: Sequence[str], *, log: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], Handle]:
    """Start `cmd` in its own session, stdout and stderr appended to `log`.

    The process gets this one's environment (PATH, PYTHONPATH, locale...) without its
    MOORING_* variables, which would set the child's flags behind the launcher's back,
    plus `env`. Only `env` is kept in the Handle (and so in cluster.json) for a restart.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    full = None
    if env is not None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("MOORING_")}
        full.update(env)
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            list(cmd),
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full,
            start_new_session=True,
        )
    return proc, Handle.of(proc, env=env)


def respawn(handle: Handle, *, log: Path) -> tuple[subprocess.Popen[bytes], Handle]:
    """Start again what `handle` ran, with the same command and environment."""
    if not handle.argv:
        raise ValueError(f"pid {handle.pid} was recorded without its command: cannot restart it")
    return spawn(handle.argv, log=log, env=handle.env)


def spawn_mooring(
    args: Sequence[str],
    *,
    log: Path,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[bytes], Handle]:
    """Start `python -m mooring ARGS` with this interpreter (after `prefix`, e.g.
    `ip netns exec NS`, which execs it: the pid is the process's own)."""
    return spawn([*prefix, sys.executable, "-m", "mooring", *args], log=log, env=env)


def terminate(handles: Iterable[Handle | None], *, grace: float = 10.0) -> list[int]:
    """SIGTERM every live process at once, wait up to `grace` seconds, SIGKILL the rest.

    Idempotent: dead or unknown handles are skipped. Returns the pids that needed SIGKILL.
    """
    live = [h for h in handles if h is not None and alive(h)]
    for handle in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(handle.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(alive(h) for h in live) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = []
    for handle in live:
        if alive(handle):
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, signal.SIGKILL)
            killed.append(handle.pid)
    deadline = time.monotonic() + 5.0
    while any(alive(h) for h in live) and time.monotonic() < deadline:
        time.sleep(0.02)
    return killed


# ----------------------------------------------------------------------------- startup
Started: TypeAlias = tuple[str, subprocess.Popen[bytes], Path, str | None]
"""A process just started: (what, the process, its log, the HOST:PORT it will listen on
or None when it only has to keep running)."""


def placed(netns: dict[str, dict[str, str]] | None, name: str) -> tuple[tuple[str, ...], str]:
    """(argv prefix, host) of process `name`: its namespace's, or none and loopback."""
    where = (netns or {}).get(name)
    if where is None:
        return (), HOST
    return ("ip", "netns", "exec", where["namespace"]), where["host"]


def last_line(path: Path) -> str:
    """The last non-blank line of a log (200 characters at most), for an error message."""
    with contextlib.suppress(OSError):
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()[:200]
    return "no output"


def _listening(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.2):
            return True
    except OSError:
        return False


def wait_ready(started: list[Started], *, timeout: float = READY_TIMEOUT) -> None:
    """Wait until each (what, process, log, HOST:PORT) listens there (or just runs)."""
    deadline = time.monotonic() + timeout
    pending = list(started)
    while pending:
        for item in list(pending):
            what, proc, log, endpoint = item
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{what} exited during startup (code {proc.returncode}); {log}: {last_line(log)}"
                )
            if endpoint is None or _listening(endpoint):
                pending.remove(item)
        if pending and time.monotonic() > deadline:
            names = ", ".join(p[0] for p in pending)
            raise RuntimeError(
                f"{names} not ready after {timeout:.0f}s; see {Path(started[0][2]).parent}"
            )
        if pending:
            time.sleep(0.05)
