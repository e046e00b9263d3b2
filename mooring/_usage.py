"""The CLI's usage error: bad flags or arguments, one line, exit code 2."""

from __future__ import annotations

from mooring import _errors as errors

__all__ = ["UsageError"]


class UsageError(errors.MooringError):
    """Bad flags or arguments: exit code 2."""
