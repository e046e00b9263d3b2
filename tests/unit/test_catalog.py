"""The metric catalog: naming conventions, the generated docs page, no name outside it."""

from __future__ import annotations

import re
from pathlib import Path

import prometheus_client as prom
from prometheus_client import parser as prom_parser

from mooring import _monitoring as monitoring
from proto import catalog

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("proto", "election", "principal", "agent", "mooring")


OURS = [f for f in catalog.FAMILIES if not f.collector]
PROCESS = [f for f in catalog.FAMILIES if f.collector == "process"]


def test_names_follow_prometheus_conventions() -> None:
    names = [f.name for f in catalog.FAMILIES]
    assert len(names) == len(set(names))
    for family in catalog.FAMILIES:
        prefix = family.collector or "mooring"  # a library's families keep its names
        assert re.fullmatch(rf"{prefix}_[a-z][a-z0-9_]*", family.name), family.name
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
    prefixes = "|".join(sorted({f.collector or "mooring" for f in catalog.FAMILIES}))
    spelled = re.compile(rf"""["'](?:{prefixes})_[a-z_]+["']""")
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
    for family in OURS:
        metric = made[family.type](registry, family)  # type: ignore[operator]
        if not family.labels:
            (metric.inc if family.type != "histogram" else metric.observe)(1)
    text = prom.generate_latest(registry).decode()
    assert "_created" not in text
    for family in OURS:
        assert f"# TYPE {family.name} {family.type}" in text
        assert f"# HELP {family.name} {family.help}" in text


def test_the_process_collector_exports_exactly_its_catalogued_families() -> None:
    """Names, types and help as catalogued, and each family once on a registry however
    often it is asked for (a process hosting several agents has a registry each)."""
    first, second = prom.CollectorRegistry(), prom.CollectorRegistry()
    for registry in (first, first, second):
        catalog.register_process_collector(registry)
    catalogued = sorted((f.base, f.type, f.help) for f in PROCESS)
    assert catalogued, "no family is catalogued as the process collector's"
    for registry in (first, second):
        text = prom.generate_latest(registry).decode()
        exported = sorted(
            (f.name, f.type, f.documentation)
            for f in prom_parser.text_string_to_metric_families(text)
        )
        assert exported == catalogued
        assert "_created" not in text


def test_a_family_is_made_only_as_its_type() -> None:
    registry = prom.CollectorRegistry()
    try:
        catalog.counter(registry, catalog.LEADER)
    except TypeError as err:
        assert "mooring_leader is a gauge, not a counter" in str(err)
    else:
        raise AssertionError("a gauge was made as a counter")


def test_a_library_collectors_family_is_not_made_here() -> None:
    try:
        catalog.gauge(prom.CollectorRegistry(), catalog.PROCESS_OPEN_FDS)
    except TypeError as err:
        assert "process_open_fds is exported by prometheus-client's process collector" in str(err)
    else:
        raise AssertionError("a process collector's family was made as a gauge")
