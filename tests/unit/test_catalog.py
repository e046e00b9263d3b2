"""The metric catalog: naming conventions, the generated docs page, no name outside it."""

from __future__ import annotations

import re
from pathlib import Path

import prometheus_client as prom

from mooring import _monitoring as monitoring
from proto import catalog

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("proto", "election", "principal", "agent", "mooring")


def test_names_follow_prometheus_conventions() -> None:
    names = [f.name for f in catalog.FAMILIES]
    assert len(names) == len(set(names))
    for family in catalog.FAMILIES:
        assert re.fullmatch(r"mooring_[a-z][a-z0-9_]*", family.name), family.name
        assert family.name.endswith("_total") == (family.type == "counter"), family.name
        if family.unit:
            assert family.name.removesuffix("_total").endswith(f"_{family.unit}"), family.name
        if family.type == "histogram":
            assert family.unit == "seconds" and family.buckets, family.name
        if family.labels:
            assert family.cardinality, f"{family.name}: say what bounds its series"
        assert family.help.endswith((".", ")")), family.name
        assert family.components


def test_docs_page_is_generated_from_the_catalog() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    assert page == monitoring.metrics_doc(), "docs/metrics.md is stale: python3 scripts/gendocs.py"
    for family in catalog.FAMILIES:
        assert f"`{family.name}`" in page


def test_no_metric_name_is_spelled_outside_the_catalog() -> None:
    spelled = re.compile(r"""["']mooring_[a-z_]+["']""")
    offenders = [
        f"{path.relative_to(ROOT)}:{n}"
        for package in SOURCES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "_catalog.py" and "v1" not in path.parts
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if spelled.search(line) and "mooring_fields" not in line
    ]
    assert offenders == []


def test_collectors_come_out_as_catalogued_without_created_series() -> None:
    registry = prom.CollectorRegistry()
    made = {
        "counter": catalog.counter,
        "gauge": catalog.gauge,
        "histogram": catalog.histogram,
    }
    for family in catalog.FAMILIES:
        metric = made[family.type](registry, family)  # type: ignore[operator]
        if not family.labels:
            (metric.inc if family.type != "histogram" else metric.observe)(1)
    text = prom.generate_latest(registry).decode()
    assert "_created" not in text
    for family in catalog.FAMILIES:
        assert f"# TYPE {family.name} {family.type}" in text
        assert f"# HELP {family.name} {family.help}" in text


def test_a_family_is_made_only_as_its_type() -> None:
    registry = prom.CollectorRegistry()
    try:
        catalog.counter(registry, catalog.LEADER)
    except TypeError as err:
        assert "mooring_leader is a gauge, not a counter" in str(err)
    else:
        raise AssertionError("a gauge was made as a counter")
