"""A state dir reused by a second `mooring up` starts clean, and cluster.json keeps what
restarts need."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mooring import _launcher as launcher
from mooring import _processes as processes
from mooring import _state as state_

pytestmark = pytest.mark.unit


def test_a_new_cluster_forgets_the_last_ones_history_but_keeps_its_ca(tmp_path: Path) -> None:
    """Found by the chaos suite (issue 12): the session history of an earlier cluster in
    the same dir had unclosed opens (it was killed), which read as I1 violations of the
    next; its writer log would have read as I2 ones."""
    for sub in ("history/p1.jsonl", "chaos/faults.jsonl", "chaos/workload.jsonl", "pki/ca.crt"):
        (tmp_path / sub).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / sub).write_text("{}\n")
    launcher._fresh(tmp_path)
    assert not (tmp_path / "history").exists() and not (tmp_path / "chaos").exists()
    assert (tmp_path / "pki" / "ca.crt").exists()


def test_a_process_is_recorded_with_the_command_that_starts_it_again(tmp_path: Path) -> None:
    proc, handle = processes.spawn(
        [sys.executable, "-c", "import time; time.sleep(30)"], log=tmp_path / "a.log"
    )
    try:
        state = state_.ClusterState(dir=str(tmp_path), coordination="", redis="", pki="")
        state.redis_server = state_.ServiceRecord("redis", "127.0.0.1:1", "x.log", handle)
        state_.save(tmp_path, state)
        again = state_.load(tmp_path).redis_server
        assert again is not None and again.process == handle
        assert again.process.argv[0] == sys.executable
    finally:
        proc.kill()
        proc.wait()
    fresh, handle2 = processes.respawn(handle, log=tmp_path / "a.log")
    try:
        assert processes.alive(handle2) and handle2.argv == handle.argv
        assert not processes.alive(handle)
    finally:
        fresh.kill()
        fresh.wait()
    with pytest.raises(ValueError, match="without its command"):
        processes.respawn(processes.Handle(pid=1, start=None), log=tmp_path / "b.log")
