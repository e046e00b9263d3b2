"""Test tiers by folder (a pytest plugin, loaded by tests/conftest.py).

A test's tier is the folder it lives in: every test under tests/unit carries the `unit`
marker, under tests/integration `integration`, and so on for e2e, chaos and fuzz, so
`pytest -m unit` runs exactly the unit tier. A `unit` marker on a test anywhere else is
an error: unit means fast, on fakes and loop time, and only tests/unit is held to that.

An async unit test runs on looptime's fake loop clock: the loop starts at 0, sleeps and
timeouts take no real time, and the loop's time moves only to the next timer due, so a
test asserts exact figures (`asyncio.get_running_loop().time() == 2.5`). A test that
waits on real I/O with a timeout opts out with `@pytest.mark.looptime(False)`.

An async test of the unit or integration tier fails when it leaves asyncio tasks
running once it and its fixtures have ended (tasks still being cancelled get a short
grace); the failure names each leaked task and the coroutine it runs.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TIERS = ("unit", "integration", "e2e", "chaos", "fuzz")
LEAK_CHECKED = ("unit", "integration")
LEAK_GRACE = 1.0
"""Seconds (real) a test's leftover tasks get to finish being cancelled before they count."""


def tier_of(item: pytest.Item) -> str | None:
    """The tier of the folder `item` lives in (None outside the tier folders)."""
    try:
        folder = item.path.relative_to(TESTS).parts[0]
    except (ValueError, IndexError):
        return None
    return folder if folder in TIERS else None


def pytest_configure(config: pytest.Config) -> None:
    # looptime (0.9) asks the loop policy for the main thread's loop before every test,
    # sync ones too. Until some loop has been set, the policy makes a new one then, which
    # nobody closes (an unclosed-loop ResourceWarning, an error under our filterwarnings).
    # Once "no loop" has been set, the policy says so instead, as it does anyway after the
    # first async test (pytest-asyncio sets and unsets loops).
    asyncio.set_event_loop(None)


def _is_async(item: pytest.Item) -> bool:
    return inspect.iscoroutinefunction(getattr(item, "obj", None))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    stray: list[str] = []
    for item in items:
        tier = tier_of(item)
        if tier is not None:
            item.add_marker(tier)
        if tier == "unit" and _is_async(item) and item.get_closest_marker("looptime") is None:
            item.add_marker(pytest.mark.looptime)
        if tier != "unit" and item.get_closest_marker("unit") is not None:
            stray.append(item.nodeid)
    if stray:
        raise pytest.UsageError(
            "marked `unit` outside tests/unit (a test's folder is its tier): " + ", ".join(stray)
        )


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """For the async tests of the leak-checked tiers, the check below (an async fixture:
    it runs on the test's own loop, set up before the test's fixtures and so torn down
    after them)."""
    if tier_of(request.node) in LEAK_CHECKED and _is_async(request.node):
        request.getfixturevalue("_tasks_left_running")


@pytest.fixture
async def _tasks_left_running() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    leaked = await leftovers(before)
    if leaked:
        said = "; ".join(sorted(describe(task) for task in leaked))
        for task in leaked:  # so they do not run on into the loop's close
            task.cancel()
        await asyncio.wait(leaked, timeout=LEAK_GRACE)
        pytest.fail(
            f"{len(leaked)} asyncio task(s) left running after the test: {said}", pytrace=False
        )


async def leftovers(
    before: set[asyncio.Task[object]], *, grace: float = LEAK_GRACE
) -> set[asyncio.Task[object]]:
    """The tasks started since `before` still not done after `grace` (real) seconds."""
    deadline = time.monotonic() + grace
    while True:
        await asyncio.sleep(0)
        left = {
            task
            for task in asyncio.all_tasks() - before - {asyncio.current_task()}
            if not task.done()
        }
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.01)


def describe(task: asyncio.Task[object]) -> str:
    """`name (coroutine at file:line)` of a task, where it is suspended now."""
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    frame = getattr(coro, "cr_frame", None)
    where = f" at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}" if frame else ""
    return f"{task.get_name()} ({name}{where})"
