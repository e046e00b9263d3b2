"""Every process's metrics port against `proto.catalog`, on a real local cluster.

A family exported but not catalogued, or catalogued for a component but never exported
by it, fails; so do `_created` series and a metrics port that answers every path alike.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import parser as prom_parser

from mooring import _processes as processes
from mooring import _state as state_
from proto import catalog, exposition
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[state_.ClusterState]:
    directory = tmp_path_factory.mktemp("catalog") / "cluster"
    mooring(
        "up", "--detach", "--replicas", "2", "--agents", "2", "--agent-processes",
        "--dir", str(directory),
    )  # fmt: skip
    state = state_.load(directory)
    try:
        yield state
    finally:
        mooring("down", "--dir", str(directory), check=False)
        for handle in state_.load(directory).handles():
            if handle is not None and processes.alive(handle):
                os.kill(handle.pid, 9)


def get(address: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def families(address: str) -> tuple[set[str], str]:
    status, text = get(address, "/metrics")
    assert status == 200
    return {f.name for f in prom_parser.text_string_to_metric_families(text)}, text


def expected(component: catalog.Component) -> set[str]:
    # The parser names a counter's family without its `_total`.
    return {f.base for f in catalog.FAMILIES if component in f.components}


def test_every_process_exports_exactly_its_catalogued_families(
    cluster: state_.ClusterState,
) -> None:
    processes_ = [(catalog.Component.PRINCIPAL, r.metrics) for r in cluster.replicas]
    processes_ += [(catalog.Component.AGENT, a.metrics) for a in cluster.agents]
    assert len(processes_) == 4 and all(address for _, address in processes_)
    for component, address in processes_:
        assert address is not None
        exported, text = families(address)  # ours and the process collector's, nothing else
        assert exported - expected(component) == set(), f"{address}: not catalogued"
        assert expected(component) - exported == set(), f"{address}: catalogued, never exported"
        assert "_created" not in text
        assert text.count(f"# TYPE {catalog.PROCESS_OPEN_FDS.name} ") == 1, address


def test_health_paths_are_separate_from_metrics(cluster: state_.ClusterState) -> None:
    replica = cluster.replicas[0].metrics
    agent = cluster.agents[0].metrics
    assert replica is not None and agent is not None
    for address in (replica, agent):
        assert get(address, "/healthz") == (200, "ok\n")
        status, body = get(address, "/")
        assert status == 404 and "/metrics" in body
        assert "mooring_" not in get(address, "/readyz")[1]
    status, body = wait_for(
        lambda: (got := get(replica, "/readyz"))[0] == 200 and got,
        timeout=15,
        interval=0.2,
        what="replica ready",
    )
    assert body.startswith("member, shard map epoch ")
    status, body = wait_for(
        lambda: (got := get(agent, "/readyz"))[0] == 200 and got,
        timeout=15,
        interval=0.2,
        what="agent ready",
    )
    assert body.startswith("local store ok; ")


def test_alerting_series_have_values(cluster: state_.ClusterState) -> None:
    """The series the alert rules read carry real values, not just declarations."""

    def settled() -> list[exposition.Samples] | None:
        got = [exposition.scrape(r.metrics, timeout=5) for r in cluster.replicas if r.metrics]
        answered = [s for s in got if s is not None]
        seen = sum(len(s.series(catalog.AGENT_LAST_SEEN.name)) for s in answered)
        registered = [s.value(catalog.AGENTS_REGISTERED.name) for s in answered]
        return answered if seen == 2 and registered == [2.0, 2.0] else None

    replicas = wait_for(
        settled, timeout=20, interval=0.3, what="both replicas list 2 agents and their last-seen"
    )
    assert [s.value(catalog.MEMBER.name) for s in replicas] == [1.0, 1.0]
    assert {s.value(catalog.LEADER.name) for s in replicas} == {0.0, 1.0}  # one leader of two
    assert all(s.value(catalog.AGENTS_REGISTERED.name) == 2 for s in replicas)
    assert all(s.value(catalog.STANDIN_SESSIONS_OPEN.name) == 0 for s in replicas)
    now = time.time()
    for s in replicas:
        serving = s.value(catalog.CERTIFICATE_EXPIRY.name, certificate="serving")
        assert serving is not None and now + 300 * 86400 < serving < now + 400 * 86400  # 365 d
        for labels, value in s.series(catalog.AGENT_LAST_SEEN.name).items():
            assert now - 15 < value <= now + 1, labels  # connected: seen "now"
        (build,) = s.series(catalog.BUILD_INFO.name)
        assert dict(build)["component"] == "principal"
        assert dict(build)["protocol"] == "1-1"
