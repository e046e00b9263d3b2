"""The principal package's root exception. It imports nothing, so the CLI can judge an
error by it without importing the server, Redis or the PKI."""

from __future__ import annotations

__all__ = ["PrincipalError"]


class PrincipalError(Exception):
    """Root of every error raised by a principal replica's modules: the hub store's
    (`StoreError`), the session registry's (`RegistryError`), the PKI's (`PkiError`),
    a refused stream (`Rejection`), and a session's own way out (`SessionEnded`)."""
