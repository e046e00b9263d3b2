"""A small Grafana dashboard builder: panels, grid layout, variables, PromQL helpers.

Plain JSON (dicts) in Grafana's schema; every panel and target reads the `datasource`
variable. Used by `mooring._dashboards` and its four dashboard modules (`_overviewboard`, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from mooring import _state as state
from proto import catalog

__all__ = [
    "AGENTS",
    "DATASOURCE",
    "PRINCIPAL",
    "PRINCIPALS",
    "RARE",
    "RATE",
    "SCHEMA_VERSION",
    "WIDTH",
    "Json",
    "build",
    "counted",
    "datasource_variable",
    "heatmap",
    "instance_variable",
    "layout",
    "per_replica",
    "quantile",
    "quantiles",
    "rated",
    "sel",
    "sel_up",
    "stat",
    "table",
    "target",
    "timeseries",
]

Json = dict[str, Any]

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
"""What every panel and target names as its data source."""
SCHEMA_VERSION = 39
WIDTH = 24
"""Grafana's grid is 24 columns wide."""

PRINCIPAL = f'job="{state.PRINCIPAL_JOB}", instance=~"$instance"'
"""Matchers for the principal replicas chosen in the `instance` variable."""
PRINCIPALS = f'job="{state.PRINCIPAL_JOB}"'
"""Matchers for every principal replica (cluster-wide figures ignore the variable)."""
AGENTS = f'job="{state.AGENT_JOB}"'
"""Matchers for the agents (each scraped on its own; summed, the fleet may be large)."""
RARE = "5m"
"""Window for counts of rare events (failovers, errors): a spike stays visible for 5m."""
RATE = "$__rate_interval"
"""Window for rates of frequent events: Grafana's, at least four scrape intervals."""


# -- panels --------------------------------------------------------------------------


def target(expr: str, *, legend: str = "", instant: bool = False, fmt: str = "") -> Json:
    """One Prometheus query of a panel (its refId is set when the panel is built)."""
    out: Json = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
    if instant:
        out["instant"] = True
        out["range"] = False
    else:
        out["range"] = True
    if fmt:
        out["format"] = fmt
    return out


def timeseries(
    title: str,
    targets: Sequence[Json],
    *,
    description: str = "",
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    minimum: float | None = 0,
    stack: bool = False,
) -> Json:
    """A line graph of each target's series over the dashboard's time range."""
    defaults: Json = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if minimum is not None:
        defaults["min"] = minimum
    return _panel(
        "timeseries",
        title,
        targets,
        description=description,
        width=width,
        height=height,
        field_config={"defaults": defaults, "overrides": []},
        options={
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    )


def stat(
    title: str,
    expr: str,
    *,
    description: str = "",
    unit: str = "short",
    width: int = 4,
    height: int = 4,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
) -> Json:
    """One big number: the last value of one series, coloured by `thresholds`."""
    return _panel(
        "stat",
        title,
        [target(expr)],
        description=description,
        width=width,
        height=height,
        field_config={
            "defaults": {
                "unit": unit,
                "thresholds": {
                    "mode": "absolute",
                    "steps": [{"value": value, "color": color} for value, color in thresholds],
                },
            },
            "overrides": [],
        },
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    )


def table(
    title: str,
    expr: str,
    *,
    description: str = "",
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    sort: str = "Value",
    descending: bool = False,
) -> Json:
    """The current value of each series, one row each with its labels as columns."""
    return _panel(
        "table",
        title,
        [target(expr, instant=True, fmt="table")],
        description=description,
        width=width,
        height=height,
        field_config={"defaults": {"unit": unit}, "overrides": []},
        options={"showHeader": True, "sortBy": [{"displayName": sort, "desc": descending}]},
        transformations=[
            {"id": "organize", "options": {"excludeByName": {"Time": True, "__name__": True}}}
        ],
    )


def heatmap(
    title: str,
    expr: str,
    *,
    description: str = "",
    unit: str = "s",
    width: int = 12,
    height: int = 8,
) -> Json:
    """Histogram buckets over time (`expr` is a rate of `_bucket` summed by `le`)."""
    return _panel(
        "heatmap",
        title,
        [target(expr, legend="{{le}}", fmt="heatmap")],
        description=description,
        width=width,
        height=height,
        field_config={"defaults": {}, "overrides": []},
        options={
            "calculate": False,
            "cellGap": 1,
            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
            "yAxis": {"unit": unit},
            "legend": {"show": True},
            "tooltip": {"mode": "single", "yHistogram": False},
        },
    )


def _panel(
    kind: str,
    title: str,
    targets: Sequence[Json],
    *,
    description: str,
    width: int,
    height: int,
    field_config: Json,
    options: Json,
    transformations: Sequence[Json] = (),
) -> Json:
    if not 0 < width <= WIDTH:
        raise ValueError(f"panel {title!r}: width {width} is not within 1..{WIDTH}")
    refs = [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": height, "w": width, "x": 0, "y": 0},
        "fieldConfig": field_config,
        "options": options,
        "targets": refs,
        "transformations": list(transformations),
    }


def layout(items: Iterable[Json]) -> list[Json]:
    """Number the panels and place them left to right, wrapping at the grid's width."""
    out: list[Json] = []
    x = y = row_height = 0
    for number, item in enumerate(items, start=1):
        w, h = item["gridPos"]["w"], item["gridPos"]["h"]
        if x + w > WIDTH:
            x, y, row_height = 0, y + row_height, 0
        out.append({"id": number, **item, "gridPos": {"h": h, "w": w, "x": x, "y": y}})
        x += w
        row_height = max(row_height, h)
    return out


# -- expressions ---------------------------------------------------------------------


def sel(family: catalog.Family, matchers: str, *, series: str = "") -> str:
    """`name{matchers}` for a family (`series`: `_bucket`, `_sum` or `_count`)."""
    if series and f"{family.name}{series}" not in family.series():
        raise ValueError(f"{family.name} has no {series} series")
    return f"{family.name}{series}{{{matchers}}}"


def sel_up(matchers: str) -> str:
    """Prometheus' own scrape health series for the targets `matchers` choose."""
    return f"up{{{matchers}}}"


def quantile(q: float, family: catalog.Family, matchers: str, *, window: str, by: str = "") -> str:
    """The q-quantile of a histogram's observations within `window`, per `by` labels."""
    if family.type != "histogram":
        raise TypeError(f"{family.name} is a {family.type}, not a histogram")
    labels = ", ".join(["le", *filter(None, [by])])
    buckets = sel(family, matchers, series="_bucket")
    return f"histogram_quantile({q}, sum by ({labels}) (rate({buckets}[{window}])))"


def quantiles(
    family: catalog.Family, matchers: str, *, window: str, by: str = "", prefix: str = ""
) -> list[Json]:
    """p50, p90 and p99 targets for a histogram."""
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        target(
            quantile(q, family, matchers, window=window, by=by),
            legend=f"{prefix}p{round(q * 100)}{suffix}",
        )
        for q in (0.5, 0.9, 0.99)
    ]


def counted(family: catalog.Family, matchers: str, *, by: str = "", window: str = RARE) -> str:
    """How many times a counter went up within `window`, summed by `by` labels."""
    if family.type != "counter":
        raise TypeError(f"{family.name} is a {family.type}, not a counter")
    return f"{_sum(by)}(increase({sel(family, matchers)}[{window}]))"


def rated(family: catalog.Family, matchers: str, *, by: str = "") -> str:
    """A counter's per-second rate over Grafana's rate interval, summed by `by` labels."""
    if family.type != "counter":
        raise TypeError(f"{family.name} is a {family.type}, not a counter")
    return f"{_sum(by)}(rate({sel(family, matchers)}[{RATE}]))"


def _sum(by: str) -> str:
    return f"sum by ({by}) " if by else "sum"


def per_replica(family: catalog.Family) -> str:
    """A principal gauge, one series per replica."""
    return f"max by (instance) ({sel(family, PRINCIPAL)})"


# -- dashboards ----------------------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def instance_variable() -> Json:
    """Every principal replica that exported build info in the time range, by `instance`."""
    query = f'label_values({catalog.BUILD_INFO.name}{{component="principal"}}, instance)'
    return {
        "name": "instance",
        "label": "Replica",
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "hide": 0,
        "options": [],
    }


def build(uid: str, title: str, description: str, items: Iterable[Json]) -> Json:
    """A whole dashboard: variables, links to the other Mooring dashboards, panels."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "id": None,
        "version": 1,
        "schemaVersion": SCHEMA_VERSION,
        "editable": True,
        "graphTooltip": 1,
        "tags": ["mooring"],
        "timezone": "utc",
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "Mooring",
                "tags": ["mooring"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "templating": {"list": [datasource_variable(), instance_variable()]},
        "panels": layout(items),
    }
