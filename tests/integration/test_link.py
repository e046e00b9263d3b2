"""A real agent's link (agent/_link.py) against a real replica on real etcd with mTLS: it
walks idle -> dialing -> resyncing -> live, leaves live when its replica goes away, and
ends stopped; `mooring_agent_link_state` shows one state at a time."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from pathlib import Path

import pytest

from agent import _client as agent_client
from agent import _link as link
from agent import _settings as agent_settings
from mooring import _services as services
from principal import _pki as pki
from tests.election._helpers import until
from tests.integration._agents import serving

pytestmark = pytest.mark.integration

MOVE = re.compile(r"link (\w+) -> (\w+)")


def states(agent: agent_client.Agent) -> dict[str, float | None]:
    return {
        str(s): agent.registry.get_sample_value("mooring_agent_link_state", {"state": str(s)})
        for s in link.Link
    }


def one_hot(agent: agent_client.Agent) -> dict[str, float | None]:
    return {str(s): 1.0 if s is agent.link else 0.0 for s in link.Link}


async def test_a_real_agent_walks_the_table_from_idle_to_live_to_stopped(
    pki_dir: Path, etcd: services.EtcdCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"link-{uuid.uuid4().hex[:8]}"
    pki.issue_agent(pki_dir, name=name)
    caplog.set_level(logging.DEBUG, logger="agent._client")
    async with serving(pki_dir, etcd, root=f"/t-{name}", auto_register=True) as replica:
        agent = agent_client.Agent(
            agent_settings.AgentSettings(
                name=name,
                mode="managed",
                endpoints=(f"127.0.0.1:{replica.port}",),
                tls_dir=pki_dir / "agents" / name,
                state=tmp_path / "local.db",
                backoff_cap=0.5,
            )
        )
        assert agent.link is link.Link.IDLE and states(agent) == one_hot(agent)
        task = asyncio.create_task(agent.run(), name=f"agent-{name}")
        await until(agent.welcomed.is_set, within=10, what="the agent welcomed and resynced")
        assert agent.link is link.Link.LIVE
        assert states(agent) == one_hot(agent)
        assert agent.registry.get_sample_value("mooring_agent_connected") == 1.0
    # The replica stopped (it said goodbye): the agent is no longer live, and looks again.
    await until(
        lambda: agent.link in (link.Link.DIALING, link.Link.BACKING_OFF),
        within=10,
        what="the agent off live once its replica stopped",
    )
    assert not agent.welcomed.is_set()
    assert agent.registry.get_sample_value("mooring_agent_connected") == 0.0
    await until(lambda: agent.link is link.Link.BACKING_OFF, within=10, what="a failed sweep")
    agent.stop()
    await asyncio.wait_for(task, 10)
    assert agent.link is link.Link.STOPPED and states(agent) == one_hot(agent)
    moves = [
        m.groups()
        for r in caplog.records
        if r.name == "agent._client" and (m := MOVE.search(r.getMessage()))
    ]
    assert moves[:4] == [
        ("idle", "dialing"),
        ("dialing", "resyncing"),
        ("resyncing", "live"),
        ("live", "dialing"),
    ], moves
    assert moves[-1][1] == "stopped" and "backing_off" in {m[1] for m in moves[4:]}, moves
    for before, after in moves:  # every move the log shows is one the table allows
        assert after in {str(t) for t in link.TRANSITIONS[link.Link(before)].values()}
