"""The test bed built by `scripts/testbed.sh`: where it is, and what to do without it.

Tests that need a component of it ask `require(...)`: without the component they
skip with one line that says how to build it, and under CI=true they fail instead,
so a CI run can never pass by skipping the Kubernetes tests.
"""

from __future__ import annotations

import functools
import os
import subprocess
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


def argocd_crds() -> list[Path]:
    return sorted((directory() / "crds" / "argocd").glob("*.yaml"))


def argocd_example(name: str) -> Path:
    """Argo CD's documented full manifests: "application.yaml", "project.yaml"."""
    return directory() / "examples" / "argocd" / name


def require(*binaries: str, crds: bool = False, examples: bool = False) -> None:
    """Skip (fail under CI=true) unless the named binaries, CRDs and examples are built."""
    missing = [name for name in binaries if not binary(name).is_file()]
    if crds and not argocd_crds():
        missing.append("Argo CD CRDs")
    if examples and not argocd_example("application.yaml").is_file():
        missing.append("Argo CD examples")
    if not missing:
        return
    message = f"test bed lacks {', '.join(missing)} in {directory()}: {HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
