"""The tests' one way to wait: `wait_for` (plain code) and `eventually` (coroutines)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests import _poll as poll

pytestmark = pytest.mark.unit


def counter() -> itertools.count[int]:
    return itertools.count(1)


def test_wait_for_returns_the_first_value_that_satisfies() -> None:
    looks = counter()
    assert poll.wait_for(lambda: next(looks) >= 3 and "three", interval=0) == "three"
    looks = counter()
    assert poll.wait_for(lambda: next(looks), until=lambda n: n == 4, interval=0) == 4


def test_wait_for_says_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError) as failed:
        poll.wait_for(lambda: [], timeout=0.05, interval=0.01, what="a row")
    assert str(failed.value) == "timed out after 0.05s waiting for a row (last: [])"
    looks = counter()
    with pytest.raises(AssertionError, match=r"waiting for five \(last: \d+\)$"):
        poll.wait_for(lambda: next(looks), until=lambda n: n < 0, timeout=0.05, what="five")


def test_wait_for_retries_only_the_errors_it_is_told_to() -> None:
    looks = counter()

    def flaky() -> int:
        if (n := next(looks)) < 3:
            raise ConnectionError(f"look {n}")
        return n

    assert poll.wait_for(flaky, until=poll.answered, retrying=(ConnectionError,), interval=0) == 3
    with pytest.raises(ConnectionError):
        poll.wait_for(flaky_from_the_start, interval=0)
    with pytest.raises(AssertionError, match=r"last: ConnectionError\('down'\)") as failed:
        poll.wait_for(
            flaky_from_the_start, retrying=(ConnectionError,), timeout=0.05, interval=0.01
        )
    assert isinstance(failed.value.__cause__, ConnectionError)


def flaky_from_the_start() -> int:
    raise ConnectionError("down")


async def test_eventually_takes_coroutines_and_plain_callables() -> None:
    looks = counter()

    async def read() -> int:
        return next(looks)

    assert await poll.eventually(read, until=lambda n: n == 3, interval=0) == 3
    assert await poll.eventually(lambda: next(looks), until=lambda n: n == 5, interval=0) == 5


async def test_eventually_says_what_it_waited_for_and_the_last_value() -> None:
    async def rows() -> list[str]:
        return []

    with pytest.raises(AssertionError) as failed:
        await poll.eventually(rows, timeout=0.05, interval=0.01, what="an unsynced row")
    assert str(failed.value) == "timed out after 0.05s waiting for an unsynced row (last: [])"
    assert asyncio.get_running_loop().time() == 0.06  # the first look past the deadline


async def test_eventually_retries_the_errors_it_is_told_to() -> None:
    looks = counter()

    async def store_call() -> None:
        if next(looks) < 3:
            raise TimeoutError("unavailable")

    await poll.eventually(store_call, until=poll.answered, retrying=(TimeoutError,), interval=0)
    assert next(looks) == 4
