"""The proxy process's files: the control file an experiment writes its limits to, and
the status file the proxy answers in with what it applied.

The control file is JSON (`Limits.to_json`), replaced atomically by `write_control`;
the proxy re-reads it whenever its `identity` changes. After each change it applied the
proxy writes `<control>.status` (pid, listen, target, limits), which `wait_applied`
waits for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from chaos import _impairment as impairment

__all__ = [
    "identity",
    "read_control",
    "read_status",
    "status_path",
    "wait_applied",
    "write_control",
    "write_status",
]


def status_path(control: Path) -> Path:
    """Where the proxy following this control file reports what it applied."""
    return control.with_name(control.name + ".status")


def write_control(path: str | os.PathLike[str], limits: impairment.Limits) -> None:
    """Replace the control file atomically, so the proxy never reads half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(limits.to_json(), indent=2) + "\n")
    os.replace(tmp, path)


def read_status(control: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the proxy last applied (None before it started)."""
    try:
        data = json.loads(status_path(Path(control)).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def wait_applied(
    control: str | os.PathLike[str], limits: impairment.Limits, *, timeout: float = 5.0
) -> dict[str, Any]:
    """Block until the proxy's status shows these limits; TimeoutError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        status = read_status(control)
        if status is not None and status.get("limits") == limits.to_json():
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"proxy did not apply {limits.to_json()} within {timeout}s")
        time.sleep(0.02)


def write_status(
    control: Path, *, listen: str, target: tuple[str, int], limits: impairment.Limits
) -> None:
    """Report what the proxy following `control` applied (`status_path`), atomically."""
    data = {
        "pid": os.getpid(),
        "listen": listen,
        "target": f"{target[0]}:{target[1]}",
        "limits": limits.to_json(),
    }
    path = status_path(control)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_control(control: Path) -> impairment.Limits:
    """The limits the control file says; none (no shaping) while there is no file."""
    try:
        text = control.read_text()
    except FileNotFoundError:
        return impairment.Limits()
    return impairment.Limits.from_json(json.loads(text))


def identity(control: Path) -> tuple[int, int, int]:
    """What changes when the file is replaced or rewritten: inode, mtime, size."""
    try:
        st = control.stat()
    except FileNotFoundError:
        return (0, 0, 0)
    return (st.st_ino, st.st_mtime_ns, st.st_size)
