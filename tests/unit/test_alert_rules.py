"""The alert rules (mooring/monitoring/alerts.yaml) are valid, tested and documented.

promtool accepts the rules and passes their unit tests (tests/monitoring/alerts_test.yaml).
Every rule has the shape of STYLE item 21 (`labels.severity` warning|critical; summary,
description, runbook_url), a runbook page with the sections an on-call engineer needs,
a row in docs/runbooks/README.md, promtool cases where it fires (per severity) and where
it does not, and names only metric families of `proto.catalog`. The checkers return a
list of problems, and each one is also shown failing on a broken copy of the real files.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proto import catalog

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "mooring" / "monitoring" / "alerts.yaml"
TESTS = ROOT / "tests" / "monitoring" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"

SEVERITIES = frozenset({"warning", "critical"})
ANNOTATIONS = ("summary", "description", "runbook_url")
HEADINGS = {
    "meaning": re.compile(r"^##\s+What it means\s*$", re.M | re.I),
    "checking": re.compile(r"^##\s+How to check\s*$", re.M | re.I),
    "fixing": re.compile(r"^##\s+How to fix\s*$", re.M | re.I),
}
METRIC = re.compile(
    rf"\b(?:{'|'.join(sorted({f.collector or 'mooring' for f in catalog.FAMILIES}))})_[a-z_]+"
)
"""A metric name of ours, or of a library collector whose families the catalog lists."""
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
PROMTOOL_TIMEOUT = 120


# ------------------------------------------------------------------ loading


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict), f"{path}: not a YAML mapping"
    return doc


def alert_rules(rules: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                yield rule


def alert_tests(tests: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for case in tests.get("tests") or []:
        yield from case.get("alert_rule_test") or []


# ------------------------------------------------------------------ checkers


def rule_problems(rules: dict[str, Any]) -> list[str]:
    """STYLE 21's shape: severity warning|critical, the three annotations, an expr."""
    problems = []
    seen: set[tuple[str, str]] = set()
    names = 0
    for rule in alert_rules(rules):
        names += 1
        name = rule["alert"]
        if not str(rule.get("expr") or "").strip():
            problems.append(f"{name}: no expr")
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(
                f"{name}: labels.severity is {severity!r}, not one of {sorted(SEVERITIES)}"
            )
        if (name, severity) in seen:
            problems.append(f"{name}: two rules with severity {severity!r}")
        seen.add((name, severity))
        annotations = rule.get("annotations") or {}
        for key in ANNOTATIONS:
            if not str(annotations.get(key) or "").strip():
                problems.append(f"{name}: no annotations.{key}")
    if names == 0:
        problems.append("no alert rule at all")
    return problems


def runbook_problems(rules: dict[str, Any], runbooks: Path) -> list[str]:
    """Each runbook_url ends with docs/runbooks/<alert>.md, a page that exists there with
    headings for what the alert means, how to check and how to fix."""
    problems = []
    for rule in alert_rules(rules):
        name = rule["alert"]
        url = str((rule.get("annotations") or {}).get("runbook_url") or "")
        if not url.endswith(f"docs/runbooks/{name}.md"):
            problems.append(
                f"{name}: runbook_url {url!r} does not end with docs/runbooks/{name}.md"
            )
        page = runbooks / f"{name}.md"
        if not page.is_file():
            problems.append(f"{name}: no runbook page {page}")
            continue
        text = page.read_text()
        for what, heading in HEADINGS.items():
            if not heading.search(text):
                problems.append(f"{page.name}: no heading for {what} ({heading.pattern})")
    return problems


def metric_problems(rules: dict[str, Any]) -> list[str]:
    """Every mooring_* name in an expr is a catalogued family (a histogram's series names
    its family with _bucket/_sum/_count; counters are named with _total)."""
    problems = []
    for rule in alert_rules(rules):
        for name in sorted(set(METRIC.findall(str(rule.get("expr") or "")))):
            if name in catalog.BY_NAME:
                if catalog.BY_NAME[name].type == "histogram":
                    problems.append(
                        f"{rule['alert']}: {name} is a histogram: use its _bucket series"
                    )
                continue
            family = catalog.BY_NAME.get(HISTOGRAM_SERIES.sub("", name))
            if family is None or family.type != "histogram":
                problems.append(f"{rule['alert']}: {name} is not a metric family in proto.catalog")
    return problems


def coverage_problems(rules: dict[str, Any], tests: dict[str, Any]) -> list[str]:
    """Per rule: a promtool case where it fires (an exp_alerts entry with the rule's
    severity) and one where it does not (exp_alerts empty); no case for an unknown alert."""
    firing: set[tuple[str, str]] = set()
    quiet: set[str] = set()
    tested: set[str] = set()
    for case in alert_tests(tests):
        name = case.get("alertname")
        tested.add(name)
        expected = case.get("exp_alerts") or []
        if not expected:
            quiet.add(name)
        for alert in expected:
            firing.add((name, (alert.get("exp_labels") or {}).get("severity")))
    problems = []
    names = set()
    for rule in alert_rules(rules):
        name, severity = rule["alert"], (rule.get("labels") or {}).get("severity")
        names.add(name)
        if (name, severity) not in firing:
            problems.append(f"{name} ({severity}): no promtool case where it fires")
        if name not in quiet:
            problems.append(f"{name}: no promtool case where it does not fire")
    for name in sorted(tested - names, key=str):
        problems.append(f"promtool case for {name!r}, which no rule defines (it can only pass)")
    return problems


def rule_files_problems(tests: dict[str, Any], tests_path: Path, rules_path: Path) -> list[str]:
    """promtool resolves rule_files relative to the test file's folder."""
    files = [(tests_path.parent / f).resolve() for f in tests.get("rule_files") or []]
    if files != [rules_path.resolve()]:
        return [f"rule_files resolve to {[str(f) for f in files]}, not [{rules_path}]"]
    return []


def index_problems(rules: dict[str, Any], index: str) -> list[str]:
    """docs/runbooks/README.md has a table row per rule: its link and its severity."""
    rows = [line for line in index.splitlines() if line.lstrip().startswith("|")]
    problems = []
    for rule in alert_rules(rules):
        name, severity = rule["alert"], (rule.get("labels") or {}).get("severity")
        link = f"]({name}.md)"
        if not any(link in row and re.search(rf"\b{severity}\b", row) for row in rows):
            problems.append(
                f"{name} ({severity}): no row with {link} and its severity in the index"
            )
    return problems


# ------------------------------------------------------------------ promtool


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is not installed (scripts/setup.sh installs Debian's prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI=true this fails instead of skipping")
        pytest.skip(message)
    return found


def run_promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT,
        check=False,
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"promtool exited {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_promtool_check_rules() -> None:
    result = run_promtool("check", "rules", str(RULES.relative_to(ROOT)))
    assert result.returncode == 0, shown(result)


def test_promtool_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", str(TESTS.relative_to(ROOT)))
    assert result.returncode == 0, shown(result)
    assert "SUCCESS" in result.stdout, shown(result)


def test_promtool_reports_a_wrong_expectation(tmp_path: Path) -> None:
    """The runner sees promtool fail: the real rules, a case expecting an alert that
    cannot fire (a healthy cluster with a leader)."""
    case = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [
                    {"series": 'up{job="mooring-principal", instance="p1:9100"}', "values": "1x20"},
                    {
                        "series": 'mooring_leader{job="mooring-principal", instance="p1:9100"}',
                        "values": "1x20",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "3m",
                        "alertname": "MooringNoLeader",
                        "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "wrong_test.yaml"
    path.write_text(yaml.safe_dump(case))
    result = run_promtool("test", "rules", str(path), cwd=tmp_path)
    assert result.returncode != 0, shown(result)
    assert "MooringNoLeader" in result.stdout + result.stderr, shown(result)


# ------------------------------------------------------------------ the real files


@pytest.fixture(scope="module")
def rules() -> dict[str, Any]:
    return load(RULES)


@pytest.fixture(scope="module")
def tests() -> dict[str, Any]:
    return load(TESTS)


def test_rules_have_severity_and_annotations(rules: dict[str, Any]) -> None:
    assert rule_problems(rules) == []


def test_every_rule_has_its_runbook(rules: dict[str, Any]) -> None:
    assert runbook_problems(rules, RUNBOOKS) == []


def test_rules_name_only_catalogued_metrics(rules: dict[str, Any]) -> None:
    assert metric_problems(rules) == []


def test_every_rule_has_firing_and_quiet_cases(
    rules: dict[str, Any], tests: dict[str, Any]
) -> None:
    assert coverage_problems(rules, tests) == []


def test_unit_tests_load_the_real_rules(tests: dict[str, Any]) -> None:
    assert rule_files_problems(tests, TESTS, RULES) == []


def test_runbook_index_lists_every_alert(rules: dict[str, Any]) -> None:
    assert index_problems(rules, INDEX.read_text()) == []


def test_runbook_index_links_only_pages_that_exist() -> None:
    links = re.findall(r"\]\(([A-Za-z]+\.md)\)", INDEX.read_text())
    assert links, "the index links no runbook"
    assert [link for link in links if not (RUNBOOKS / link).is_file()] == []


# ------------------------------------------------------------------ the checkers can fail


def first_rule(doc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return next(r for r in alert_rules(doc) if name is None or r["alert"] == name)


def test_rule_checker_finds_shape_problems(rules: dict[str, Any]) -> None:
    broken = copy.deepcopy(rules)
    rule = first_rule(broken)
    del rule["labels"]["severity"]
    del rule["annotations"]["runbook_url"]
    first_rule(broken, "MooringReplicaDown")["labels"]["severity"] = "info"
    problems = rule_problems(broken)
    assert any("labels.severity is None" in p for p in problems), problems
    assert any("annotations.runbook_url" in p for p in problems), problems
    assert any("MooringReplicaDown: labels.severity is 'info'" in p for p in problems), problems
    assert rule_problems({"groups": []}) == ["no alert rule at all"]


def test_runbook_checker_finds_missing_pages_and_sections(
    rules: dict[str, Any], tmp_path: Path
) -> None:
    pages = tmp_path / "runbooks"
    shutil.copytree(RUNBOOKS, pages)
    (pages / "MooringNoLeader.md").unlink()
    fix = pages / "MooringReplicaDown.md"
    fix.write_text(fix.read_text().replace("## How to fix", "## Notes"))
    broken = copy.deepcopy(rules)
    first_rule(broken, "MooringStoreErrors")["annotations"]["runbook_url"] = "https://x/Store.md"
    problems = runbook_problems(broken, pages)
    assert any(p.startswith("MooringNoLeader: no runbook page") for p in problems), problems
    assert any(p.startswith("MooringReplicaDown.md: no heading for fixing") for p in problems)
    assert any(p.startswith("MooringStoreErrors: runbook_url") for p in problems), problems
    assert len(problems) == 3, problems


def test_metric_checker_finds_unknown_names(rules: dict[str, Any]) -> None:
    broken = copy.deepcopy(rules)
    first_rule(broken, "MooringNoLeader")["expr"] = "sum(mooring_leaders) < 1"
    first_rule(broken, "MooringReplicaSelfFencing")["expr"] = (
        "increase(mooring_sessions_closed[5m]) > 0"
    )
    first_rule(broken, "MooringFailoverSlow")["expr"] = "mooring_leader_bucket > 0"
    first_rule(broken, "MooringFileDescriptorsNearLimit")["expr"] = (
        "process_open_files / process_max_fds > 0.8"
    )
    problems = metric_problems(broken)
    assert sorted(problems) == [
        "MooringFailoverSlow: mooring_leader_bucket is not a metric family in proto.catalog",
        "MooringFileDescriptorsNearLimit: process_open_files is not a metric family in proto.catalog",
        "MooringNoLeader: mooring_leaders is not a metric family in proto.catalog",
        "MooringReplicaSelfFencing: mooring_sessions_closed is not a metric family in proto.catalog",
    ]


def test_metric_checker_accepts_histogram_series() -> None:
    doc = {
        "groups": [
            {
                "rules": [
                    {
                        "alert": "X",
                        "expr": "rate(mooring_failover_seconds_sum[5m]) / rate(mooring_failover_seconds_count[5m])",
                    },
                    {"alert": "Y", "expr": "mooring_failover_seconds > 1"},
                ]
            }
        ]
    }
    assert metric_problems(doc) == [
        "Y: mooring_failover_seconds is a histogram: use its _bucket series"
    ]


def test_coverage_checker_finds_missing_cases(rules: dict[str, Any], tests: dict[str, Any]) -> None:
    broken = copy.deepcopy(tests)
    for case in broken["tests"]:
        kept = []
        for check in case.get("alert_rule_test") or []:
            name, expected = check["alertname"], check.get("exp_alerts") or []
            if name == "MooringStoreErrors" and not expected:
                continue  # no quiet case left
            if name == "MooringNoLeader" and expected:
                continue  # no firing case left
            if name == "MooringCertificateExpiry":
                check["exp_alerts"] = [
                    a for a in expected if a["exp_labels"].get("severity") != "critical"
                ]
            kept.append(check)
        case["alert_rule_test"] = kept
    broken["tests"][0]["alert_rule_test"].append(
        {"eval_time": "1m", "alertname": "MooringNoSuchAlert", "exp_alerts": []}
    )
    assert sorted(coverage_problems(rules, broken)) == [
        "MooringCertificateExpiry (critical): no promtool case where it fires",
        "MooringNoLeader (critical): no promtool case where it fires",
        "MooringStoreErrors: no promtool case where it does not fire",
        "promtool case for 'MooringNoSuchAlert', which no rule defines (it can only pass)",
    ]


def test_rule_files_checker_finds_a_wrong_path(tests: dict[str, Any], tmp_path: Path) -> None:
    assert rule_files_problems(tests, tmp_path / "alerts_test.yaml", RULES) != []
    assert rule_files_problems({"rule_files": []}, TESTS, RULES) != []


def test_index_checker_finds_missing_rows(rules: dict[str, Any]) -> None:
    index = INDEX.read_text()
    without = "\n".join(
        line
        for line in index.splitlines()
        if "(MooringFailoverSlow.md)" not in line
        and not ("(MooringCertificateExpiry.md)" in line and "critical" in line)
    )
    assert sorted(index_problems(rules, without)) == [
        "MooringCertificateExpiry (critical): no row with ](MooringCertificateExpiry.md) and its severity in the index",
        "MooringFailoverSlow (warning): no row with ](MooringFailoverSlow.md) and its severity in the index",
    ]
