"""How many examples each fuzz target runs, and a count of those it ran.

`make test` runs each target at its CI budget, derandomized (the same examples every run,
so CI is deterministic); `make fuzz` sets MOORING_FUZZ_EXAMPLES (a multiplier, e.g. 20)
and explores afresh each run. The conftest reports what ran.
"""

from __future__ import annotations

import collections
import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

__all__ = ["COUNTS", "SCALE_ENV", "counted", "fuzz_settings", "scale"]

F = TypeVar("F", bound=Callable[..., Any])

SCALE_ENV = "MOORING_FUZZ_EXAMPLES"
COUNTS: collections.Counter[str] = collections.Counter()
"""Examples run per target (test function name) in this process."""


def scale(env: Mapping[str, str] = os.environ) -> int:
    """The multiplier of every target's CI budget: MOORING_FUZZ_EXAMPLES, else 1."""
    text = env.get(SCALE_ENV, "").strip()
    if not text:
        return 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{SCALE_ENV} must be a positive whole number, got {text[:40]!r}")
    return int(text)


def fuzz_settings(examples: int, *, env: Mapping[str, str] = os.environ) -> settings:
    """Hypothesis settings for a target whose CI budget is `examples`."""
    factor = scale(env)
    return settings(
        max_examples=examples * factor,
        deadline=None,  # a loaded CI machine must not turn slowness into failures
        database=None,  # no example database: what CI runs depends on the code alone
        derandomize=factor == 1,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,  # a failure prints the @reproduce_failure line to keep
    )


def counted(test: F) -> F:
    """Count each example the test runs (goes under @given)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        COUNTS[test.__name__] += 1
        return test(*args, **kwargs)

    return run  # type: ignore[return-value]
