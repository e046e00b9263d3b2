"""The test bed built by `scripts/testbed.sh`: where it is, and what to do without it.

Tests that need a component of it ask `require(...)`: without the component they
skip with one line that says how to build it, and under CI=true they fail instead,
so a CI run can never pass by skipping the Kubernetes tests.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "testbed.sh"
HINT = "run `bash scripts/testbed.sh` (needs Go 1.26+ and the Go module proxy)"


@functools.cache
def directory() -> Path:
    """The test bed's cache folder for this checkout's versions (it may not exist)."""
    if override := os.environ.get("MOORING_TESTBED"):
        return Path(override)
    out = subprocess.run(
        ["bash", str(SCRIPT), "--path"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip())


def binary(name: str) -> Path:
    return directory() / "bin" / name


CRD_SETS = {
    "argocd": "Argo CD CRDs",
    "prometheus-operator": "prometheus-operator CRDs",
    "cert-manager": "cert-manager CRDs",
}


def crd_files(crd_set: str) -> list[Path]:
    """The CRD files of one set in the test bed (a key of CRD_SETS), sorted."""
    return sorted((directory() / "crds" / crd_set).glob("*.yaml"))


def argocd_crds() -> list[Path]:
    """Application, AppProject, ApplicationSet (argoproj.io)."""
    return crd_files("argocd")


def monitoring_crds() -> list[Path]:
    """prometheus-operator's ServiceMonitor and PrometheusRule (monitoring.coreos.com/v1)."""
    return crd_files("prometheus-operator")


def cert_manager_crds() -> list[Path]:
    """cert-manager's Certificate, Issuer and ClusterIssuer (cert-manager.io/v1)."""
    return crd_files("cert-manager")


def argocd_example(name: str) -> Path:
    """Argo CD's documented full manifests: "application.yaml", "project.yaml"."""
    return directory() / "examples" / "argocd" / name


def require(
    *binaries: str, crds: bool = False, examples: bool = False, crd_sets: Sequence[str] = ()
) -> None:
    """Skip (fail under CI=true) unless the named binaries, CRDs and examples are built.

    `crds` asks for Argo CD's CRDs; `crd_sets` for any of CRD_SETS by name."""
    missing = [name for name in binaries if not binary(name).is_file()]
    wanted = dict.fromkeys([*(["argocd"] if crds else []), *crd_sets])  # once each, in order
    missing += [CRD_SETS[name] for name in wanted if not crd_files(name)]
    if examples and not argocd_example("application.yaml").is_file():
        missing.append("Argo CD examples")
    if not missing:
        return
    message = f"test bed lacks {', '.join(missing)} in {directory()}: {HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
