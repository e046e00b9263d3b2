"""Rendering the charts with the test bed's real helm."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests import _testbed as testbed

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
HUB = CHARTS / "mooring"
AGENT = CHARTS / "mooring-agent"

# The least a hub install needs: a serving certificate and a Redis.
HUB_MINIMAL: dict[str, Any] = {
    "tls": {"existingSecret": "hub-tls"},
    "redis": {"url": "redis://r:6379"},
}
AGENT_MINIMAL: dict[str, Any] = {
    "agent": {"name": "edge-01", "endpoints": ["hub.example:8443"]},
    "tls": {"existingSecret": "agent-tls"},
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    testbed.require("helm")
    result = subprocess.run(
        [str(testbed.binary("helm")), *args], capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stderr}")
    return result


def values_file(values: dict[str, Any], folder: Path) -> Path:
    path = folder / f"values-{abs(hash(json.dumps(values, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(
    chart: Path,
    values: dict[str, Any],
    folder: Path,
    *,
    release: str = "hub",
    namespace: str = "mooring-system",
) -> list[dict[str, Any]]:
    out = helm(
        "template", release, str(chart), "--namespace", namespace,
        "-f", str(values_file(values, folder)),
    ).stdout  # fmt: skip
    return [d for d in yaml.safe_load_all(out) if d]


def render_error(chart: Path, values: dict[str, Any], folder: Path) -> str:
    result = helm("template", "t", str(chart), "-f", str(values_file(values, folder)), check=False)
    assert result.returncode != 0, "rendering should have failed"
    return result.stderr


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def by_kind(docs: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], []).append(doc)
    return out
