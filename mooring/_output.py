"""How the CLI's listing commands print: aligned tables, JSON or YAML, kubectl-style ages,
and the SYNC and HEALTH columns of a reported Argo CD status."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["age", "emit", "print_table", "sync_and_health"]


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def emit(data: Any, fmt: str) -> None:
    """`data` as JSON or YAML on stdout."""
    if fmt == "yaml":
        import yaml

        print(yaml.safe_dump(data, sort_keys=True, default_flow_style=False), end="")
    else:
        print(json.dumps(data, indent=2, sort_keys=True))


def sync_and_health(status: Any) -> tuple[str, str]:
    """(SYNC, HEALTH) of a reported Argo CD status; "-" for what it does not say."""
    if not isinstance(status, Mapping):
        return "-", "-"

    def said(part: str) -> str:
        got = status.get(part)
        return str((got.get("status") if isinstance(got, Mapping) else None) or "-")

    return said("sync"), said("health")


def age(stamp: str, now: float | None = None) -> str:
    """kubectl's way of saying how long ago an RFC 3339 time was (5s, 12m, 3h, 4d)."""
    import datetime
    import time

    try:
        then = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - then))
    for unit, size, below in (("s", 1, 120), ("m", 60, 120 * 60), ("h", 3600, 48 * 3600)):
        if seconds < below:
            return f"{seconds // size}{unit}"
    return f"{seconds // 86400}d"
