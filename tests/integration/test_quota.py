"""A per-agent quota on what an autonomous agent mirrors to the hub (issue 14: nothing
bounded it, so one agent could fill the hub store). A real replica on real etcd, a real
agent over mTLS with its own SQLite store."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import _store as agent_store
from principal import _server as server
from principal import _session as session_
from tests import _argocd as argocd
from tests._poll import eventually
from tests.integration._agents import running, serving

pytestmark = pytest.mark.integration

LIMIT = 3


@pytest.fixture
async def limited(pki_dir: Path, etcd) -> AsyncIterator[server.Replica]:
    root = f"/quota-{uuid.uuid4().hex[:8]}/"
    limit = session_.SessionSettings(max_resources=LIMIT)
    async with serving(pki_dir, etcd, root=root, session=limit, auto_register=True) as rep:
        yield rep


async def mirrored(replica: server.Replica, agent: str) -> dict[str, str]:
    """Name -> source path of the agent's objects on the hub."""
    resources, _ = await replica.desired.list_resources(agent)
    return {r.name: r.object["spec"]["source"]["path"] for r in resources}


def quota_lines(caplog: pytest.LogCaptureFixture, side: str = "principal") -> list[str]:
    """The refusals' lines in the log of one side: the replica's, or the agent's."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith(side) and "quota: agent steady" in r.getMessage()
    ]


async def test_an_autonomous_agent_mirrors_at_most_its_quota_and_is_told_why(
    limited: server.Replica, pki_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    state = tmp_path / "steady.db"
    local = agent_store.AgentStore(state, mode="autonomous")
    try:
        for i in range(5):
            local.apply_local(argocd.application(f"app-{i}"))
        tls_dir = pki_dir / "agents" / "steady"
        async with running(limited, "steady", tls_dir, state, mode="autonomous"):
            hub = await eventually(
                lambda: mirrored(limited, "steady"),
                until=lambda got: len(got) == LIMIT and len(quota_lines(caplog)) == 2,
                what="three mirrored, two refused",
            )
            assert len(quota_lines(caplog, "agent")) == 2  # each told in its ack, once
            assert quota_lines(caplog)[0].startswith(
                f"agent steady: quota: agent steady has {LIMIT} objects on the hub, the most"
                f" it may have ({LIMIT}, `principal serve --max-resources-per-agent`);"
            )
            # An update of an object the hub mirrors is no new object: it is taken.
            kept = sorted(hub)[0]
            local.apply_local(argocd.application(kept, path="v2"))
            await eventually(
                lambda: mirrored(limited, "steady"),
                until=lambda got: got.get(kept) == "v2",
                what="the update mirrored",
            )
            # Deleting one makes room: the agent's next change or resync brings a
            # refused one; here, its next change.
            local.delete_local("Application", kept)
            await eventually(
                lambda: mirrored(limited, "steady"),
                until=lambda got: kept not in got,
                what="deleted",
            )
            refused = next(f"app-{i}" for i in range(5) if f"app-{i}" not in hub)
            local.apply_local(argocd.application(refused, path="again"))
            after = await eventually(
                lambda: mirrored(limited, "steady"),
                until=lambda got: got.get(refused) == "again",
                what="a refused one mirrored in its place",
            )
            assert len(after) == LIMIT
    finally:
        local.close()


def test_the_quota_is_a_setting_with_a_floor() -> None:
    with pytest.raises(ValueError, match="max_resources must be at least 1, got 0"):
        session_.SessionSettings(max_resources=0)
