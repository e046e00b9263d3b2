"""One Mooring agent: endpoint set and failover, session client, managed/autonomous sync, local store."""

from agent._client import Agent, AgentError
from agent._endpoints import EndpointSet
from agent._settings import AgentSettings
from agent._store import AgentStore, LocalStoreError

__all__ = ["Agent", "AgentError", "AgentSettings", "AgentStore", "EndpointSet", "LocalStoreError"]
