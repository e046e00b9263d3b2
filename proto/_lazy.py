"""Package names that load on first use: the `__getattr__` of election's, principal's and
agent's `__init__`, so importing one module of a package does not import all of it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["attributes"]


def attributes(
    package: str, *, modules: Iterable[str], names: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: each of `modules` is its private module of
    the same name (`errors` -> `package._errors`), each of `names` (name -> private
    module) is that module's attribute."""
    public = frozenset(modules)

    def __getattr__(name: str) -> Any:
        if name in public:
            return importlib.import_module(f"{package}._{name}")
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where}"), name)

    return __getattr__
