"""A refusal no retry cures: one ERROR with the fix, a slow retry, a gauge, and one INFO
when an operator has fixed it (`agent._refusals`).

A real principal replica (in this process) on real etcd with real mTLS refuses a real
agent; the operator's fix is the real CLI.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from pathlib import Path

import pytest

from mooring import _fleet as fleet
from mooring import _services as services
from mooring import _status as status_
from principal import _pki as pki
from principal import _server as server
from proto import _exposition as exposition
from proto import catalog
from tests import _procs as procs
from tests.election._helpers import until
from tests.integration._agents import rejected, running

pytestmark = pytest.mark.integration

INTERVAL = 2.0  # refused_retry_interval, seconds


def agent_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("agent") and r.levelno == level]


def refusals_seen(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The agent's lines about each refusal: the first (ERROR), then the repeats (DEBUG)."""
    return [
        r
        for r in caplog.records
        if r.name == "agent._refusals" and r.levelno in (logging.ERROR, logging.DEBUG)
    ]


async def test_a_mode_conflict_is_one_error_a_slow_retry_and_one_info_once_fixed(
    replica: server.Replica,
    pki_dir: Path,
    etcd: services.EtcdCluster,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"refused-{uuid.uuid4().hex[:8]}"
    pki.issue_agent(pki_dir, name=name)
    await replica.desired.register_agent(name, mode="autonomous")
    port = procs.free_port()
    before = rejected(replica, "mode_conflict")
    caplog.set_level(logging.DEBUG, logger="agent")
    async with running(
        replica,
        name=name,
        tls_dir=pki_dir / "agents" / name,
        state=tmp_path / "local.db",
        interval=INTERVAL,
    ) as agent:
        metrics = exposition.serve(
            "127.0.0.1", port, registry=agent.registry, ready=agent.readiness
        )
        try:
            refused = catalog.AGENT_REFUSED.name
            await until(
                lambda: (
                    rejected(replica, "mode_conflict") - before >= 3
                    and len(refusals_seen(caplog)) >= 3
                ),
                within=3 * INTERVAL + 3,
                what="three refused hellos, each seen by the agent",
            )
            scraped = await asyncio.to_thread(procs.scrape, port)
            assert scraped is not None
            assert scraped.value(refused, reason="mode_conflict") == 1.0
            assert scraped.value(refused, reason="identity_mismatch") == 0.0
            assert agent.refused == "mode_conflict"
            # `mooring status` reads the same reason from the agent's /metrics.
            assert status_.refused(scraped) == "mode_conflict"

            # One ERROR that names the reason, what the principal said and the fix; the
            # repeats at DEBUG, one per hello the principal refused, INTERVAL apart.
            errors = agent_lines(caplog, logging.ERROR)
            assert [r.getMessage() for r in errors] == [
                f"agent {name}: refused by 127.0.0.1:{replica.port} (mode_conflict:"
                f" FAILED_PRECONDITION: agent {name} is registered as autonomous, not managed);"
                " to fix: run with --mode autonomous, or change the registration with"
                f" `mooring agent set-mode {name} managed`; retrying every 2s"
            ]
            assert agent_lines(caplog, logging.WARNING) == []
            seen = refusals_seen(caplog)
            assert len(seen) == rejected(replica, "mode_conflict") - before
            gaps = [b.created - a.created for a, b in itertools.pairwise(seen)]
            assert gaps and all(INTERVAL - 0.1 < gap < INTERVAL + 1.0 for gap in gaps), gaps

            # The operator changes the registration; the next retry is welcomed.
            await asyncio.to_thread(
                procs.mooring, "agent", "set-mode", name, "managed", env={"MOORING_STORE": etcd.url}
            )
            await asyncio.wait_for(agent.welcomed.wait(), INTERVAL + 5)
            assert agent.refused is None
            scraped = await asyncio.to_thread(procs.scrape, port)
            assert scraped is not None
            assert scraped.value(refused, reason="mode_conflict") == 0.0
            assert status_.refused(scraped) is None
            recovered = [r.getMessage() for r in agent_lines(caplog, logging.INFO)]
            assert (
                f"agent {name}: recovered from the refusal (mode_conflict):"
                f" welcomed on 127.0.0.1:{replica.port}"
            ) in recovered
            assert len(agent_lines(caplog, logging.ERROR)) == 1
            assert agent_lines(caplog, logging.WARNING) == []
        finally:
            metrics.close()


async def test_a_certificate_for_another_agent_is_one_error_naming_the_fix(
    replica: server.Replica, pki_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"claims-{uuid.uuid4().hex[:8]}"  # with agent-a's certificate
    before = rejected(replica, "identity_mismatch")
    caplog.set_level(logging.DEBUG, logger="agent")
    async with running(
        replica,
        name=name,
        tls_dir=pki_dir / "agents" / "agent-a",
        state=tmp_path / "local.db",
        interval=1.0,
    ) as agent:
        await until(
            lambda: (
                rejected(replica, "identity_mismatch") - before >= 2
                and len(refusals_seen(caplog)) >= 2
            ),
            within=5,
            what="two refused hellos, each seen by the agent",
        )
        assert agent.refused == "identity_mismatch"
        assert fleet._agent_status(agent, stopped=False)["refused"] == "identity_mismatch"
        value = agent.registry.get_sample_value(
            catalog.AGENT_REFUSED.name, {"reason": "identity_mismatch"}
        )
        assert value == 1.0
        [error] = agent_lines(caplog, logging.ERROR)
        assert error.getMessage().endswith(
            f"to fix: the certificate in --tls-dir is issued for another agent: issue one for"
            f" {name} with `mooring pki issue agent --name {name}` or"
            f" `mooring agent create {name} --issue-cert`; retrying every 1s"
        )
        assert f"certificate identifies agent 'agent-a' but hello claims '{name}'" in (
            error.getMessage()
        )
        assert agent_lines(caplog, logging.WARNING) == []
        assert not agent.welcomed.is_set()
