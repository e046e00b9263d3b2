"""The alert rules on a real Prometheus scraping a real local cluster (`mooring up --prometheus`).

Faults are injected into the running processes and the alerts are read back through
Prometheus' HTTP API. Each measured delay is checked against what the rule promises:
at least its `for:`, at most `for:` plus the time the condition takes to become true,
a scrape interval, an evaluation interval and a little polling slack.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mooring import _monitoring as monitoring
from mooring import _processes as processes
from mooring import _state as state_
from tests._poll import wait_for
from tests._procs import mooring

pytestmark = pytest.mark.e2e

FOR_SCALE = 0.1
SLACK = 2.0  # seconds: our polling, process scheduling on 2 busy cores
LEASE_DURATION = 4.0  # `principal serve`'s default, which `mooring up` keeps
RENEW_DEADLINE = 3.0


def rule_for(alert: str) -> float:
    for group in monitoring.rules()["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == alert:
                return monitoring.parse_duration(rule.get("for", "0s")) * FOR_SCALE
    raise KeyError(alert)


class Alerts:
    """Polls /api/v1/alerts four times a second and keeps when each alert changed state."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.history: list[tuple[float, str, str, dict[str, str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def current(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=2) as resp:
            alerts: list[dict[str, Any]] = json.load(resp)["data"]["alerts"]
            return alerts

    def targets_up(self) -> int:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=2) as resp:
            targets = json.load(resp)["data"]["activeTargets"]
        return sum(1 for t in targets if t["health"] == "up")

    def _poll(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                for alert in self.current():
                    labels = alert["labels"]
                    self.history.append((now, labels["alertname"], alert["state"], labels))
            except OSError:
                pass
            self._stop.wait(0.25)

    def first(self, name: str, state: str, *, since: float, **labels: str) -> float | None:
        for at, alertname, got, have in self.history:
            if at >= since and alertname == name and got == state:
                if all(have.get(k) == v for k, v in labels.items()):
                    return at
        return None

    def wait(self, name: str, state: str, *, since: float, timeout: float, **labels: str) -> float:
        return wait_for(
            lambda: self.first(name, state, since=since, **labels),
            timeout=timeout,
            interval=0.1,
            what=f"{name} {state} {labels or ''}",
        )

    def active(self, name: str, **labels: str) -> bool:
        return any(
            a["labels"]["alertname"] == name
            and all(a["labels"].get(k) == v for k, v in labels.items())
            for a in self.current()
        )

    def resolved(self, name: str, *, timeout: float, **labels: str) -> float:
        wait_for(
            lambda: not self.active(name, **labels),
            timeout=timeout,
            interval=0.1,
            what=f"{name} resolved",
        )
        return time.monotonic()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("alerts") / "cluster"
    out = mooring(
        "up", "--detach", "--replicas", "3", "--agents", "3", "--agent-processes",
        "--prometheus", "--alert-for-scale", str(FOR_SCALE), "--dir", str(directory),
    ).stdout  # fmt: skip
    assert "prometheus: http://127.0.0.1:" in out
    try:
        yield directory
    finally:
        state = state_.load(directory)
        for member in state.etcd:  # never leave etcd stopped
            if member.process and processes.alive(member.process):
                os.kill(member.process.pid, signal.SIGCONT)
        mooring("down", "--dir", str(directory), check=False)
        for handle in state_.load(directory).handles():
            if handle is not None and processes.alive(handle):
                os.kill(handle.pid, signal.SIGKILL)


def status(directory: Path) -> dict[str, Any]:
    return json.loads(mooring("status", "--json", "--dir", str(directory)).stdout)


def test_alerts_fire_and_resolve_on_real_faults(cluster: Path) -> None:
    state = state_.load(cluster)
    assert state.prometheus is not None
    alerts = Alerts(f"http://{state.prometheus.endpoint}")
    figures: dict[str, float] = {}
    try:
        # A healthy cluster: every target up, nothing pending or firing.
        wait_for(
            lambda: status(cluster)["agents_connected"] == 3,
            timeout=30,
            interval=0.3,
            what="3 agents connected",
        )
        # Before its first scrapes, `absent()` rules hold: wait until every target has been
        # scraped, then for a quiet evaluation; a rule that holds goes pending at the next.
        wait_for(lambda: alerts.targets_up() >= 3 + 3, timeout=20, interval=0.3, what="targets")
        wait_for(lambda: not alerts.current(), timeout=20, interval=0.3, what="no alert active")
        time.sleep(monitoring.SCRAPE_INTERVAL + monitoring.EVALUATION_INTERVAL + SLACK)
        assert alerts.current() == []

        # Kill the leader and stop one agent at the same moment.
        leader_id = status(cluster)["leader"]
        leader = next(r for r in state.replicas if r.id == leader_id)
        agent = state.agents[0]
        assert leader.process is not None and agent.process is not None
        t0 = time.monotonic()
        said = mooring("replica", "kill", leader_id, "--dir", str(cluster)).stdout
        os.kill(agent.process.pid, signal.SIGTERM)
        assert f"killed replica {leader_id} (pid {leader.process.pid}) (it was the leader)" in said

        down_for = rule_for("MooringReplicaDown")
        pending = alerts.wait(
            "MooringReplicaDown", "pending", since=t0, timeout=10, replica=leader_id
        )
        firing = alerts.wait(
            "MooringReplicaDown", "firing", since=t0, timeout=down_for + 10, replica=leader_id
        )
        figures["replica_down_pending_s"] = pending - t0
        figures["replica_down_firing_s"] = firing - t0
        limit = down_for + monitoring.SCRAPE_INTERVAL + monitoring.EVALUATION_INTERVAL + SLACK
        assert down_for <= firing - t0 <= limit

        # A failover is not an outage: another replica leads within the lease, so the
        # no-leader alert may at most go pending, never fire.
        wait_for(
            lambda: status(cluster)["leader"] not in (None, leader_id),
            timeout=LEASE_DURATION + 5,
            interval=0.2,
            what="a new leader",
        )
        assert alerts.first("MooringNoLeader", "firing", since=t0) is None

        said = mooring("replica", "start", leader_id, "--dir", str(cluster)).stdout
        assert f"started replica {leader_id} on {leader.endpoint}" in said  # same port
        restarted = time.monotonic()
        resolved = alerts.resolved("MooringReplicaDown", timeout=15, replica=leader_id)
        figures["replica_down_resolved_after_restart_s"] = resolved - restarted

        # The coordination store stops answering: the leader steps down at its renew
        # deadline and nobody can take over, so there is no leader until it is back.
        etcd = state.etcd[0].process
        assert etcd is not None
        wait_for(lambda: not alerts.active("MooringNoLeader"), timeout=10, what="no alert")
        t1 = time.monotonic()
        processes.stop_signal(etcd.pid, signal.SIGSTOP)
        no_leader_for = rule_for("MooringNoLeader")
        try:
            pending = alerts.wait(
                "MooringNoLeader", "pending", since=t1, timeout=RENEW_DEADLINE + 5
            )
            firing = alerts.wait(
                "MooringNoLeader", "firing", since=t1, timeout=RENEW_DEADLINE + no_leader_for + 5
            )
        finally:
            processes.stop_signal(etcd.pid, signal.SIGCONT)
        healed = time.monotonic()
        figures["no_leader_pending_s"] = pending - t1
        figures["no_leader_firing_s"] = firing - t1
        assert firing - pending >= no_leader_for - 0.5  # pending for at least `for:`
        limit = (
            RENEW_DEADLINE
            + no_leader_for
            + monitoring.SCRAPE_INTERVAL
            + monitoring.EVALUATION_INTERVAL
            + SLACK
        )
        assert no_leader_for <= firing - t1 <= limit
        resolved = alerts.resolved("MooringNoLeader", timeout=LEASE_DURATION + 15)
        figures["no_leader_resolved_after_heal_s"] = resolved - healed
        # The stopped agent (its alert's clock ran through the etcd fault): disconnected for
        # 30 s, then the rule's `for:`.
        gone_for = rule_for("MooringAgentDisconnected") + 30
        firing = alerts.wait(
            "MooringAgentDisconnected", "firing", since=t0, timeout=gone_for + 15, agent=agent.name
        )
        figures["agent_disconnected_firing_s"] = firing - t0
        limit = gone_for + 1.0 + monitoring.SCRAPE_INTERVAL + monitoring.EVALUATION_INTERVAL + SLACK
        assert gone_for <= firing - t0 <= limit  # 1.0: the presence snapshot's period
        assert not any(
            labels.get("agent") not in (None, agent.name)
            for _, name, _, labels in alerts.history
            if name == "MooringAgentDisconnected"
        )

    finally:
        alerts.close()
        print("alert timings:", json.dumps({k: round(v, 2) for k, v in figures.items()}))
