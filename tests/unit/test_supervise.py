"""The supervisor of a replica's long-lived tasks (principal/_supervise.py): an unexpected
error is logged once and counted, then the task restarts with backoff (RESTART) or the
replica is fenced (FATAL); cancellation and a normal return are no failure. Backoff waits
go through an injected sleep, so no test waits for real."""

from __future__ import annotations

import asyncio
import logging

import prometheus_client as prom
import pytest

from principal import _supervise as supervise
from proto import _logfields as logfields
from proto import catalog
from tests.election._helpers import until

pytestmark = pytest.mark.unit

RESTART, FATAL = supervise.Policy.RESTART, supervise.Policy.FATAL


class Harness:
    """A supervisor whose backoff sleeps wait for `wake()`, and what it did."""

    def __init__(self, *, clock: list[float] | None = None) -> None:
        self.registry = prom.CollectorRegistry()
        self.fenced: list[str] = []
        self.delays: list[float] = []
        self._wakes: asyncio.Queue[None] = asyncio.Queue()
        self.supervisor = supervise.Supervisor(
            replica="p1",
            failures=catalog.counter(self.registry, catalog.TASK_FAILURES),
            on_fatal=self.fenced.append,
            sleep=self._sleep,
            clock=(lambda: clock[0]) if clock is not None else None,
        )

    async def _sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self._wakes.get()

    def wake(self) -> None:
        self._wakes.put_nowait(None)

    def failures(self, task: str) -> float | None:
        return self.registry.get_sample_value(catalog.TASK_FAILURES.name, {"task": task})


def failed_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "principal._supervise"]


def test_backoff_doubles_from_first_to_cap_with_jitter() -> None:
    backoff = supervise.Backoff(first=0.1, cap=5.0)
    for failures, base in [(1, 0.1), (2, 0.2), (3, 0.4), (6, 3.2), (7, 5.0), (10_000, 5.0)]:
        delays = [backoff.delay(failures) for _ in range(50)]
        assert all(base / 2 <= d <= base for d in delays), (failures, delays)
        assert len(set(delays)) > 1  # jittered
    with pytest.raises(ValueError, match="0 < first <= cap"):
        supervise.Backoff(first=1.0, cap=0.5)
    with pytest.raises(ValueError, match="reset_after must be positive"):
        supervise.Backoff(reset_after=0)


async def test_restart_logs_once_counts_marks_down_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()
    sup = harness.supervisor
    runs = 0
    healthy = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 2:
            raise RuntimeError(f"boom {runs}\nsecond line")
        healthy.set()
        await asyncio.Event().wait()

    with caplog.at_level(logging.DEBUG, logger="principal._supervise"):
        task = sup.supervise("presence", flaky, policy=RESTART)
        assert harness.failures("presence") == 0  # the series exists before any failure
        await until(lambda: len(harness.delays) == 1, what="the first backoff")
        assert sup.down == {"presence"} and sup.failed is None
        assert harness.failures("presence") == 1
        harness.wake()
        await until(lambda: len(harness.delays) == 2, what="the second backoff")
        harness.wake()
        await asyncio.wait_for(healthy.wait(), 5)
        assert sup.down == frozenset()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert 0.05 <= harness.delays[0] <= 0.1 and 0.1 <= harness.delays[1] <= 0.2
    assert harness.failures("presence") == 2
    lines = failed_lines(caplog)
    assert [r.getMessage() for r in lines] == [
        f"task presence failed: RuntimeError: boom 1; restarting in {harness.delays[0]:.2f}s",
        f"task presence failed: RuntimeError: boom 2; restarting in {harness.delays[1]:.2f}s",
    ]
    assert all(r.levelno == logging.ERROR and r.exc_info for r in lines)  # with traceback
    assert logfields.fields_of(lines[0]) == {
        "replica": "p1",
        "task": "presence",
        "reason": "restart",
        "error": "RuntimeError: boom 1",
    }
    assert harness.fenced == [] and not sup.fatal.is_set()


async def test_a_run_that_lasted_resets_the_backoff() -> None:
    now = [0.0]
    harness = Harness(clock=now)
    runs = 0

    async def failing() -> None:
        nonlocal runs
        runs += 1
        if runs == 3:
            now[0] += 31.0  # this run lasted longer than reset_after
        raise RuntimeError("boom")

    task = harness.supervisor.supervise("serving", failing, policy=RESTART)
    for count in (1, 2, 3):
        await until(lambda count=count: len(harness.delays) == count, what=f"backoff {count}")
        harness.wake()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    first, second, third = harness.delays
    assert first <= 0.1 and 0.1 <= second <= 0.2 and third <= 0.1


async def test_fatal_fences_once_and_does_not_restart(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    sup = harness.supervisor

    async def group_fails() -> None:  # as Sharding.run does: a task group of loops
        async with asyncio.TaskGroup() as group:
            group.create_task(asyncio.Event().wait())
            group.create_task(_raise(RuntimeError("map lost")))

    with caplog.at_level(logging.ERROR, logger="principal._supervise"):
        first = sup.supervise("sharding", group_fails, policy=FATAL)
        await asyncio.wait_for(sup.fatal.wait(), 5)
        await first  # done: not restarted
        assert harness.fenced == ["sharding"] and sup.failed == "sharding"
        second = sup.supervise("holds", lambda: _raise(ValueError("lost")), policy=FATAL)
        await second
    assert harness.fenced == ["sharding"] and sup.failed == "sharding"  # fenced once
    assert harness.failures("sharding") == 1 and harness.failures("holds") == 1
    assert harness.delays == []
    lines = failed_lines(caplog)
    assert lines[0].getMessage() == (
        "task sharding failed: RuntimeError: map lost; replica p1 fences itself (closes every"
        " session) and stops (exit status 3)"
    )
    assert isinstance(lines[0].exc_info and lines[0].exc_info[1], ExceptionGroup)
    assert logfields.fields_of(lines[0])["reason"] == "fatal"
    assert len(lines) == 2


async def test_cancellation_and_a_return_are_no_failure(caplog: pytest.LogCaptureFixture) -> None:
    harness = Harness()
    sup = harness.supervisor
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    async def done() -> None:
        return None

    with caplog.at_level(logging.DEBUG, logger="principal._supervise"):
        waiting = sup.supervise("probes", forever, policy=RESTART)
        returning = sup.supervise("coordinator", done, policy=FATAL)
        await started.wait()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await returning
    assert failed_lines(caplog) == []
    assert harness.failures("probes") == 0 and harness.failures("coordinator") == 0
    assert not sup.fatal.is_set()


async def test_a_cancellation_leaking_out_of_a_task_is_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()
    runs = 0

    async def leaks() -> None:  # e.g. it awaited a future someone else cancelled
        nonlocal runs
        runs += 1
        if runs == 1:
            raise asyncio.CancelledError()
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="principal._supervise"):
        task = harness.supervisor.supervise("deliveries", leaks, policy=RESTART)
        await until(lambda: len(harness.delays) == 1, what="a backoff")
        harness.wake()
        await until(lambda: runs == 2, what="the restart")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert harness.failures("deliveries") == 1
    assert [r.getMessage().split(";")[0] for r in failed_lines(caplog)] == [
        "task deliveries failed: CancelledError"
    ]


async def _raise(err: Exception) -> None:
    raise err
