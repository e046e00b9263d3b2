"""One principal replica: agent gRPC server, sessions, ownership, desired-state store, PKI."""

from principal._pki import PkiError
from principal._server import Replica, run
from principal._settings import PrincipalSettings
from principal._store import DesiredStore, ModeConflictError, StoreError

__all__ = [
    "DesiredStore",
    "ModeConflictError",
    "PkiError",
    "PrincipalSettings",
    "Replica",
    "StoreError",
    "run",
]
