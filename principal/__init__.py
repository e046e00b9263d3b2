"""One principal replica: agent gRPC server, sessions, ownership, the hub store, PKI."""

from principal._hub import HubStore, ModeConflictError, StoreError, open_hub_store
from principal._pki import PkiError
from principal._server import Replica, run
from principal._settings import PrincipalSettings

__all__ = [
    "HubStore",
    "ModeConflictError",
    "PkiError",
    "PrincipalSettings",
    "Replica",
    "StoreError",
    "open_hub_store",
    "run",
]
