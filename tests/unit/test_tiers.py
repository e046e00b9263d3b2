"""The tests' own tier plugin (tests/_tiers.py): markers by folder, loop time for the
unit tier, and the leaked-task check's parts."""

from __future__ import annotations

import asyncio

import pytest

from tests import _tiers as tiers


def test_a_test_is_marked_with_the_tier_of_its_folder(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("unit") is not None
    assert tiers.tier_of(request.node) == "unit"


async def test_an_async_unit_test_runs_on_loop_time(request: pytest.FixtureRequest) -> None:
    assert request.node.get_closest_marker("looptime") is not None
    loop = asyncio.get_running_loop()
    await asyncio.sleep(3600)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.5):
            await asyncio.Event().wait()
    assert loop.time() == 3601.5


async def test_the_check_names_the_tasks_left_running_and_their_coroutines() -> None:
    async def serve_forever() -> None:
        await asyncio.Event().wait()

    before = asyncio.all_tasks()
    left = asyncio.create_task(serve_forever(), name="p1:serve")
    done = asyncio.create_task(asyncio.sleep(0))
    cancelled = asyncio.create_task(serve_forever())
    await asyncio.sleep(0)
    cancelled.cancel()  # still being cancelled: not a leak
    try:
        assert await tiers.leftovers(before, grace=0) == {left}
        assert tiers.describe(left).startswith(
            "p1:serve (test_the_check_names_the_tasks_left_running_and_their_coroutines"
            ".<locals>.serve_forever at test_tiers.py:"
        )
    finally:
        left.cancel()
        await asyncio.gather(left, done, cancelled, return_exceptions=True)
