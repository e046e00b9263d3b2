"""Packages meet only through each other's public names.

A module whose name starts with an underscore is private to its package: another of
Mooring's packages reaches it through the names the package's `__init__` exports
(`from election import errors`, not `from election import _errors`). import-linter
keeps the layers; this keeps the boundaries, which its contracts cannot express
(they match whole module names, not a leading underscore).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("proto", "election", "principal", "agent", "mooring", "chaos")


def _private_imports(path: Path, own: str) -> list[str]:
    """`line: what` for each import of another package's underscore module in `path`."""
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module.split(".")
            if base[0] in PACKAGES:
                targets.append(node.module)
                if len(base) == 1:
                    targets += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names if alias.name.split(".")[0] in PACKAGES]
        for target in targets:
            parts = target.split(".")
            if parts[0] != own and any(p.startswith("_") for p in parts[1:]):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {target}")
    return found


def test_no_package_imports_another_packages_private_modules() -> None:
    found = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if "v1" not in path.parts
        for hit in _private_imports(path, package)
    ]
    assert not found, "import the public name instead:\n" + "\n".join(found)
