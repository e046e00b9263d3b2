"""`--log-format json` on real processes: every line a JSON object, and each change of a
resource logged once where it lands (delivered, applied, sent, mirrored), with its fields.

Runs with the hub on etcd and on the test bed's kube-apiserver (whose change feed sees
status writes too: they must not read as deliveries).
"""

from __future__ import annotations

import collections
import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._poll import wait_for
from tests._procs import mooring
from tests.e2e.test_sync import Cluster, app_doc, kube_cluster, write_docs

pytestmark = pytest.mark.e2e

JSON_LOGS = {"MOORING_LOG_FORMAT": "json"}


@pytest.fixture(params=["etcd", "kubernetes"])
def json_cluster(request: pytest.FixtureRequest, tmp_path: Path, prefix: str) -> Iterator[Cluster]:
    if request.param == "kubernetes":
        c = kube_cluster(request.getfixturevalue("kube_apiserver"), tmp_path, prefix)
    else:
        c = Cluster(tmp_path, request.getfixturevalue("etcd").url)
    c.principal.env.update(JSON_LOGS)
    c.principal.start()
    try:
        yield c
    finally:
        c.stop()


def records(text: str) -> list[dict[str, Any]]:
    """Every line, parsed: a line that is not one JSON object fails the test."""
    out = []
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
        assert isinstance(doc, dict), line
        out.append(doc)
    return out


def changes(docs: list[dict[str, Any]], *starts: str) -> collections.Counter[tuple[Any, ...]]:
    """(agent, kind, name, operation, version) of each line whose message starts so."""
    return collections.Counter(
        (d["agent"], d["kind"], d["name"], d["operation"], d["version"])
        for d in docs
        if d["message"].startswith(starts)
    )


def test_json_logs_are_one_object_a_line_and_each_change_is_logged_once(
    json_cluster: Cluster, tmp_path: Path
) -> None:
    c = json_cluster
    managed = c.add_agent("edge-jm", "managed", env=JSON_LOGS)
    autonomous = c.add_agent("edge-ja", "autonomous", env=JSON_LOGS)
    wait_for(lambda: c.connected("edge-jm") and c.connected("edge-ja"), what="agents connected")

    # Managed: two creations, an update, a deletion, and a status report (not a change
    # of what the principal delivers).
    def apply(name: str, docs: list[dict]) -> None:
        path = write_docs(tmp_path / f"{name}.json", docs)
        mooring("app", "apply", "-f", str(path), "--agent", "edge-jm", env=c.env)

    apply("first", [app_doc("web"), app_doc("api")])
    wait_for(lambda: {"web", "api"} <= set(c.local("edge-jm")), what="both apps on the agent")
    apply("again", [app_doc("web"), app_doc("api")])  # unchanged: no change at all
    apply("update", [app_doc("web", revision="v2")])
    wait_for(
        lambda: c.local("edge-jm")["web"].object["spec"]["source"]["targetRevision"] == "v2",
        what="the update on the agent",
    )
    mooring("app", "delete", "api", "--agent", "edge-jm", env=c.env)
    wait_for(lambda: "api" not in c.local("edge-jm"), what="the deletion on the agent")
    status = {"kind": "Application", "metadata": {"name": "web"}}
    status["status"] = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    mooring(
        "app", "apply", "-f", str(write_docs(tmp_path / "status.json", [status])),
        "--agent-state", str(c.state("edge-jm")),
    )  # fmt: skip
    wait_for(lambda: c.principal_list("edge-jm")["web"]["status_object"], what="status on the hub")

    # Autonomous: one local creation, then its deletion.
    mooring(
        "app", "apply", "-f", str(write_docs(tmp_path / "own.json", [app_doc("own")])),
        "--agent-state", str(c.state("edge-ja")),
    )  # fmt: skip
    wait_for(lambda: c.principal_list("edge-ja"), what="the mirror on the hub")
    mooring("app", "delete", "own", "--agent-state", str(c.state("edge-ja")))
    wait_for(lambda: not c.principal_list("edge-ja"), what="the mirror deleted")

    def logged() -> tuple[list[dict[str, Any]], ...] | None:
        principal, jm, ja = (records(p.output()) for p in (c.principal, managed, autonomous))
        done = (
            sum(changes(principal, "agent edge-jm: delivered").values()) >= 4
            and sum(changes(principal, "agent edge-ja: ").values()) >= 2
            and sum(changes(ja, "agent edge-ja: sent").values()) >= 2
        )
        return (principal, jm, ja) if done else None

    principal, jm, ja = wait_for(logged, what="the change lines", timeout=15)
    for doc in principal + jm + ja:
        stamp = datetime.datetime.fromisoformat(doc["time"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == datetime.timedelta(0)
        assert {"level", "logger", "message"} <= set(doc)

    # Managed: each change delivered once (principal) and applied once (agent).
    delivered = changes(principal, "agent edge-jm: delivered")
    applied = changes(jm, "agent edge-jm: applied", "agent edge-jm: deleted")
    assert set(delivered.values()) == {1} and set(applied.values()) == {1}, (delivered, applied)
    assert delivered == applied
    assert sorted((k[2], k[3]) for k in applied) == [
        ("api", "delete"),
        ("api", "upsert"),
        ("web", "upsert"),
        ("web", "upsert"),
    ]
    assert all(k[:2] == ("edge-jm", "Application") for k in applied)

    # Autonomous: each local change sent once (agent) and mirrored once (principal).
    sent = changes(ja, "agent edge-ja: sent")
    mirrored = changes(principal, "agent edge-ja: applied", "agent edge-ja: deleted")
    assert (
        sent == mirrored == collections.Counter({(k[0], k[1], k[2], k[3], k[4]): 1 for k in sent})
    ), (sent, mirrored)
    assert sorted((k[2], k[3]) for k in sent) == [("own", "delete"), ("own", "upsert")]

    # The session lines carry the session's fields on both sides.
    opened = [
        d for d in principal if d["message"].startswith("session ") and " open: " in d["message"]
    ]
    assert {d["agent"] for d in opened} == {"edge-jm", "edge-ja"}
    assert all({"replica", "session", "epoch", "fencing_token"} <= set(d) for d in opened)
    assert all(d["replica"] == "p1" for d in opened)
    [welcomed] = [d for d in jm if " with replica " in d["message"]]
    assert welcomed["session"] in {d["session"] for d in opened}
