"""The election package's exceptions: one root, subclasses by what the caller can do."""

from __future__ import annotations

__all__ = ["CompactedError", "ConflictError", "CoordinationError", "StoreUnavailableError"]


class CoordinationError(Exception):
    """Root of every error raised by the coordination layer."""


class StoreUnavailableError(CoordinationError):
    """The store did not answer in time or refused the connection; retryable."""


class ConflictError(CoordinationError):
    """A compare-and-swap lost: the record changed since it was read."""


class CompactedError(CoordinationError):
    """A watch asked for history that the store has compacted away; re-list and re-watch."""

    def __init__(self, message: str, *, compacted_revision: int) -> None:
        super().__init__(message)
        self.compacted_revision = compacted_revision
