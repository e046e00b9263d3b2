"""Session history: every open and close a replica makes, for the invariant checkers.

Each replica appends JSON lines to its own file (`principal serve --history`):
{"t": CLOCK_MONOTONIC seconds, "wall": unix seconds, "ev": "open"|"close", "replica",
"agent", "epoch", "token", "session", "pid"}. CLOCK_MONOTONIC is one clock for every
process on a host, so files from replicas on one host merge into one timeline; the
wall clock serves across hosts. `token` is the fencing token of the agent's Redis
entry, which orders the grants. An "open" is written after the entry is taken and
before the agent is welcomed; a "close" after the stream has ended and before the
entry is released. The checker of invariant I1 is `chaos.invariants.single_owner`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Recorder", "load", "load_many"]


class Recorder:
    """Append-only, line-buffered JSON lines; a no-op without a path."""

    def __init__(self, path: str | Path | None, *, replica: str) -> None:
        self.replica = replica
        self._file = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", buffering=1, encoding="utf-8")

    def record(self, event: str, *, agent: str, epoch: int, token: int, session: str) -> None:
        if self._file is None:
            return
        line = {
            "t": time.monotonic(),
            "wall": time.time(),
            "ev": event,
            "replica": self.replica,
            "agent": agent,
            "epoch": epoch,
            "token": token,
            "session": session,
            "pid": os.getpid(),
        }
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: str | Path) -> list[dict[str, Any]]:
    """Read one history file; a torn last line (a killed writer) is skipped."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def load_many(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in paths:
        if Path(path).exists():
            events.extend(load(path))
    return sorted(events, key=lambda e: e["t"])
