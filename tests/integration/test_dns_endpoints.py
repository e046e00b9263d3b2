"""An agent given a DNS name dials every address it resolves to and verifies the name."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent import _client as agent_client
from agent import _settings as agent_settings
from principal import _server as server

pytestmark = pytest.mark.integration


async def test_agent_reaches_the_principal_through_a_dns_name(
    replica: server.Replica, pki_dir: Path, tmp_path: Path
) -> None:
    cfg = agent_settings.AgentSettings(
        name="agent-a",
        mode="managed",
        endpoints=(f"localhost:{replica.port}",),
        tls_dir=pki_dir / "agents" / "agent-a",
        state=tmp_path / "a.db",
    )
    agent = agent_client.Agent(cfg)
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(agent.welcomed.wait(), 15)
        assert agent.replica_id == "p1"
        addresses = {e.address for e in agent.endpoints.endpoints}
        assert f"127.0.0.1:{replica.port}" in addresses
        assert all(e.server_name == "localhost" for e in agent.endpoints.endpoints)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)
