"""Waiting for a condition with a deadline, never a fixed sleep: `wait_for` in plain code
(on the monotonic clock), `eventually` in a coroutine (on the loop's clock).

Both call `check()` every `interval` seconds until `until(value)` holds for what it
returned (by default: until the value is truthy), and return that value. A check that
raises one of `retrying` is "not yet" (a store call while the store is down); any other
exception propagates. Past `timeout` seconds they raise an AssertionError that says what
was awaited and the last value (or error) seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

__all__ = ["answered", "eventually", "wait_for"]

T = TypeVar("T")

Errors = tuple[type[Exception], ...]


def answered(value: object) -> bool:
    """An `until` for a check that only has to stop raising: any value will do."""
    return True


def _timed_out(what: str, timeout: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r:.400})")


def wait_for(
    check: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "condition",
    until: Callable[[T], object] = bool,
    retrying: Errors = (),
) -> T:
    """`check()` until `until` holds for its value; that value."""
    deadline = time.monotonic() + timeout
    while True:
        error: Exception | None = None
        try:
            value = check()
            if until(value):
                return value
            last: object = value
        except retrying as err:
            last = error = err
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout, last) from error
        time.sleep(interval)


async def eventually(
    check: Callable[[], Awaitable[T]] | Callable[[], T],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline between looks: no check is cancelled
    interval: float = 0.05,
    what: str = "condition",
    until: Callable[[T], object] = bool,
    retrying: Errors = (),
) -> T:
    """`check()` (awaited when it returns an awaitable) until `until` holds for its
    value; that value. A check in flight at the deadline is awaited, not cancelled."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        error: Exception | None = None
        try:
            got = check()
            value = cast(T, await got if inspect.isawaitable(got) else got)
            if until(value):
                return value
            last: object = value
        except retrying as err:
            last = error = err
        if loop.time() > deadline:
            raise _timed_out(what, timeout, last) from error
        await asyncio.sleep(interval)
