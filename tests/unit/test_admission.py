"""Admission limits on a fake clock: the per-agent token bucket and the setting-up cap."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from principal._admission import Admission, AdmissionSettings
from principal._session import Rejection

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_agent_gets_its_burst_then_its_rate_and_is_told_when_to_return() -> None:
    clock = Clock()
    gate = Admission(AdmissionSettings(reconnect_burst=3, reconnect_rate=0.5), clock=clock)
    for _ in range(3):
        gate.enter("a")()
    with pytest.raises(Rejection) as caught:
        gate.enter("a")
    assert caught.value.reason == "rate_limited"
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.retry_after == pytest.approx(2.0)  # one token at 0.5/s
    gate.enter("b")()  # another agent has its own bucket
    clock.now += 1.0  # half a token: still refused, sooner
    with pytest.raises(Rejection) as again:
        gate.enter("a")
    assert again.value.retry_after == pytest.approx(1.0)
    clock.now += 1.0
    gate.enter("a")()
    clock.now += 60.0  # refills to the burst, never beyond
    for _ in range(3):
        gate.enter("a")()
    with pytest.raises(Rejection):
        gate.enter("a")


async def test_the_bucket_refills_on_the_loops_clock() -> None:
    """An agent that comes back exactly when told (its default clock is the loop's: loop
    time is faked here) gets its burst of 3 at 0 s, then one stream every 2 s (0.5/s)."""
    loop = asyncio.get_running_loop()
    gate = Admission(AdmissionSettings(reconnect_burst=3, reconnect_rate=0.5))
    admitted: list[float] = []
    told: list[float] = []
    while len(admitted) < 6:
        try:
            gate.enter("a")()
        except Rejection as refused:
            told.append(refused.retry_after)
            await asyncio.sleep(refused.retry_after)
        else:
            admitted.append(loop.time())
    assert admitted == [0.0, 0.0, 0.0, 2.0, 4.0, 6.0]
    assert told == [2.0, 2.0, 2.0]
    await asyncio.sleep(10.0)  # idle for longer than a refill: the burst again, no more
    for _ in range(3):
        gate.enter("a")()
    with pytest.raises(Rejection) as again:
        gate.enter("a")
    assert (loop.time(), again.value.retry_after) == (16.0, 2.0)


def test_streams_beyond_the_setting_up_cap_are_busy_until_one_leaves() -> None:
    gate = Admission(AdmissionSettings(max_setting_up=2, busy_retry_after=1.5), clock=Clock())
    leave_a = gate.enter("a")
    gate.enter("b")
    with pytest.raises(Rejection) as caught:
        gate.enter("c")
    assert (caught.value.reason, caught.value.retry_after) == ("busy", 1.5)
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    leave_a()
    leave_a()  # once only
    gate.enter("c")
    assert gate.setting_up == 2


def test_full_buckets_are_forgotten_past_the_tracking_limit() -> None:
    clock = Clock()
    gate = Admission(AdmissionSettings(reconnect_burst=2, max_tracked=3), clock=clock)
    for name in ("a", "b", "c"):
        gate.enter(name)()
    clock.now += 10.0  # all refilled
    gate.enter("d")()  # the fourth: the refilled three go
    assert set(gate._buckets) == {"d"}


@pytest.mark.parametrize(
    "bad",
    [{"max_setting_up": 0}, {"reconnect_burst": 0}, {"reconnect_rate": 0.0}],
)
def test_settings_that_admit_nobody_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        AdmissionSettings(**bad)  # type: ignore[arg-type]
