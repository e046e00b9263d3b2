"""The proto package's root exception. It imports nothing, so the CLI can judge an error
by it without importing gRPC."""

from __future__ import annotations

__all__ = ["ProtoError"]


class ProtoError(Exception):
    """Root of every error raised by the protocol package (objects, credentials)."""
