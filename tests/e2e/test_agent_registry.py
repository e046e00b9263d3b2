"""`mooring agent set-mode|delete` while the agent runs, on real processes (one principal,
real etcd): what README and `agent set-mode`'s note say happens, happens."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from mooring import _services as services
from tests._poll import wait_for
from tests._procs import mooring
from tests.e2e.test_sync import Cluster

pytestmark = pytest.mark.e2e


def modes(cluster: Cluster) -> dict[str, str]:
    listed = mooring("agent", "list", "-o", "json", env=cluster.env).stdout
    return {a["name"]: a["mode"] for a in json.loads(listed)["items"]}


def test_a_mode_change_refuses_the_old_mode_until_the_agent_restarts_with_the_new(
    etcd: services.EtcdCluster, tmp_path: Path
) -> None:
    cluster = Cluster(tmp_path, etcd.url)
    cluster.principal.start()
    try:
        agent = cluster.add_agent("edge-sm", "managed")
        wait_for(lambda: cluster.connected("edge-sm"), what="agent connected")
        changed = mooring("agent", "set-mode", "edge-sm", "autonomous", env=cluster.env)
        assert changed.stdout == "agent edge-sm mode changed: managed -> autonomous\n"
        assert "restart agent edge-sm with --mode autonomous" in changed.stderr
        assert cluster.connected("edge-sm")  # its session goes on, as managed

        # Its next connect with the old mode is refused, although the replica had
        # confirmed that mode before (it follows the registry, not a cache).
        agent.kill(signal.SIGKILL)
        agent.start()
        wait_for(
            lambda: "edge-sm is registered as autonomous, not managed" in agent.output(),
            what=f"the refusal\n{agent.output()[-2000:]}",
        )
        assert not cluster.connected("edge-sm")

        agent.stop()
        fresh = f"sqlite:///{tmp_path / 'edge-sm-autonomous.db'}"  # the old one is managed's
        cluster.add_agent("edge-sm", "autonomous", store=fresh)
        wait_for(lambda: cluster.connected("edge-sm"), what="agent connected as autonomous")

        # Deleted while it runs: it registers again on its next connect, as on its first.
        deleted = mooring("agent", "delete", "edge-sm", env=cluster.env)
        assert deleted.stdout == "agent edge-sm deleted\n"
        assert "edge-sm" not in modes(cluster)
        cluster.agents["edge-sm"].kill(signal.SIGKILL)
        cluster.agents["edge-sm"].start()
        wait_for(lambda: modes(cluster).get("edge-sm") == "autonomous", what="registered again")
    finally:
        cluster.stop()
