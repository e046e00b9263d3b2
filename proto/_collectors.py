"""prometheus-client collectors made from catalogued families, exactly as catalogued.

`counter`, `gauge` and `histogram` make a family Mooring exports itself (refusing one of
another type, or one a library collector exports); `register_process_collector` puts
prometheus-client's process collector, which exports the `process_*` families under the
library's own names, on a registry once. Reached through the catalog (`catalog.counter`).
"""

from __future__ import annotations

import functools
import weakref

import prometheus_client as prom

from proto import _family as family_

# No `_created` companion series, in any registry of this process: a process-wide switch
# of prometheus-client, thrown once when the catalog is first imported.
prom.disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = ["counter", "gauge", "histogram", "register_process_collector"]


def _check(family: family_.Family, kind: str) -> None:
    if family.collector:
        raise TypeError(
            f"{family.name} is exported by prometheus-client's {family.collector} collector"
        )
    if family.type != kind:
        raise TypeError(f"{family.name} is a {family.type}, not a {kind}")


def counter(registry: prom.CollectorRegistry, family: family_.Family) -> prom.Counter:
    _check(family, "counter")
    made = prom.Counter(family.base, family.help, family.labels, registry=registry)
    for values in family.initial:
        made.labels(*values)
    return made


def gauge(registry: prom.CollectorRegistry, family: family_.Family) -> prom.Gauge:
    _check(family, "gauge")
    return prom.Gauge(family.base, family.help, family.labels, registry=registry)


def histogram(registry: prom.CollectorRegistry, family: family_.Family) -> prom.Histogram:
    _check(family, "histogram")
    return prom.Histogram(
        family.base, family.help, family.labels, registry=registry, buckets=family.buckets
    )


@functools.cache
def _process_collector() -> prom.ProcessCollector:
    # One per process: every registry of the process would read the same /proc/self.
    return prom.ProcessCollector(registry=None)


_WITH_PROCESS: weakref.WeakSet[prom.CollectorRegistry] = weakref.WeakSet()
"""The registries the process collector is registered on."""


def register_process_collector(registry: prom.CollectorRegistry) -> None:
    """Export the `process_*` families (CPU, memory, open and maximum file descriptors,
    start time; read from /proc/self at each scrape, none off Linux) on `registry`.

    Idempotent: a registry takes the one collector of the process once, however many
    components on it ask. (A registry does not refuse a second collector of families
    without a `describe`: two would export every family twice, and Prometheus would
    reject the whole scrape.)"""
    if registry in _WITH_PROCESS:
        return
    registry.register(_process_collector())
    _WITH_PROCESS.add(registry)
