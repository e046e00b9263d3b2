"""One principal replica: agent gRPC server, sessions, ownership, the hub store, PKI.

Other packages import the names below (classes, functions, and the modules they use by
their public names: `from principal import pki`, never `principal._pki`). They load on
first use, so a command that needs only the flags table (`mooring agent run` builds
the whole parser) does not import the server. Every error of the package derives from
`PrincipalError`, which loads alone (the CLI judges errors by it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proto import lazy

if TYPE_CHECKING:
    from principal import _admission as admission
    from principal import _flags as flags
    from principal import _hub as hub
    from principal import _pki as pki
    from principal import _registry as registry
    from principal import _server as server
    from principal import _session as session
    from principal import _settings as settings
    from principal._errors import PrincipalError
    from principal._hub import HubStore, ModeConflictError, StoreError, open_hub_store
    from principal._pki import PkiError
    from principal._server import Replica, run
    from principal._settings import PrincipalSettings

# Public module names: each is the private module of the same name.
_MODULES = (
    "admission",
    "flags",
    "hub",
    "pki",
    "registry",
    "server",
    "session",
    "settings",
)

_WHERE = {
    "PrincipalError": "_errors",
    "HubStore": "_hub",
    "ModeConflictError": "_hub",
    "StoreError": "_hub",
    "open_hub_store": "_hub",
    "PkiError": "_pki",
    "Replica": "_server",
    "run": "_server",
    "PrincipalSettings": "_settings",
}

__all__ = [
    "HubStore",
    "ModeConflictError",
    "PkiError",
    "PrincipalError",
    "PrincipalSettings",
    "Replica",
    "StoreError",
    "admission",
    "flags",
    "hub",
    "open_hub_store",
    "pki",
    "registry",
    "run",
    "server",
    "session",
    "settings",
]


__getattr__ = lazy.attributes("principal", modules=_MODULES, names=_WHERE)
