"""The chaos suite's root exception."""

from __future__ import annotations

__all__ = ["ChaosError"]


class ChaosError(Exception):
    """Root of the chaos suite's errors: a `mooring` command that failed, a cluster an
    action cannot act on, a network topology that cannot be built."""
