"""A local cluster as the benches use it (bench_failover, bench_hardening): `run` gives a
bench a state dir and takes its cluster down on any exit; `mooring status`'s document,
converged or not, and a wait until it is."""

from __future__ import annotations

import contextlib
import io
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from mooring import _launcher as launcher
from mooring import _processes as processes
from mooring import _state as state_
from mooring import _status as status_


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(bench: Callable[[Path], None], *, prefix: str, keep: bool) -> int:
    """Run `bench` on a fresh state dir named `prefix`... (it starts its cluster there);
    the exit status: 0, 130 interrupted (SIGINT, SIGTERM), 1 after a RuntimeError (said,
    with where the logs are, which are then kept). Whatever happens the cluster is taken
    down, and the dir removed unless `keep`."""
    signal.signal(signal.SIGTERM, _interrupt)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        bench(directory)
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except RuntimeError as err:
        print(f"bench failed: {err}; logs in {directory / 'logs'}", file=sys.stderr)
        keep = True
        return 1
    finally:
        with contextlib.suppress(Exception):
            launcher.down(directory, out=io.StringIO())
        with contextlib.suppress(Exception):  # anything `down` could not see
            processes.terminate(state_.load(directory).handles(), grace=5.0)
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            print(f"state dir kept: {directory}", file=sys.stderr)


def collect(directory: Path) -> dict[str, Any]:
    """The `mooring status --json --dir DIR` document (same code, in-process)."""
    return status_.collect(state_.load(directory))


def converged(got: dict[str, Any], *, replicas: int, dead: str | None = None) -> bool:
    """Every agent connected to its owner, `replicas` live, each owning some agents, none
    owned by or connected to `dead`."""
    live = {r["id"] for r in got["replicas"] if r["live"]}
    owners = {a["owner"] for a in got["agents"]}
    return (
        len(live) == replicas
        and got["agents_total"] > 0
        and got["agents_on_owner"] == got["agents_total"]
        and owners == live
        and all(a["connected_to"] != dead for a in got["agents"])
    )


def wait_converged(
    directory: Path,
    *,
    replicas: int,
    timeout: float,
    dead: str | None = None,
    interval: float = 1.0,
) -> tuple[dict[str, Any], float]:
    """(status, seconds waited) once every agent is on its owner with `replicas` live;
    RuntimeError after `timeout` seconds."""
    start = time.monotonic()
    while True:
        got = collect(directory)
        if converged(got, replicas=replicas, dead=dead):
            return got, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise RuntimeError(
                f"not converged after {timeout:.0f}s: {got['agents_connected']}/"
                f"{got['agents_total']} connected, {got['agents_on_owner']} on their owner"
            )
        time.sleep(interval)
