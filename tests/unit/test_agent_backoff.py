"""The agent's reconnect loop (agent/_client.py Agent.run) on loop time: sweeps of every
endpoint, endpoint cooldowns, and the backoff between failed sweeps (full-jitter
exponential, here at the top of its jitter; a replica's retry-after; the long wait after
a refusal no retry cures). Dials fail from a stand-in for one session: no network."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from agent import _client as client
from agent import _outcome as outcome
from agent import _settings as settings_
from principal import _pki as pki

P1, P2 = "10.0.0.1:8443", "10.0.0.2:8443"


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root)
    return pki.issue_agent(root, name="edge")


@pytest.fixture(autouse=True)
def top_of_the_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every random wait at its upper bound, so the waits are exact figures."""
    monkeypatch.setattr(random, "uniform", lambda low, high: high)


async def dials(
    tls_dir: Path, tmp_path: Path, failure: outcome.ConnectFailed, *, count: int
) -> list[tuple[float, str]]:
    """Run an agent whose every dial fails with `failure`, for `count` dials: when (loop
    time) it dialled which endpoint."""
    agent = client.Agent(
        settings_.AgentSettings(
            name="edge",
            mode="managed",
            endpoints=(P1, P2),
            tls_dir=tls_dir,
            state=tmp_path / "state.db",
            backoff_base=0.2,
            backoff_cap=4.0,
            endpoint_cooldown=1.0,
            refused_retry_interval=60.0,
        )
    )
    loop = asyncio.get_running_loop()
    dialled: list[tuple[float, str]] = []

    async def session(
        target: str, *, hops: int, unreachable: str = ""
    ) -> outcome.Redirected | outcome.Ended:
        dialled.append((loop.time(), target))
        if len(dialled) == count:
            agent.stop()
        raise failure

    agent._session = session  # type: ignore[method-assign]
    await asyncio.wait_for(agent.run(), timeout=600)
    return dialled


async def test_failed_sweeps_back_off_exponentially_and_rest_each_failed_endpoint(
    tls_dir: Path, tmp_path: Path
) -> None:
    refused = outcome.ConnectFailed("connection refused", reason=outcome.DialFailure.UNAVAILABLE)
    got = await dials(tls_dir, tmp_path, refused, count=11)
    # Sweeps at 0, then after 0.2, 0.4, 0.8, 1.6, 3.2 and 4.0 (the cap), 4.0 s. An endpoint
    # rests 1 s after it failed; when all rest, the sweep dials the one back first.
    assert got == [
        (0.0, P1),
        (0.0, P2),
        (0.2, P1),  # both rest until 1.0: P1 first of the two
        (0.6, P2),  # P1 rests until 1.2, P2 until 1.0
        (1.4, P1),  # P2 rests until 1.6
        (3.0, P1),
        (3.0, P2),
        (6.2, P1),
        (6.2, P2),
        (10.2, P1),
        (10.2, P2),
    ]


@pytest.mark.parametrize(
    ("failure", "sweeps"),
    [
        pytest.param(
            outcome.ConnectFailed(
                "held elsewhere",
                reason=outcome.DialFailure.BUSY,
                answered=True,
                refusal="held",
                retry_after=5.0,
            ),
            [0.0, 7.5, 15.0],  # up to half again what the replica asked for, every time
            id="retry-after",
        ),
        pytest.param(
            outcome.ConnectFailed(
                "not this agent",
                reason=outcome.DialFailure.REJECTED,
                answered=True,
                refusal="identity_mismatch",
            ),
            [0.0, 60.0, 120.0],  # refused_retry_interval
            id="refused-for-good",
        ),
    ],
)
async def test_a_replica_that_answered_sets_the_wait(
    tls_dir: Path, tmp_path: Path, failure: outcome.ConnectFailed, sweeps: list[float]
) -> None:
    got = await dials(tls_dir, tmp_path, failure, count=6)
    assert got == [(at, endpoint) for at in sweeps for endpoint in (P1, P2)]
