"""Fuzz targets report how many examples each ran: per test in its report's user
properties (they reach the xdist controller), totalled in the terminal summary."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fuzz import _budget as budget

PROPERTY = "fuzz_examples"


@pytest.fixture(autouse=True)
def _count_examples(request: pytest.FixtureRequest) -> Iterator[None]:
    name = request.node.originalname
    before = budget.COUNTS[name]
    yield
    if ran := budget.COUNTS[name] - before:
        request.node.user_properties.append((PROPERTY, ran))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = [
        (report.nodeid, value)
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "teardown"
        for key, value in getattr(report, "user_properties", ())
        if key == PROPERTY
    ]
    if not ran:
        return
    terminalreporter.section("fuzz examples")
    for nodeid, count in sorted(ran):
        terminalreporter.write_line(f"{count:>8}  {nodeid}")
    terminalreporter.write_line(f"{sum(c for _, c in ran):>8}  in all (x{budget.scale()})")
