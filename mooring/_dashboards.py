"""Mooring's Grafana dashboards, built as plain JSON from the metric catalog: the set,
its committed files, and what tests and scripts read off a dashboard.

Four dashboards, each with a stable uid and a module of its own: `mooring-overview`
(`_overviewboard`: who leads, who is a member, agents and sessions per replica),
`mooring-failover` (`_failoverboard`: how long agents take to come back, what moved
them, the election and its lease), `mooring-sync` (`_syncboard`: events both ways,
resyncs, acknowledgements, applies) and `mooring-errors` (`_errorsboard`: what failed,
certificates, agents not seen, open files, memory, CPU and restarts per process). Every
panel and target reads the `datasource` variable; principal panels filter by the
`instance` variable, which lists every replica whatever its scrape job is called
(`mooring/_grafana.py` builds panels, layout and variables).

The committed files in `mooring/monitoring/dashboards/` are this module's output
(`python -m mooring._dashboards mooring/monitoring/dashboards`); a test fails when they
differ. Expressions name families by the catalog's constants, so a renamed family breaks
the build here rather than a panel in production.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mooring import _errorsboard as errorsboard
from mooring import _failoverboard as failoverboard
from mooring import _grafana as grafana
from mooring import _overviewboard as overviewboard
from mooring import _syncboard as syncboard

__all__ = [
    "DASHBOARDS",
    "dashboards",
    "expand",
    "main",
    "panels",
    "write_all",
]


DASHBOARDS = (
    overviewboard.dashboard,
    failoverboard.dashboard,
    syncboard.dashboard,
    errorsboard.dashboard,
)
"""The builders, in the order the dashboards are listed."""


def dashboards() -> list[grafana.Json]:
    """Every dashboard, freshly built."""
    return [make() for make in DASHBOARDS]


def panels(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, in layout order."""
    return [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel["targets"]]


def expand(expr: str, variables: Mapping[str, str]) -> str:
    """`expr` with Grafana variables (`$name`, `${name}`) replaced from `variables`;
    unknown ones are left as they are."""

    def value(match: re.Match[str]) -> str:
        return variables.get(match.group(1) or match.group(2), match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dumps(dashboard: Mapping[str, Any]) -> str:
    """The dashboard as its committed file spells it."""
    return json.dumps(dashboard, indent=2) + "\n"


def write_all(directory: str | Path) -> list[Path]:
    """Write `<uid>.json` for every dashboard into `directory`; return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in dashboards():
        path = out / f"{dashboard['uid']}.json"
        path.write_text(dumps(dashboard))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mooring._dashboards OUTDIR", file=sys.stderr)
        return 2
    for path in write_all(args[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
