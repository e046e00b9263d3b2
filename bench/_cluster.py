"""A local cluster's state as the benches judge it: `mooring status`'s document, converged
or not, and a wait until it is (bench_failover, bench_hardening)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mooring import _state as state_
from mooring import _status as status_


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
