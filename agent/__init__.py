"""One Mooring agent: endpoint set and failover, session client, managed/autonomous sync, local store.

Other packages import the names below (classes, and the modules they use by their
public names: `from agent import settings`, never `agent._settings`). They load on first
use, so building the CLI's parser (which needs only the flags table) imports no client.
Every error of the package derives from `AgentError`, which loads alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proto import lazy

if TYPE_CHECKING:
    from agent import _client as client
    from agent import _endpoints as endpoints
    from agent import _flags as flags
    from agent import _settings as settings
    from agent import _store as store
    from agent._client import Agent
    from agent._endpoints import EndpointSet
    from agent._errors import AgentError
    from agent._settings import AgentSettings
    from agent._store import AgentStore, LocalStoreError

# Public module names: each is the private module of the same name.
_MODULES = (
    "client",
    "endpoints",
    "flags",
    "settings",
    "store",
)

_WHERE = {
    "Agent": "_client",
    "AgentError": "_errors",
    "EndpointSet": "_endpoints",
    "AgentSettings": "_settings",
    "AgentStore": "_store",
    "LocalStoreError": "_store",
}

__all__ = [
    "Agent",
    "AgentError",
    "AgentSettings",
    "AgentStore",
    "EndpointSet",
    "LocalStoreError",
    "client",
    "endpoints",
    "flags",
    "settings",
    "store",
]


__getattr__ = lazy.attributes("agent", modules=_MODULES, names=_WHERE)
