"""Coordination: versioned-record stores, fenced leader election, membership, shard map, ring."""

from election._errors import CompactedError, ConflictError, CoordinationError, StoreUnavailableError

__all__ = ["CompactedError", "ConflictError", "CoordinationError", "StoreUnavailableError"]
