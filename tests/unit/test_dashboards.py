"""The Grafana dashboards: committed JSON is what `mooring._dashboards` builds, every panel
reads the `datasource` variable, every expression is valid PromQL (real promtool) naming
only catalogued families, and every catalogued family is on some dashboard."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from mooring import _dashboards as dashboards
from proto import catalog

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "mooring" / "monitoring" / "dashboards"
UIDS = ["mooring-overview", "mooring-failover", "mooring-sync", "mooring-errors"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BUILTINS = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h"}
"""Grafana's own variables, with values of the kind Grafana substitutes."""
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

NOT_ON_A_DASHBOARD: dict[str, str] = {
    # family name: why no dashboard shows it. Keep this short: a family worth exporting is
    # worth a panel.
    catalog.PROCESS_VIRTUAL_MEMORY.name: "exported because the process collector exports"
    " it: address space reserved (gRPC's threads, allocator arenas), most of it never used;"
    " resident memory is what runs out, and has its panel",
}

BUILT = dashboards.dashboards()
METRIC = re.compile(
    rf"\b(?:{'|'.join(sorted({f.collector or 'mooring' for f in catalog.FAMILIES}))})_[a-z_]+"
)
"""A metric name of ours, or of a library collector whose families the catalog lists."""


def expressions(built: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Every panel expression and every query variable's query."""
    for dashboard in built:
        yield from (expr for _, expr in dashboards.panels(dashboard))
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                yield variable["query"]["query"]


def concrete(dashboard: Mapping[str, Any], expr: str) -> str:
    """`expr` with the dashboard's variables and Grafana's set as Grafana would set them."""
    values = {v["name"]: ".*" for v in dashboard["templating"]["list"] if v["type"] == "query"}
    return dashboards.expand(expr, {**BUILTINS, **values})


def promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a rules file recording each expression."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not installed (scripts/setup.sh installs prometheus)")
        pytest.skip("promtool is not installed")
    rules = [{"record": f"panel:{n}", "expr": expr} for n, expr in enumerate(exprs)]
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    return subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )


def named(exprs: Iterable[str]) -> set[str]:
    """Metric names mentioned in expressions."""
    return {name for expr in exprs for name in METRIC.findall(expr)}


def family_of(name: str) -> catalog.Family | None:
    """The catalogued family a sample name belongs to (histograms: by their series)."""
    family = catalog.BY_NAME.get(name)
    if family is not None:
        return None if family.type == "histogram" else family  # a histogram has no bare series
    for suffix in HISTOGRAM_SERIES:
        base = catalog.BY_NAME.get(name.removesuffix(suffix))
        if name.endswith(suffix) and base is not None and base.type == "histogram":
            return base
    return None


def unknown(exprs: Iterable[str]) -> set[str]:
    return {name for name in named(exprs) if family_of(name) is None}


def uncovered(exprs: Iterable[str]) -> set[str]:
    shown = {family.name for name in named(exprs) if (family := family_of(name))}
    return {family.name for family in catalog.FAMILIES} - shown - set(NOT_ON_A_DASHBOARD)


# -- the checks ----------------------------------------------------------------------


def test_generation_unchanged() -> None:
    committed = sorted(p.name for p in COMMITTED.glob("*.json"))
    assert committed == sorted(f"{uid}.json" for uid in UIDS), (
        "dashboards added or removed: run `python -m mooring._dashboards"
        " mooring/monitoring/dashboards` and commit"
    )
    for dashboard in BUILT:
        path = COMMITTED / f"{dashboard['uid']}.json"
        assert path.read_text() == dashboards.dumps(dashboard), (
            f"{path.relative_to(ROOT)} is stale: run `python -m mooring._dashboards"
            " mooring/monitoring/dashboards` and commit"
        )


def test_write_all_writes_one_file_per_uid(tmp_path: Path) -> None:
    written = dashboards.write_all(tmp_path / "out")
    assert [p.name for p in written] == [f"{uid}.json" for uid in UIDS]
    assert all(p.read_text() == (COMMITTED / p.name).read_text() for p in written)


def test_stable_unique_uids() -> None:
    assert [d["uid"] for d in BUILT] == UIDS


@pytest.mark.parametrize("dashboard", BUILT, ids=UIDS)
def test_every_panel_and_target_reads_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for variable in variables.values():
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    assert dashboard["panels"], "a dashboard without panels"
    for panel in dashboard["panels"]:
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]


@pytest.mark.parametrize("dashboard", BUILT, ids=UIDS)
def test_panels_tile_the_grid(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                other = cells.setdefault((x, y), panel["title"])
                assert other == panel["title"], f"{panel['title']} overlaps {other}"


def test_every_expression_is_promql(tmp_path: Path) -> None:
    exprs = [concrete(d, e) for d in BUILT for _, e in dashboards.panels(d)]
    leftovers = [e for e in exprs if "$" in e]
    assert not leftovers, f"variables no dashboard defines: {leftovers}"
    result = promtool_check(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_every_metric_is_catalogued() -> None:
    assert named(expressions(BUILT)), "the name pattern matched nothing"
    assert unknown(expressions(BUILT)) == set()


def test_every_family_is_on_a_dashboard() -> None:
    assert uncovered(expressions(BUILT)) == set(), (
        "catalogued families no dashboard shows: add a panel, or to NOT_ON_A_DASHBOARD with why"
    )
    on_dashboards = {f.name for name in named(expressions(BUILT)) if (f := family_of(name))}
    stale = set(NOT_ON_A_DASHBOARD) & on_dashboards
    assert not stale, f"in NOT_ON_A_DASHBOARD but shown after all: {stale}"
    assert set(NOT_ON_A_DASHBOARD) <= set(catalog.BY_NAME)


# -- the checks catch what they are for ----------------------------------------------


def test_promtool_check_rejects_bad_promql(tmp_path: Path) -> None:
    good = promtool_check(["sum(rate(mooring_handoffs_total[1m]))"], tmp_path)
    assert good.returncode == 0, good.stdout + good.stderr
    for bad in ["sum(rate(mooring_handoffs_total[1m])", "rate(mooring_handoffs_total[$x])"]:
        assert promtool_check([bad], tmp_path).returncode != 0, bad


def test_concrete_leaves_undefined_variables() -> None:
    assert (
        concrete(BUILT[0], 'x{instance=~"$instance"}[$__rate_interval]') == 'x{instance=~".*"}[1m]'
    )
    assert "$nope" in concrete(BUILT[0], "rate(x[$nope])")
    assert dashboards.expand("a[${w}] $w $v", {"w": "5m"}) == "a[5m] 5m $v"


def test_name_checks_catch_strays() -> None:
    assert unknown(
        [
            "rate(mooring_nope_total[1m])",
            "mooring_failover_seconds",  # a histogram has no bare series
            "mooring_leader_bucket",  # a gauge has no buckets
            "mooring_handoffs",  # counters are named with _total
            "rate(mooring_failover_seconds_bucket[1m]) + mooring_failover_seconds_sum",
            "process_open_fd / process_max_fds",  # a library's names are checked too
        ]
    ) == {
        "mooring_nope_total",
        "mooring_failover_seconds",
        "mooring_leader_bucket",
        "mooring_handoffs",
        "process_open_fd",
    }
    assert "mooring_leader" in uncovered(["mooring_shard_epoch"])
    assert catalog.FAILOVER_SECONDS.name not in uncovered(["mooring_failover_seconds_count"])
