"""The elector on the memory store: settings, state machine, local deadline, metrics.

Its behaviour on every store adapter (one leader, takeover, hung holder, release, fencing,
wall-clock jumps, etcd member loss) is in test_elector_conformance.py.
"""

from __future__ import annotations

import asyncio
import time

import prometheus_client
import pytest

from election import _electing as electing
from election import _settings as settings_
from election import lease
from tests.election import _helpers as helpers

FAST = helpers.FAST


def make(store, name: str, **kwargs) -> electing.Elector:  # type: ignore[no-untyped-def]
    return electing.Elector(store, replica_id=lease.ReplicaId(name), settings=FAST, **kwargs)


# -- settings --


def test_default_settings_are_fast_and_valid() -> None:
    defaults = settings_.ElectionSettings()
    assert (defaults.lease_duration, defaults.renew_deadline, defaults.retry_period) == (4, 3, 0.5)
    assert defaults.request_timeout == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease_duration": 3.0, "renew_deadline": 3.0}, "lease_duration"),
        ({"renew_deadline": 0.6, "retry_period": 0.5, "request_timeout": 0.3}, "1.2 x retry"),
        ({"request_timeout": 2.0}, "request_timeout"),
        ({"retry_period": 0.0}, "positive"),
        ({"lease_duration": float("nan")}, "positive"),
        ({"request_timeout": -1.0}, "positive"),
    ],
)
def test_settings_reject_unsafe_timing(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings_.ElectionSettings(**kwargs)


def test_transition_table_is_closed() -> None:
    for source, targets in lease.TRANSITIONS.items():
        assert source not in targets
        assert lease.State.STOPPED in targets or source is lease.State.STOPPED


# -- memory store, loop clock (the elector on every adapter: test_elector_conformance) --


async def test_is_leader_checks_the_local_deadline_at_call_time() -> None:
    store = helpers.stores(1)[0]
    registry = prometheus_client.CollectorRegistry()
    elector = make(store, "solo", registry=registry)
    async with helpers.electing_all([elector]):
        await helpers.until(elector.is_leader)
        assert registry.get_sample_value("mooring_leader") == 1.0
        # A stopped (SIGSTOP) process: the loop runs nothing, yet the clock moves on.
        time.sleep(FAST.renew_deadline + 0.05)  # noqa: ASYNC251 - freezing the loop is the point
        assert not elector.is_leader()
        assert elector.fencing_token is None
        assert registry.get_sample_value("mooring_leader") == 0.0


async def test_failing_leader_work_releases_the_lease() -> None:
    stores = helpers.stores(2)
    attempts: list[str] = []

    async def flaky(fence: electing.Fence) -> None:
        attempts.append(fence.holder)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    electors = [make(store, f"r{i}") for i, store in enumerate(stores)]
    tasks = [asyncio.create_task(e.run(flaky)) for e in electors]
    try:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await helpers.until(lambda: len(attempts) == 2, what="a second term")
        assert loop.time() - start < FAST.lease_duration  # released, not expired
        assert attempts[0] != attempts[1]  # the failed leader stood back
    finally:
        for elector in electors:
            elector.stop()
        await asyncio.gather(*tasks)


async def test_metrics_follow_the_state_machine() -> None:
    store = helpers.stores(1)[0]
    registry = prometheus_client.CollectorRegistry()
    elector = make(store, "solo", registry=registry)
    async with helpers.electing_all([elector]):
        await helpers.until(elector.is_leader)
        await helpers.until(
            lambda: (registry.get_sample_value("mooring_lease_renew_seconds_count") or 0) >= 2
        )
        assert registry.get_sample_value("mooring_lease_transitions_total") == 1.0
        assert registry.get_sample_value("mooring_election_state", {"state": "leader"}) == 1.0
        assert registry.get_sample_value("mooring_lease_renew_failures_total") == 0.0
        store.fail = True
        await helpers.until(lambda: not elector.is_leader())
        assert (registry.get_sample_value("mooring_lease_renew_failures_total") or 0) >= 1
        store.fail = False
    assert registry.get_sample_value("mooring_election_state", {"state": "stopped"}) == 1.0
    moves = registry.get_sample_value(
        "mooring_election_state_transitions_total",
        {"from_state": "leader", "to_state": "follower"},
    )
    assert moves == 1.0


async def test_elector_runs_once() -> None:
    elector = make(helpers.stores(1)[0], "solo")
    elector.stop()
    await elector.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await elector.run()
