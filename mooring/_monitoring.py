"""Monitoring assets and a local Prometheus: the alert rules' one source, rendered for use.

`mooring/monitoring/alerts.yaml` is the only copy of the alert rules; the Helm chart's
PrometheusRule and `mooring up --prometheus` both render it through `rules()`, which may
scale every `for:` (a local demo wants to see an alert fire in seconds, not minutes) and
point runbook links elsewhere. `start_prometheus()` runs a real Prometheus server on the
cluster's file_sd targets (DIR/prometheus/targets.json, rewritten by every state save).
"""

from __future__ import annotations

import re
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from mooring import _processes as processes
from mooring import _services as services
from mooring import _state as state_
from proto import catalog

__all__ = [
    "ALERTS",
    "DASHBOARDS",
    "RUNBOOK_BASE",
    "config",
    "rules",
    "scale_duration",
    "start_prometheus",
]

HOST = "127.0.0.1"
ASSETS = Path(__file__).parent / "monitoring"
ALERTS = ASSETS / "alerts.yaml"
DASHBOARDS = ASSETS / "dashboards"
RUNBOOK_BASE = "https://github.com/mooring/mooring/blob/main/docs/runbooks/"
"""Where the source file's runbook_url links point (the repository's docs/runbooks/)."""

SCRAPE_INTERVAL = 1.0
EVALUATION_INTERVAL = 1.0
"""Seconds, for the local Prometheus of `mooring up --prometheus`."""
READY_TIMEOUT = 30.0

_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as `1m30s`."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in parts)


def scale_duration(text: str, factor: float) -> str:
    """`text` times `factor`, as a Prometheus duration in whole milliseconds."""
    return f"{round(parse_duration(text) * factor * 1000)}ms"


def rules(*, for_scale: float = 1.0, runbook_base: str | None = None) -> dict[str, Any]:
    """The alert rules file as a document, each `for:` times `for_scale`."""
    if for_scale <= 0:
        raise ValueError(f"the alert `for` scale must be positive, got {for_scale}")
    doc: dict[str, Any] = yaml.safe_load(ALERTS.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule and for_scale != 1.0:
                rule["for"] = scale_duration(rule["for"], for_scale)
            url = rule.get("annotations", {}).get("runbook_url")
            if runbook_base and url and url.startswith(RUNBOOK_BASE):
                rule["annotations"]["runbook_url"] = runbook_base + url[len(RUNBOOK_BASE) :]
    return doc


def config(targets: Path, rules_file: Path) -> dict[str, Any]:
    """prometheus.yml for a local cluster: short intervals, file_sd targets, our rules."""
    interval = f"{round(SCRAPE_INTERVAL * 1000)}ms"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": f"{round(EVALUATION_INTERVAL * 1000)}ms",
        },
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {
                "job_name": "mooring",
                "honor_labels": True,  # the targets' own job label: mooring-principal|agent
                "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "5s"}],
            }
        ],
    }


def start_prometheus(
    state: state_.ClusterState,
    directory: Path,
    *,
    port: int | None = None,
    for_scale: float = 1.0,
) -> state_.ServiceRecord:
    """Start Prometheus on DIR/prometheus/ and wait until it is ready; record it in `state`."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise services.MissingBinaryError(
            "prometheus not found on PATH: install it with `apt-get install prometheus`"
        )
    home = directory / "prometheus"
    home.mkdir(parents=True, exist_ok=True)
    rules_file = home / "alerts.yaml"
    rules_file.write_text(yaml.safe_dump(rules(for_scale=for_scale), sort_keys=False))
    config_file = home / "prometheus.yml"
    targets = directory / state_.TARGETS_FILE
    config_file.write_text(yaml.safe_dump(config(targets, rules_file), sort_keys=False))
    port = port or services.free_port(HOST)
    log = directory / "logs" / "prometheus.log"
    proc, handle = processes.spawn(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
        ],
        log=log,
    )
    record = state_.ServiceRecord("prometheus", f"{HOST}:{port}", str(log), handle)
    state.prometheus = record
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return record
        except (OSError, urllib.error.URLError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"prometheus did not become ready; {log}: {tail[0]}")
        time.sleep(0.1)


def metrics_doc() -> str:
    """docs/metrics.md, generated from `proto.catalog` (scripts/gendocs.py writes it)."""
    lines = [
        "# Metrics",
        "",
        "<!-- Generated from proto/_catalog.py by `python3 scripts/gendocs.py`; do not edit. -->",
        "",
        "Every process serves `/metrics`, `/healthz` and `/readyz` on its metrics port",
        "(`--metrics HOST:PORT`). `/healthz` is 200 while the process runs; `/readyz` is 200",
        "for a replica that is a member with a shard map applied, and for an agent whose",
        "local store answers (its session with the hub is reported in the body, not judged).",
        "No `_created` series are exported. Alert rules: `mooring/monitoring/alerts.yaml`;",
        "runbooks: [docs/runbooks](runbooks/README.md).",
        "",
        "The `process_*` families are prometheus-client's standard process metrics (its",
        "`ProcessCollector`, read from `/proc/self` at each scrape, so Linux only), under",
        "their usual names and help, so any dashboard or alert for a process works on ours.",
        "`process_max_fds` is the soft limit on open files, which every Mooring process",
        "raises to the hard limit when it starts.",
        "",
    ]
    for component in catalog.Component:
        lines += [
            f"## {component.value.capitalize()}",
            "",
            "| name | type | unit | labels | help |",
            "|---|---|---|---|---|",
        ]
        for family in catalog.FAMILIES:
            if component not in family.components:
                continue
            labels = ", ".join(f"`{label}`" for label in family.labels) or "-"
            if family.cardinality:
                labels += f" ({family.cardinality})"
            help_ = family.help.replace("|", "\\|")
            lines.append(
                f"| `{family.name}` | {family.type} | {family.unit or '-'} | {labels} | {help_} |"
            )
        lines.append("")
    return "\n".join(lines)
