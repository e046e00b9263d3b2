"""Argo CD objects for tests: the smallest Application its CRD schema accepts."""

from __future__ import annotations

from typing import Any

GROUP, VERSION = "argoproj.io", "v1alpha1"


def application(name: str, *, path: str = "guestbook", **meta: Any) -> dict[str, Any]:
    """An Application `name` whose source path is `path`; `meta` joins its metadata."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Application",
        "metadata": {"name": name, **meta},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/a", "path": path},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "x"},
        },
    }
