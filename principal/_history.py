"""Session history: every open and close, and the checker for invariant I1.

Each replica appends JSON lines to its own file: {"t": CLOCK_MONOTONIC seconds,
"ev": "open"|"close", "replica", "agent", "epoch", "token", "session"}. CLOCK_MONOTONIC
is one clock for every process on a host, so files from replicas on one host merge
into one timeline. An "open" is written after the session-registry entry is taken and
before the agent is welcomed; a "close" after the stream has ended and before the
entry is released. Two replicas' [open, close] intervals for one agent that overlap
break I1 ("at no instant do two replicas hold an open session for one agent").
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["Interval", "Recorder", "Violation", "check", "load", "load_many"]


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


@dataclasses.dataclass(frozen=True, slots=True)
class Interval:
    agent: str
    replica: str
    session: str
    token: int
    start: float
    end: float  # +inf while still open at the end of the history


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    agent: str
    first: Interval
    second: Interval

    def __str__(self) -> str:
        overlap = min(self.first.end, self.second.end) - max(self.first.start, self.second.start)
        return (
            f"agent {self.agent}: {self.first.replica} (token {self.first.token}) and "
            f"{self.second.replica} (token {self.second.token}) overlapped for {overlap * 1000:.1f} ms"
        )


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


def intervals(
    events: Iterable[dict[str, Any]], *, crashed: dict[str, float] | None = None
) -> list[Interval]:
    """Pair opens with closes by session; an unclosed session ends at its replica's crash
    time if given (a SIGKILLed process stops serving at once), else never."""
    crashed = crashed or {}
    opened: dict[str, dict[str, Any]] = {}
    out: list[Interval] = []
    for event in sorted(events, key=lambda e: e["t"]):
        if event["ev"] == "open":
            opened[event["session"]] = event
        elif event["ev"] == "close":
            start = opened.pop(event["session"], None)
            if start is not None:
                out.append(_interval(start, end=event["t"]))
    for start in opened.values():
        crash = crashed.get(start["replica"])
        out.append(
            _interval(
                start, end=crash if crash is not None and crash >= start["t"] else float("inf")
            )
        )
    return out


def _interval(start: dict[str, Any], *, end: float) -> Interval:
    return Interval(
        agent=start["agent"],
        replica=start["replica"],
        session=start["session"],
        token=int(start["token"]),
        start=float(start["t"]),
        end=end,
    )


def check(
    events: Iterable[dict[str, Any]], *, crashed: dict[str, float] | None = None
) -> list[Violation]:
    """Every pair of different replicas' overlapping sessions for one agent."""
    by_agent: dict[str, list[Interval]] = {}
    for interval in intervals(events, crashed=crashed):
        by_agent.setdefault(interval.agent, []).append(interval)
    violations = []
    for agent, spans in by_agent.items():
        spans.sort(key=lambda i: i.start)
        for i, first in enumerate(spans):
            for second in spans[i + 1 :]:
                if second.start >= first.end:
                    break
                if second.replica != first.replica:
                    violations.append(Violation(agent, first, second))
    return violations
