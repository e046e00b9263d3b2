"""What a metric family is: its name, type, help, labels and the components that export it.

The families themselves are the catalog's (`proto/_catalog.py`); this module only says
what one is made of, so that the catalog and the collectors made from it
(`proto/_collectors.py`) share one definition.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Literal

__all__ = ["BOTH", "A", "Component", "Family", "P"]


class Component(enum.Enum):
    PRINCIPAL = "principal"
    AGENT = "agent"


P = frozenset({Component.PRINCIPAL})
A = frozenset({Component.AGENT})
BOTH = P | A


@dataclasses.dataclass(frozen=True, slots=True)
class Family:
    name: str
    """The exposition name (counters include `_total`)."""
    type: Literal["counter", "gauge", "histogram"]
    help: str
    unit: str = ""
    """The base unit (`seconds`, `bytes`), or empty for counts, flags and info."""
    labels: tuple[str, ...] = ()
    components: frozenset[Component] = P
    buckets: tuple[float, ...] = ()
    cardinality: str = ""
    """For labelled families: what bounds the number of series."""
    initial: tuple[tuple[str, ...], ...] = ()
    """Label values created at start (at 0), so that the first event is an increase that
    `rate()`/`increase()` can see, not the birth of a series."""
    collector: Literal["", "process"] = ""
    """The prometheus-client collector that exports this family under its own name and
    help ("process": `ProcessCollector`, see `register_process_collector`), or empty for
    a family Mooring makes with `counter`, `gauge` or `histogram`."""

    @property
    def base(self) -> str:
        """The name prometheus-client is given (it appends `_total` to counters)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name

    def series(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this family."""
        if self.type == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)
