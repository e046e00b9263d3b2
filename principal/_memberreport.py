"""What a replica says of itself in its member record: whether it can hold agents, and
the agents it has a session with (for `mooring status`)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MemberReport", "sessions_report"]

SESSIONS_REPORT = 1.0
"""Seconds between updates of the sessions this replica reports in its member record."""
SESSIONS_LISTED = 2000
"""At most this many agent names in that report (beyond it, only their count)."""
SERVING_POLL = 0.1
"""Seconds between looks at whether this replica can hold agents (for its member record)."""


def sessions_report(agents: Iterable[str]) -> dict[str, Any]:
    """The agents this replica has a session with, for `mooring status` (the names up
    to SESSIONS_LISTED: a member record is rewritten every second)."""
    names = sorted(agents)
    report: dict[str, Any] = {"count": len(names)}
    if len(names) <= SESSIONS_LISTED:
        report["agents"] = names
    return report


@dataclasses.dataclass(frozen=True)
class MemberReport:
    """Where the report is read from and written to; `run()` is the replica's task."""

    fenced: Callable[[], bool]  # the replica cannot confirm its liveness: it holds no agent
    agents: Callable[[], Iterable[str]]  # the agents with a session here
    set_serving: Callable[[bool], None]  # the member record's serving flag
    publish: Callable[[dict[str, Any]], None]  # the member record's sessions entry

    async def run(self) -> None:
        """While this replica cannot confirm its liveness in the session registry it can
        hold no agent, so its agents would wait for it however long that lasts: say so
        in the member record, and the leader maps them to replicas that can (once that
        has lasted a second: see election._shardmap.SERVING_STABLE), and back after."""
        reported = 0.0
        while True:
            await asyncio.sleep(SERVING_POLL)
            self.set_serving(not self.fenced())
            now = time.monotonic()
            if now - reported >= SESSIONS_REPORT:
                reported = now
                self.publish(sessions_report(self.agents()))
