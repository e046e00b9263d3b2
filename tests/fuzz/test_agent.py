"""Fuzzing an agent's side of a live session without a network: the real `_Live._reader`
of an agent of either mode reads sequences of what a principal may send (resource
events with valid and invalid objects, acks of known and unknown seqs, heartbeats,
resync requests and ends, redirects, goodbyes, bodies only an agent sends), applying
them to a fresh SQLite local store.

Properties: the reader ends only with `_SessionOver` (the end of the stream, a redirect
or a goodbye), never another exception; every resource event got exactly one ack, in
order, with a one-line error when refused; what the store took is a valid manifest."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from agent import _client as client
from agent import _live as live_
from agent import _localstore as localstore
from agent import _settings as settings_
from principal import _pki as pki
from proto import objects, pb
from tests.fuzz import _budget as budget
from tests.fuzz import _strategies as strat

pytestmark = pytest.mark.fuzz

MODES = ("managed", "autonomous")
SEEDED = {"kind": "Application", "metadata": {"name": "app-1"}, "spec": {"project": "default"}}


class Call:
    """The reads of a Subscribe call: the principal's messages, then its end (OK)."""

    def __init__(self, messages: list[pb.Envelope]) -> None:
        self.messages = collections.deque(messages)

    async def read(self) -> Any:
        return self.messages.popleft() if self.messages else grpc.aio.EOF

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.OK

    async def details(self) -> str:
        return ""


class Agents:
    """One agent per mode, on one event loop; each example gets a fresh local store."""

    def __init__(self, tls_dir: Path) -> None:
        self.runner = asyncio.Runner()
        self.agents = {
            mode: client.Agent(
                settings_.AgentSettings(
                    name="fuzz",
                    mode=mode,  # type: ignore[arg-type]
                    endpoints=("127.0.0.1:1",),
                    tls_dir=tls_dir,
                    store="sqlite:///:memory:",
                )
            )
            for mode in MODES
        }

    def read(self, mode: str, messages: list[pb.Envelope]) -> tuple[BaseException, Any]:
        """Run a session's reader over `messages`; what ended it, and the session."""
        agent = self.agents[mode]

        async def run() -> tuple[BaseException, Any]:
            await agent.store.close()
            agent.store = localstore.SqliteLocalStore(":memory:", mode=mode)  # type: ignore[arg-type]
            sync = agent.store.sync
            if mode == "managed":  # something to refuse, resync and acknowledge
                sync.apply_remote_upsert(
                    "Application",
                    "app-1",
                    obj=objects.synced_object(SEEDED),
                    version=1,
                    checksum="c1",
                    force=False,
                )
                report = {"kind": "Application", "metadata": {"name": "app-1"}}
                sync.apply_local({**report, "status": {"health": {"status": "Healthy"}}})
            else:
                sync.apply_local(SEEDED)
            live = live_.Live(agent, Call(messages), welcome=pb.Welcome(), started=0.0)
            await live._push_local()  # in flight: seq 2 (a status or an object)
            try:
                await live._reader()
            except Exception as err:
                return err, live
            raise AssertionError("the reader returned without ending the session")

        return self.runner.run(run())

    def close(self) -> None:
        for agent in self.agents.values():
            self.runner.run(agent.store.close())
        self.runner.close()


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agents]:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root)
    fleet = Agents(pki.issue_agent(root, name="fuzz"))
    try:
        yield fleet
    finally:
        fleet.close()


def _event(object_json: str, *, seq: int = 5, name: str = "app-2") -> pb.Envelope:
    return pb.Envelope(
        seq=seq,
        event=pb.ResourceEvent(
            key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name=name),
            operation=pb.OPERATION_UPSERT,
            version=2,
            checksum="c2",
            object_json=object_json,
        ),
    )


principal_messages = st.one_of(
    st.builds(strat._envelope, strat.session_seqs, st.just("event"), strat.session_events),
    st.builds(strat._envelope, strat.session_seqs, st.just("ack"), strat.session_acks),
    strat.envelopes,
)


@budget.fuzz_settings(1000)
@given(mode=st.sampled_from(MODES), messages=st.lists(principal_messages, max_size=8))
# Objects that are JSON but no map (or whose metadata is none) ended the session with a
# TypeError in the store, and the agent's restart took the same event again, forever.
@example(mode="managed", messages=[_event("5")])
@example(mode="managed", messages=[_event("[]")])
@example(mode="managed", messages=[_event('{"metadata": 5, "spec": {}}')])
@budget.counted
def test_the_agent_acks_each_event_once_and_ends_only_as_documented(
    agents: Agents, mode: str, messages: list[pb.Envelope]
) -> None:
    ended, live = agents.read(mode, messages)
    assert isinstance(ended, live_.SessionOver), f"unexpected {ended!r}"
    read = messages[: len(messages) - len(live.call.messages)]
    queued = []
    while not live.outbox.empty():
        queued.append(live.outbox.get_nowait())
    acks = [e.ack for e in queued if e.WhichOneof("body") == "ack"]
    assert [a.seq for a in acks] == [m.seq for m in read if m.WhichOneof("body") == "event"]
    for ack in acks:
        assert ack.ok == (not ack.error) and "\n" not in ack.error
    for row in agents.runner.run(live.store.rows()):
        objects.validate_manifest(row.manifest())


@pytest.mark.parametrize("name", ["Upper", "a/b", "..", "x" * 300])
def test_an_event_whose_name_is_no_kubernetes_name_is_refused_in_its_ack(
    agents: Agents, name: str
) -> None:
    """The hub's validator runs on the agent too, for upserts and deletions alike: the
    name reaches no local store."""
    deletion = pb.Envelope(
        seq=6,
        event=pb.ResourceEvent(
            key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name=name),
            operation=pb.OPERATION_DELETE,
            version=3,
        ),
    )
    ended, live = agents.read(
        "managed", [_event('{"metadata": {}, "spec": {}}', name=name), deletion]
    )
    assert isinstance(ended, live_.SessionOver)
    acks = []
    while not live.outbox.empty():
        envelope = live.outbox.get_nowait()
        if envelope.WhichOneof("body") == "ack":
            acks.append(envelope.ack)
    assert [(a.seq, a.ok) for a in acks] == [(5, False), (6, False)]
    assert all("name" in a.error for a in acks), [a.error for a in acks]
