"""Every long-lived task of a replica is supervised (issue 14): a fault injected into one
task of a real replica (in this process, on the session's etcd, with a real agent over
mTLS) is logged once and counted; a RESTART task comes back and works again while
readiness says it is down meanwhile, a FATAL one fences the replica, and `principal
serve` (a real process) then exits with status 3."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from mooring import _services as services
from principal import _server as server
from principal import _supervise as supervise
from proto import catalog
from tests import _argocd as argocd
from tests import _poll as poll
from tests import _procs as procs
from tests.election._helpers import until
from tests.integration._agents import running, serving

pytestmark = pytest.mark.integration

FAULT = "injected fault"


@pytest.fixture
async def replica(pki_dir: Path, etcd: services.EtcdCluster) -> AsyncIterator[server.Replica]:
    """A replica with every task, the --health port's `probes` included."""
    root = f"/supervision-{uuid.uuid4().hex[:8]}/"
    health = f"127.0.0.1:{procs.free_port()}"
    async with serving(pki_dir, etcd, root=root, health=health, auto_register=True) as rep:
        yield rep


def failures(replica: server.Replica) -> dict[str, float]:
    """mooring_task_failures_total by task."""
    return {
        sample.labels["task"]: sample.value
        for family in replica.registry.collect()
        if family.name == catalog.TASK_FAILURES.base
        for sample in family.samples
        if sample.name == catalog.TASK_FAILURES.name
    }


def failure_lines(caplog: pytest.LogCaptureFixture, task: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"task {task} failed: ")]


async def test_every_task_runs_supervised_and_counts_from_zero(replica: server.Replica) -> None:
    assert failures(replica) == dict.fromkeys(server.POLICIES, 0.0)
    running_now = {task.get_name() for task in asyncio.all_tasks() if not task.done()}
    assert set(server.POLICIES) <= running_now
    await until(lambda: replica.readiness()[0], within=10, what="ready")


async def test_a_restart_task_comes_back_and_readiness_is_false_meanwhile(
    replica: server.Replica,
    pki_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long enough a backoff for the test to see readiness false (0.25 to 0.5 s).
    replica.supervisor.backoff = supervise.Backoff(first=0.5, cap=0.5)
    tls = pki_dir / "agents" / "agent-a"
    async with running(replica, "agent-a", tls, tmp_path / "agent-a.db") as agent:
        await asyncio.wait_for(agent.welcomed.wait(), 15)
        await until(lambda: replica.readiness()[0], within=10, what="ready")
        # The change feed's next event raises once (in the dispatcher's task only), as a
        # bug in the watch would: a `store watch broke` StoreError is retried inside.
        parse = replica.desired.keys.parse_app
        faults: list[bytes] = []

        def faulty(key: bytes) -> object:
            current = asyncio.current_task()
            if not faults and current is not None and current.get_name() == "dispatch-watch":
                faults.append(key)
                raise RuntimeError(FAULT)
            return parse(key)

        monkeypatch.setattr(replica.desired.keys, "parse_app", faulty)
        caplog.set_level(logging.ERROR)
        await replica.desired.apply_desired("agent-a", argocd.application("web"))
        await until(lambda: not replica.readiness()[0], within=5, what="not ready")
        assert replica.readiness() == (False, "task dispatch-watch failed; restarting")
        await until(lambda: replica.readiness()[0], within=5, what="ready again")
        # The restarted watch resumes after the last change it delivered: the very change
        # that met the fault reaches the agent.
        await poll.eventually(
            lambda: agent.store.get("Application", "web"),
            until=lambda got: got is not None,
            what="the change to reach the agent",
        )
    assert len(faults) == 1
    assert failures(replica)["dispatch-watch"] == 1
    lines = failure_lines(caplog, "dispatch-watch")
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert re.fullmatch(
        rf"task dispatch-watch failed: RuntimeError: {FAULT}; restarting in 0\.\d\ds",
        lines[0].getMessage(),
    )
    assert lines[0].exc_info is not None and lines[0].levelno == logging.ERROR
    assert not replica.supervisor.fatal.is_set()


def break_sharding(replica: server.Replica, monkeypatch: pytest.MonkeyPatch) -> None:
    """The apply loop's next shard-map apply raises."""

    def boom() -> None:
        raise RuntimeError(FAULT)

    monkeypatch.setattr(replica.sharding, "_apply", boom)
    replica.sharding.changed.set()


def break_coordinator(replica: server.Replica, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next write of the member record raises (the coordinator's task group fails)."""

    async def boom() -> None:
        raise RuntimeError(FAULT)

    monkeypatch.setattr(replica.coordinator.membership, "_write", boom)


@pytest.mark.parametrize(
    ("task", "inject"), [("sharding", break_sharding), ("coordinator", break_coordinator)]
)
async def test_a_fatal_task_fences_the_replica(
    task: str,
    inject: Callable[[server.Replica, pytest.MonkeyPatch], None],
    replica: server.Replica,
    pki_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls = pki_dir / "agents" / "agent-b"
    async with running(replica, "agent-b", tls, tmp_path / "agent-b.db") as agent:
        await asyncio.wait_for(agent.welcomed.wait(), 15)
        served = list(replica.sessions.sessions.values())
        assert served
        caplog.set_level(logging.ERROR)
        inject(replica, monkeypatch)
        await asyncio.wait_for(replica.supervisor.fatal.wait(), 10)
        assert replica.supervisor.failed == task
        assert replica.readiness() == (False, f"fenced: task {task} failed")
        assert all(s.closed and s.close_label == "self_fence" for s in served)
        fenced = replica.metrics.sessions_closed.labels("self_fence")
        await until(lambda: fenced._value.get() >= len(served), within=5, what="counted")
    await replica.stop()  # what `run` does next; nothing there logs the failure again
    assert failures(replica)[task] == 1
    lines = failure_lines(caplog, task)
    assert len(lines) == 1
    assert lines[0].getMessage() == (
        f"task {task} failed: RuntimeError: {FAULT}; replica p1 fences itself (closes every"
        " session) and stops (exit status 3)"
    )
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [lines[0].getMessage()]


SERVE_WITH_A_FAULT = """
import sys
from principal import _sharding

def boom(self):
    raise RuntimeError("injected fault")

_sharding.Sharding._apply = boom  # the first shard-map apply fails
from mooring import _cli
sys.exit(_cli.main(sys.argv[1:]))
"""


def test_principal_serve_exits_3_after_a_fatal_task_failed(
    pki_dir: Path, etcd: services.EtcdCluster, prefix: str
) -> None:
    settings = procs.replica_settings(
        "p1",
        listen="127.0.0.1:0",
        advertise="127.0.0.1:9",
        coordination=etcd.url,
        store_root=f"{prefix}/",
        tls_dir=pki_dir / "principals" / "p1",
    )
    argv = ["--log-level", "ERROR", *procs.serve(settings)]
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SERVE_WITH_A_FAULT, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    took = time.monotonic() - began
    assert result.returncode == supervise.EXIT_FATAL == 3, result.stderr
    records = [line for line in result.stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(records) == 1, result.stderr  # the traceback's lines are indented under it
    assert f"task sharding failed: RuntimeError: {FAULT}; replica p1 fences itself" in records[0]
    assert "task=sharding" in records[0] and "replica=p1" in records[0]
    assert took < 30, f"took {took:.1f}s to exit"
