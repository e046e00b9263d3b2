"""The mooring package's root exception (the CLI and the local cluster launcher)."""

from __future__ import annotations

__all__ = ["MooringError"]


class MooringError(Exception):
    """Root of every error raised by the `mooring` command's own modules: a usage error,
    a cluster state that cannot be read, a failed Kubernetes API call of the launcher."""
