"""The agent package's root exception. It imports nothing, so the CLI can judge an error
by it without importing the gRPC client."""

from __future__ import annotations

__all__ = ["AgentError"]


class AgentError(Exception):
    """Root of the agent's errors: a failed dial or sweep (`ConnectFailed`, `SweepFailed`),
    a refused local-store operation (`LocalStoreError`), and the signals that end a session
    or the agent (`SessionOver`, `Stopped`)."""
