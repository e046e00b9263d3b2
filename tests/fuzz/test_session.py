"""Fuzzing a replica's side of a live session without a network: the real
`StreamHandler._reader` reads sequences of valid and invalid messages (as the Subscribe
deserializer decodes them) on a session of either mode, with a hub store that checks
what it is given against `HubStore`'s signatures and notes refusals as the stores do.

Properties: the reader ends only normally (`_Closed`: the agent's goodbye or its end of
stream) or with a documented `Rejection`; every status update and resource event it read
got exactly one acknowledgement, in order, with a one-line error when refused; what was
acknowledged as stored is what the other end can decode again; acks of unknown seqs are
ignored."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import grpc.aio
import prometheus_client as prom
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from principal import _deliveries as deliveries
from principal import _hub as hub
from principal import _live as live_
from principal import _metrics as metrics_
from principal import _session as session_
from principal import _stream as stream_
from proto import codec, objects, pb
from tests.fuzz import _budget as budget
from tests.fuzz import _strategies as strat

pytestmark = pytest.mark.fuzz

LIMIT = 4096
AGENT = "fuzz"
# What the principal sent and awaits an ack for: seq -> (kind, name, operation)
SENT = {
    2: ("Application", "app-1", "upsert"),
    3: ("AppProject", "proj-1", "upsert"),
    4: ("Application", "app-2", "delete"),
}
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT: {"malformed", "unknown_type", "protocol"},
    grpc.StatusCode.RESOURCE_EXHAUSTED: {"oversized"},
    grpc.StatusCode.UNAVAILABLE: {"store"},
}


class Context:
    """The reads of a grpc.aio context: the decoded messages, then the end of the stream."""

    def __init__(self, messages: list[Any]) -> None:
        self.messages = collections.deque(messages)

    async def read(self) -> Any:
        return self.messages.popleft() if self.messages else grpc.aio.EOF


class Hub:
    """The hub store calls a session makes, checked against `HubStore`'s signatures;
    `failing` makes the next call raise StoreError."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str], Any] = {}
        self.mirror: dict[tuple[str, str], Any] = {}
        self.failing = False

    def _call(self, kind: str, name: str) -> None:
        assert kind in objects.KINDS and objects.validate_name(name, kind=kind) == name
        if self.failing:
            self.failing = False
            raise hub.StoreError("etcd is down (fuzz)")

    @staticmethod
    def _travels(value: Any) -> None:
        """As the stores keep it (canonical JSON) and send it on: it decodes again."""
        objects.load_json(codec.canonical_json(value), what="stored")
        codec.checksum(value)

    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        self._call(kind, name)
        assert isinstance(status, Mapping), f"status {status!r} is no map"
        self._travels(status)
        self.status[(kind, name)] = status
        return True

    async def mirror_upsert(
        self,
        agent: str,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        status: Mapping[str, Any] | None,
    ) -> hub.MirrorWrite:
        self._call(kind, name)
        assert isinstance(obj, Mapping) and set(obj) == {"metadata", "spec"}
        assert status is None or isinstance(status, Mapping), f"status {status!r} is no map"
        objects.validate_manifest(
            {**obj, "kind": kind, "metadata": {**obj["metadata"], "name": name}}
        )
        self._travels({**obj, "status": status})
        self.mirror[(kind, name)] = (obj, status)
        return "created"

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        self._call(kind, name)
        return self.mirror.pop((kind, name), None) is not None

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        self._call(kind, name)
        self.status[(kind, name)] = hub.refusal_conditions(self.status.get((kind, name)), message)


class Replica:
    """One StreamHandler on its own event loop, with a fresh session and hub per example."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.hub = Hub()
        self.handler = stream_.StreamHandler(
            replica_id="fuzz",
            desired=self.hub,  # type: ignore[arg-type]
            dispatcher=None,  # type: ignore[arg-type]  # the reader needs no dispatcher
            routing=None,  # type: ignore[arg-type]
            sessions=session_.SessionManager(),
            settings=session_.SessionSettings(max_message_bytes=LIMIT),
            metrics=metrics_.PrincipalMetrics(
                prom.CollectorRegistry(), replica_id="fuzz", tls_dir="/nonexistent"
            ),
            deliveries=deliveries.DeliveryLog(self.hub),  # type: ignore[arg-type]
        )

    def read(
        self, mode: str, messages: list[pb.Envelope | bytes], *, failing: bool
    ) -> tuple[BaseException, list[Any], list[pb.Envelope]]:
        """Run the reader over `messages`; what ended it, what it read, what it queued."""
        decode = codec.bounded_decoder(LIMIT)
        wire = [decode(m if isinstance(m, bytes) else m.SerializeToString()) for m in messages]
        context = Context(wire)
        self.hub = self.handler.desired = Hub()  # type: ignore[assignment]  # examples share nothing
        self.handler.deliveries = deliveries.DeliveryLog(self.hub)  # type: ignore[arg-type]
        self.hub.failing = failing

        async def run() -> tuple[session_.Session, BaseException, list[pb.Envelope]]:
            # Opened on the loop, as the handler opens it: a session reads the loop's clock.
            session = session_.Session(agent=AGENT, mode=mode, session_id="s", epoch=1)  # type: ignore[arg-type]
            for seq, (kind, name, operation) in SENT.items():
                session.pending[seq] = (0.0, kind, name, operation, 1, "c")
            try:
                link = live_.Live(self.handler, session)
                strategy = stream_.STRATEGIES[session.mode](link, [], started=0.0)
                await link.reader(context, strategy)
            except Exception as err:
                ended: BaseException = err
            else:
                raise AssertionError("the reader returned without ending the session")
            queued = [await session.outbox.get() for _ in range(session.outbox.qsize())]
            return session, ended, [e for e in queued if e is not None]

        session, ended, sent = self.runner.run(run())
        read = wire[: len(wire) - len(context.messages)]
        if isinstance(ended, session_.SessionEnded):
            assert session.closed and session.close_label in ("goodbye", "stream_ended")
        return ended, read, sent


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    rep = Replica()
    try:
        yield rep
    finally:
        rep.runner.close()


def _status(value: Any) -> pb.Envelope:
    return pb.Envelope(
        seq=7,
        status=pb.StatusUpdate(
            key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name="app-1"), status_json=value
        ),
    )


def _refused(seq: int) -> pb.Envelope:
    return pb.Envelope(seq=9, ack=pb.Ack(seq=seq, ok=False, error="the apiserver said no"))


@budget.fuzz_settings(1500)
@given(
    mode=st.sampled_from(["managed", "autonomous"]),
    messages=strat.sessions(limit=LIMIT),
    failing=st.integers(0, 3).map(lambda n: n == 0),  # the first store call fails
)
# A status that is JSON but not a map was stored as the object's status; the next
# refusal the agent sent then failed in hub.refusal_conditions (dict of a list).
@example(mode="managed", messages=[_status("[1, 2]"), _refused(2)], failing=False)
@example(mode="managed", messages=[_status('"text"')], failing=False)
@example(mode="managed", messages=[_status('{"conditions": 5}'), _refused(2)], failing=False)
@example(mode="managed", messages=[_status('{"conditions": "ab"}'), _refused(2)], failing=False)
@budget.counted
def test_the_reader_acks_each_message_once_and_ends_only_as_documented(
    replica: Replica, mode: str, messages: list[pb.Envelope | bytes], failing: bool
) -> None:
    ended, read, sent = replica.read(mode, messages, failing=failing)
    if isinstance(ended, session_.Rejection):
        assert ended.reason in DOCUMENTED.get(ended.code, ()), (ended.code, ended.reason)
        assert ended.message and "\n" not in ended.message
    else:
        assert isinstance(ended, session_.SessionEnded), f"unexpected {ended!r}"
    wants_ack = [
        m.seq
        for m in read
        if isinstance(m, pb.Envelope) and m.WhichOneof("body") in ("status", "event")
    ]
    if isinstance(ended, session_.Rejection) and ended.reason == "store":
        wants_ack.pop()  # the message whose store call failed: no ack, the agent resends
    acks = [e.ack for e in sent if e.WhichOneof("body") == "ack"]
    assert [a.seq for a in acks] == wants_ack
    for ack in acks:
        assert ack.ok == (not ack.error) and "\n" not in ack.error
    assert all(e.WhichOneof("body") == "ack" for e in sent)
