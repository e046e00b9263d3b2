#!/usr/bin/env python3
"""Render the key panels of Mooring's Grafana dashboards to PNGs, without Grafana.

    python3 scripts/render_dashboards.py --prometheus http://127.0.0.1:9090 --out /tmp/png

For each dashboard that `mooring._dashboards` builds, runs its key panels' expressions as
range queries (/api/v1/query_range) over the last --minutes against a Prometheus that
scrapes a Mooring cluster, and draws them as a grid of small time-series plots titled like
the panels, one PNG per dashboard (`<uid>.png`), with the times in UTC. Grafana's
variables are given values first: `$instance` from --instance, `$__rate_interval` from
--rate-interval. Prints each path written; fails with one line on stderr when Prometheus
cannot be reached or a query fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as ticker  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from mooring import _dashboards as dashboards  # noqa: E402

KEY_PANELS: dict[str, tuple[str, ...]] = {
    "mooring-overview": (
        "Leader per replica",
        "Shard epoch per replica",
        "Replicas up and members",
        "Agents registered and owned per replica",
        "Sessions open per replica",
        "Agents connected",
    ),
    "mooring-failover": (
        "Failover time",
        "Failover time distribution",
        "Failovers and sessions welcomed in 5m",
        "Handoffs in 5m",
        "Redirects in 5m",
        "Sessions closed by reason in 5m",
    ),
    "mooring-sync": (
        "Events sent per replica",
        "Events sent by type (principal)",
        "Events received by type (principal)",
        "Resync time",
        "Event acknowledgement time",
        "Events applied by agents",
    ),
    "mooring-errors": (
        "Hub store errors in 5m",
        "Session registry errors in 5m",
        "Self-fence closes in 5m",
        "Sessions rejected by reason in 5m",
        "Connect errors by reason in 5m",
        "Apply errors in 5m",
    ),
}
"""Per dashboard uid, the panels drawn (all time series) unless --all is given."""
LINE_STYLES = ("-", "--", ":", "-.")
UNITS = {"s": "seconds", "dtdurations": "seconds", "ops": "per second"}
TIMEOUT = 10.0
"""Seconds to wait for Prometheus' answer to one request."""

Json = dict[str, Any]
Series = list[tuple[dict[str, str], list[tuple[float, float]]]]


class RenderError(Exception):
    """Prometheus cannot be reached, or answered a query with an error."""


def get(base: str, path: str, params: Mapping[str, str]) -> Any:
    """GET a Prometheus API path; the `data` of its answer."""
    query = urllib.parse.urlencode(params)
    url = f"{base.rstrip('/')}{path}" + (f"?{query}" if query else "")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            body = json.load(response)
    except urllib.error.HTTPError as err:  # 400/422/503 carry Prometheus' own error
        try:
            body = json.load(err)
        except ValueError:
            raise RenderError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise RenderError(f"cannot reach Prometheus at {base}: {reason}") from err
    except ValueError as err:
        raise RenderError(f"{base} did not answer with Prometheus' JSON: {err}") from err
    if body.get("status") != "success":
        raise RenderError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
    return body["data"]


def query_range(base: str, expr: str, *, start: float, end: float, step: float) -> Series:
    data = get(
        base,
        "/api/v1/query_range",
        {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
    )
    return [
        (dict(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
        for item in data["result"]
    ]


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    """Grafana's legend: `{{label}}` replaced; with no format, the label set."""
    if not fmt:
        inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
        return f"{{{inner}}}"
    out = fmt
    for key, value in labels.items():
        out = out.replace(f"{{{{{key}}}}}", value)
    return out


def days(times: Sequence[float]) -> list[float]:
    """Unix times as matplotlib's date numbers: days since its epoch, 1970-01-01 UTC."""
    return [t / 86400.0 for t in times]


def gapped(points: Sequence[tuple[float, float]], *, step: float) -> list[tuple[float, float]]:
    """The points with a NaN wherever samples are missing, so no line is drawn across a gap
    (a replica down, a series not yet exported)."""
    out: list[tuple[float, float]] = []
    for t, v in points:
        if out and t - out[-1][0] > 1.5 * step:
            out.append((out[-1][0] + step, math.nan))
        out.append((t, v))
    return out


def plot_lines(ax: Axes, results: Sequence[tuple[Json, Series]], *, step: float) -> int:
    """One line a series; each target of the panel in a line style of its own, and each
    instance in a colour of its own (the same in every target)."""
    drawn = 0
    colours: dict[str, str] = {}
    integral = True
    highest = -math.inf
    for number, (target, series) in enumerate(results):
        style = LINE_STYLES[number % len(LINE_STYLES)]
        for labels, points in sorted(series, key=lambda s: legend(target["legendFormat"], s[0])):
            shown = gapped(points, step=step)
            key = labels.get("instance") or legend(target["legendFormat"], labels)
            colour = colours.setdefault(key, f"C{len(colours) % 10}")
            finite = [v for _, v in points if math.isfinite(v)]
            integral = integral and all(v.is_integer() for v in finite)
            highest = max([highest, *finite])
            ax.plot(
                days([t for t, _ in shown]),
                [v for _, v in shown],
                label=legend(target["legendFormat"], labels),
                linewidth=1.4,
                linestyle=style,
                color=colour,
            )
            drawn += 1
    if drawn and integral:  # counts and flags: no 2.25 agents on the axis
        ax.yaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    if drawn and highest <= 0:  # all zero: a 0..1 axis, not -0.05..0.05
        ax.set_ylim(-0.05, 1)
    if 0 < drawn <= 16:
        ax.legend(
            fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=min(drawn, 3),
            frameon=False,
        )
    elif drawn:
        ax.text(0.99, 0.98, f"{drawn} series", transform=ax.transAxes, ha="right", va="top")
    return drawn if math.isfinite(highest) else 0  # only NaN (no observations): no data


def plot_heatmap(ax: Axes, results: Sequence[tuple[Json, Series]], *, step: float) -> int:
    """Cumulative `le` buckets, drawn per bucket (each minus the one below it)."""
    series = results[0][1] if results else []
    if not series:
        return 0
    rows = sorted(series, key=lambda s: float(s[0].get("le", "inf")))
    times = sorted({t for _, points in rows for t, _ in points})
    index = {t: i for i, t in enumerate(times)}
    grid = []
    below = [0.0] * len(times)
    for _, points in rows:
        cumulative = [0.0] * len(times)
        for t, v in points:
            cumulative[index[t]] = 0.0 if math.isnan(v) else v
        grid.append([max(c - b, 0.0) for c, b in zip(cumulative, below, strict=True)])
        below = cumulative
    mesh = ax.pcolormesh(days(times), range(len(rows)), grid, cmap="Oranges", shading="nearest")
    ax.set_yticks(range(len(rows)), [labels.get("le", "?") for labels, _ in rows], fontsize=6)
    ax.set_ylabel("le (seconds)", fontsize=7)
    ax.figure.colorbar(mesh, ax=ax, label="per second")
    return len(rows)


def render(
    dashboard: Json,
    *,
    base: str,
    out: Path,
    titles: Sequence[str] | None,
    start: float,
    end: float,
    step: float,
    variables: Mapping[str, str],
) -> Path:
    chosen = [p for p in dashboard["panels"] if p["type"] != "table"]
    if titles is not None:
        by_title = {p["title"]: p for p in chosen}
        missing = [t for t in titles if t not in by_title]
        if missing:
            raise RenderError(f"{dashboard['uid']} has no panels titled {missing}")
        chosen = [by_title[t] for t in titles]
    columns = 3 if len(chosen) > 4 else 2
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(6.2 * columns, 3.8 * rows), squeeze=False, layout="constrained"
    )
    for ax, panel in zip(axes.flat, chosen, strict=False):
        results = []
        for target in panel["targets"]:
            expr = dashboards.expand(target["expr"], variables)
            try:
                results.append((target, query_range(base, expr, start=start, end=end, step=step)))
            except RenderError as err:
                raise RenderError(f"panel {panel['title']!r}: {expr}: {err}") from err
        draw = plot_heatmap if panel["type"] == "heatmap" else plot_lines
        if not draw(ax, results, step=step):
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", color="grey")
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        if panel["type"] != "heatmap" and unit in UNITS:
            ax.set_ylabel(UNITS[unit], fontsize=7)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_xlim(*days([start, end]))
        ax.xaxis.set_major_formatter(
            mdates.DateFormatter("%H:%M:%S", tz=datetime.UTC)  # type: ignore[no-untyped-call]
        )
        ax.set_xlabel("UTC", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.set_visible(False)
    stamp = datetime.datetime.fromtimestamp(end, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
    fig.suptitle(
        f"{dashboard['title']}: {round((end - start) / 60)} min to {stamp} UTC, step {step:g}s",
        fontsize=12,
    )
    path = out / f"{dashboard['uid']}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    p.add_argument("--out", required=True, type=Path, help="directory for the PNGs")
    p.add_argument("--minutes", type=float, default=10, help="time range, minutes (default 10)")
    p.add_argument("--step", type=float, default=5, help="query resolution, seconds (default 5)")
    p.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    p.add_argument("--instance", default=".*", help="regex for $instance (default: all)")
    p.add_argument("--all", action="store_true", help="every graph panel, not only key ones")
    p.add_argument("--dashboard", action="append", help="uid to render (default: all)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.step <= 0:
        p.error("--minutes and --step must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    end = time.time()
    start = end - args.minutes * 60
    variables = {
        "instance": args.instance,
        "__rate_interval": args.rate_interval,
        "__interval": f"{args.step:g}s",
        "__range": f"{round(args.minutes * 60)}s",
    }
    built = dashboards.dashboards()
    if args.dashboard:
        unknown = set(args.dashboard) - {d["uid"] for d in built}
        if unknown:
            print(f"render_dashboards: error: no dashboard {sorted(unknown)}", file=sys.stderr)
            return 2
        built = [d for d in built if d["uid"] in args.dashboard]
    try:
        get(args.prometheus, "/api/v1/status/buildinfo", {})
        args.out.mkdir(parents=True, exist_ok=True)
        for dashboard in built:
            path = render(
                dashboard,
                base=args.prometheus,
                out=args.out,
                titles=None if args.all else KEY_PANELS.get(dashboard["uid"]),
                start=start,
                end=end,
                step=args.step,
                variables=variables,
            )
            print(path)
    except RenderError as err:
        print(f"render_dashboards: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
