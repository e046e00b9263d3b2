"""README's five-minute walk-through, run as written: every `sh` block of the section, in
order, in one bash, on the real etcd, principal and agents it starts itself."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests._poll import wait_for

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
PORTS = (2379, 8443, 9100)  # the walk-through's fixed addresses on 127.0.0.1


def walkthrough() -> str:
    text = README.read_text()
    section = text[text.index("## Five-minute walk-through") : text.index("## How it works")]
    return "\n".join(re.findall(r"```sh\n(.*?)```", section, re.S))


def free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    if shutil.which("etcd") is None:
        pytest.fail("etcd is not installed (scripts/setup.sh installs etcd-server)")
    busy = [p for p in PORTS if not free(p)]
    assert not busy, f"the walk-through's ports are taken: {busy}"
    script = walkthrough()
    assert script.count("mooring ") > 30  # the section was found and has its commands
    bin_dir = tmp_path / "bin"  # `mooring` as this checkout's, whatever is installed
    bin_dir.mkdir()
    (bin_dir / "mooring").write_text(f'#!/bin/sh\nexec {sys.executable} -m mooring "$@"\n')
    (bin_dir / "mooring").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),  # where `mktemp -d` makes the scratch folder
        "PYTHONPATH": str(README.parent),
    }
    env.pop("MOORING_COORDINATION", None)
    try:
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
            stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
    finally:  # whatever a failed step left running on the walk-through's addresses
        for pattern in ("--endpoints 127.0.0.1:8443", "--listen 127.0.0.1:8443", "etcd-data"):
            subprocess.run(["pkill", "-f", pattern], check=False)
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, err
    assert "Traceback" not in out + err and "unrecognized arguments" not in err, err
    # What the comments in the walk-through say each step prints.
    for said in (
        "agent edge-1 created (managed)",
        "Application guestbook created for agent edge-1",
        "Application guestbook configured for agent edge-1",
        "certificate revoked (serial",
        "Application guestbook deleted for agent edge-1",
        "Application guestbook not found for agent edge-1",
        "agent edge-3 deleted",
    ):
        assert said in out, said
    row = r"^edge-1\s+Application\s+guestbook\s+managed\s+(yes|pending \d+s)"
    delivered = re.findall(row, out, re.M)
    assert delivered[-2].startswith("pending"), delivered  # changed while the agent was down
    assert delivered[-1] == "yes", delivered  # after the restart the agent has the change
    assert re.search(r"agents connected: [0-2]/2", out)  # 2/2 unless the machine is slow
    assert "is autonomous: Application guestbook is owned by the agent" in err
    # The teardown stopped everything (a replica takes a moment to hand over and exit)
    # and removed the scratch folder.
    wait_for(lambda: all(free(p) for p in PORTS), timeout=20, what="the ports free again")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("tmp.")] == []
