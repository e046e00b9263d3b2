"""The CLI's usage error: bad flags or arguments, one line, exit code 2."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad flags or arguments: exit code 2."""
