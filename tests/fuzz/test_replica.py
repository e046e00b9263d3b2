"""Fuzzing a real principal replica over real mTLS gRPC: each example opens a Subscribe
stream with an agent's certificate and sends a sequence of valid and invalid messages
(a hello or something else first, then events, status updates and acks with random keys,
versions and JSON bodies, unknown seqs, heartbeats, goodbyes, second hellos, bodies only
a principal sends, bytes that are no envelope, payloads at the size limit, and messages
after any of those). One replica, on the session's etcd, serves the whole test.

Properties: the stream ends OK or with a documented rejection (its status code and the
`mooring-rejected` trailer naming the reason), never UNKNOWN or INTERNAL, and within a
deadline; the status updates and events the replica took got one ack each, in order (up
to the end of the session), with a one-line error when refused; nothing is logged at ERROR (no unhandled exception, no "Task
exception was never retrieved"); and after each example a well-behaved agent still gets
a welcome."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import grpc.aio
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from principal import _admission as admission
from principal import _pki as pki
from principal import _server as server
from principal import _session as session_
from principal import _settings as settings_
from proto import _credentials as credentials
from proto import codec, pb
from tests._procs import free_port
from tests.fuzz import _budget as budget
from tests.fuzz import _strategies as strat

pytestmark = [pytest.mark.fuzz, pytest.mark.integration]

T = TypeVar("T")

LIMIT = 16 * 1024  # the replica's max_message_bytes: payloads at the limit stay cheap
DEADLINE = 20.0  # seconds an example's stream may take before it counts as a hang
MODES = {"fuzz-m": pb.MODE_MANAGED, "fuzz-a": pb.MODE_AUTONOMOUS}
DESIRED = [  # what fuzz-m is sent at every resync, as seqs 2 and 3 (acks may name them)
    {"kind": "Application", "metadata": {"name": "app-1"}, "spec": {"project": "default"}},
    {"kind": "AppProject", "metadata": {"name": "proj-1"}, "spec": {}},
]
# Each rejection a replica may answer a stream with: status code -> trailer reasons.
DOCUMENTED = {
    grpc.StatusCode.INVALID_ARGUMENT: {"malformed", "unknown_type", "protocol"},
    grpc.StatusCode.RESOURCE_EXHAUSTED: {"oversized"},
    grpc.StatusCode.PERMISSION_DENIED: {"identity_mismatch"},
    grpc.StatusCode.FAILED_PRECONDITION: {"protocol_version", "mode_conflict"},
}


class Errors(logging.Handler):
    """Every record at ERROR or above, and every one carrying an exception, from the code
    that serves a stream: Mooring's principal and wire modules, grpc, asyncio ("Task
    exception was never retrieved"). (Not the elector's: on a loaded machine a replica
    may lose its lease and say so; that is failover, not a fault of the stream.)"""

    LOGGERS = ("principal", "proto", "grpc", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if (record.levelno >= logging.ERROR or record.exc_info) and record.name.startswith(
            self.LOGGERS
        ):
            self.records.append(record)

    def take(self) -> list[str]:
        taken = [f"{r.name}: {r.getMessage()}" for r in self.records]
        self.records.clear()
        return taken


class Fixture:
    """The replica, one channel per agent, and their event loop, which runs in a thread of
    its own as a server's would (the replica keeps its lease and its timers between
    examples, however long hypothesis takes to draw the next one)."""

    def __init__(self, root: Path, etcd_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-replica")
        self.thread.start()
        listen = f"127.0.0.1:{free_port()}"
        self.replica = server.Replica(
            settings_.PrincipalSettings(
                replica_id="fuzz-p1",
                listen=listen,
                advertise=listen,
                coordination=etcd_url,
                store_root=f"/fuzz-{uuid.uuid4().hex[:8]}/",
                tls_dir=root / "principals" / "p1",
                session=session_.SessionSettings(max_message_bytes=LIMIT),
                # Hundreds of sessions of the same two agents back to back: what is
                # fuzzed is each stream, not the reconnect rate (tests/integration/
                # test_admission.py has that).
                admission=admission.AdmissionSettings(reconnect_burst=10**9),
                auto_register=True,
            )
        )
        self.root = root
        self.channels: dict[str, grpc.aio.Channel] = {}

    async def start(self) -> None:
        await self.replica.start()
        for agent, mode in MODES.items():
            name = "managed" if mode == pb.MODE_MANAGED else "autonomous"
            await self.replica.desired.register_agent(agent, mode=name)  # type: ignore[arg-type]
            creds = credentials.channel_credentials(self.root / "agents" / agent)
            self.channels[agent] = grpc.aio.secure_channel(f"127.0.0.1:{self.replica.port}", creds)
        for doc in DESIRED:
            await self.replica.desired.apply_desired("fuzz-m", doc)

    def rejections(self) -> collections.Counter[str]:
        """Streams this replica refused so far, by reason (its metric)."""
        counts: collections.Counter[str] = collections.Counter()
        for family in self.replica.registry.collect():
            for sample in family.samples:
                if sample.name == "mooring_sessions_rejected_total":
                    counts[sample.labels["reason"]] = int(sample.value)
        return counts

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the replica's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE * 2)

    def close(self) -> None:
        async def stop() -> None:
            for channel in self.channels.values():
                await channel.close()
            await self.replica.stop()
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()

    async def stream(self, agent: str, messages: list[bytes]) -> tuple[Any, list[pb.Envelope]]:
        """Send `messages` on one stream, then end it; (status code, trailer reason or
        None), and what the replica sent; the code is None when grpc#36066 hid it. After
        a first message that is a hello, wait for the replica's answer and resync as an
        agent does (so acks can name the events it sent)."""
        call = self.channels[agent].stream_stream(
            codec.SUBSCRIBE_METHOD, response_deserializer=pb.Envelope.FromString
        )()  # no request serializer: the messages are bytes already
        received: list[pb.Envelope] = []
        arrived = asyncio.Event()

        async def read() -> None:
            try:
                async for envelope in call:
                    received.append(envelope)
                    arrived.set()
            except grpc.aio.AioRpcError:
                pass
            finally:
                arrived.set()

        reader = asyncio.create_task(read(), name="fuzz-read")
        try:
            async with asyncio.timeout(DEADLINE):
                for at, data in enumerate(messages):
                    try:
                        await call.write(data)
                    except (asyncio.InvalidStateError, grpc.aio.AioRpcError):
                        break  # the replica ended the stream
                    if at == 0 and _body(data) == "hello":
                        while True:
                            arrived.clear()
                            if reader.done() or SETTLED & {_body(e) for e in received}:
                                break
                            await arrived.wait()
                with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
                    await call.done_writing()
                await reader
                code, details = await call.code(), await call.details()
                trailer = dict(await call.trailing_metadata() or ()).get(codec.REJECTED_TRAILER)
        except TimeoutError:
            raise AssertionError(f"the stream did not end within {DEADLINE}s") from None
        finally:
            reader.cancel()
            call.cancel()
        if code == grpc.StatusCode.INTERNAL and details == RACED:
            code = None  # the replica's status is lost; its rejection counter tells it
        return (code, trailer), received


# grpc/grpc#36066: a client's write that races the server's end of the stream replaces
# the status the server sent with this one, on the client's side only.
RACED = "Internal error from Core"
SETTLED = {"resync_done", "resync_request", "redirect"}  # a session's answer to its hello
decode = codec.bounded_decoder(LIMIT)


def _body(message: pb.Envelope | bytes) -> str | None:
    """The body the replica sees in `message`; None when it is no envelope."""
    decoded = decode(message) if isinstance(message, bytes) else message
    if isinstance(decoded, codec.Rejected):
        return None
    body: str | None = decoded.WhichOneof("body")
    return body


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory, etcd: Any) -> Iterator[Fixture]:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root)
    pki.issue_principal(root, name="p1", sans=["127.0.0.1"])
    for agent in MODES:
        pki.issue_agent(root, name=agent)
    fix = Fixture(root, etcd.url)
    try:
        fix.run(fix.start())
        yield fix
    finally:
        fix.close()


@pytest.fixture(scope="module")
def errors() -> Iterator[Errors]:
    handler = Errors()
    logging.getLogger().addHandler(handler)
    try:
        yield handler
    finally:
        logging.getLogger().removeHandler(handler)


def _hello(agent: str, **fields: Any) -> pb.Envelope:
    hello = pb.Hello(agent_name=agent, mode=MODES[agent], min_protocol=1, max_protocol=1)
    for name, value in fields.items():
        setattr(hello, name, value)
    return pb.Envelope(seq=1, hello=hello)


@st.composite
def firsts(draw: st.DrawFn, agent: str) -> pb.Envelope | bytes:
    """Mostly the agent's own hello (with a random inventory, epoch and stand-in owner),
    sometimes any hello, anything else, or nothing an envelope decodes to."""
    choice = draw(st.integers(0, 9))
    if choice < 7:
        hello = _hello(agent, agent_name=draw(st.sampled_from([agent, ""])))
        hello.hello.inventory.extend(draw(strat.inventory))
        hello.hello.known_epoch = draw(st.sampled_from([0, 1, 2**64 - 1]))
        hello.hello.unreachable_owner = draw(st.sampled_from(["", "fuzz-p1", "elsewhere"]))
        return hello
    if choice < 8:
        return draw(st.builds(strat._envelope, strat.session_seqs, st.just("hello"), strat.hellos))
    return draw(strat.agent_messages | strat.enders)


def _wire(message: pb.Envelope | bytes) -> bytes:
    return message if isinstance(message, bytes) else message.SerializeToString()


def _status(name: str, status_json: str, seq: int = 7) -> pb.Envelope:
    return pb.Envelope(
        seq=seq,
        status=pb.StatusUpdate(
            key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name=name), status_json=status_json
        ),
    )


def _refusal(seq: int) -> pb.Envelope:
    return pb.Envelope(seq=8, ack=pb.Ack(seq=seq, ok=False, error="the apiserver said no"))


@budget.fuzz_settings(600)
@given(data=st.data(), agent=st.sampled_from(list(MODES)))
# A status that is JSON but no map was stored, and the refusal the agent sent next made the
# etcd store fail in hub.refusal_conditions: the stream ended UNKNOWN, with a traceback.
@example(
    data=[_hello("fuzz-m"), _status("app-1", "[1, 2]"), _refusal(2), _refusal(3)], agent="fuzz-m"
)
@example(
    data=[_hello("fuzz-m"), _status("app-1", '{"conditions": 5}'), _refusal(2), _refusal(3)],
    agent="fuzz-m",
)
@budget.counted
def test_a_replica_answers_every_sequence_as_documented(
    fixture: Fixture, errors: Errors, data: Any, agent: str
) -> None:
    if isinstance(data, list):  # an explicit example
        messages: list[pb.Envelope | bytes] = data
    else:
        messages = [data.draw(firsts(agent), label="first")]
        messages += data.draw(strat.sessions(limit=LIMIT), label="then")
    before = fixture.rejections()
    (code, reason), received = fixture.run(fixture.stream(agent, [_wire(m) for m in messages]))
    rejected = list((fixture.rejections() - before).elements())
    if code is None:  # grpc#36066 hid the status: the replica's count of rejections tells it
        assert len(rejected) <= 1, rejected
        reason = rejected[0] if rejected else None
        code = next((c for c, known in DOCUMENTED.items() if reason in known), grpc.StatusCode.OK)
    if code != grpc.StatusCode.OK:
        assert reason in DOCUMENTED.get(code, ()), (code, reason)
    assert rejected == ([] if code == grpc.StatusCode.OK else [reason]), (code, rejected)
    bodies = [e.WhichOneof("body") for e in received]
    if "welcome" in bodies:
        assert bodies[0] == "welcome"
        expected = []
        for m in messages[1:]:
            decoded = decode(_wire(m))
            body = None if isinstance(decoded, codec.Rejected) else decoded.WhichOneof("body")
            if body in ("status", "event"):
                expected.append(decoded.seq)
            elif body not in ("ack", "heartbeat", "resync_done"):
                break  # the end of the session: anything after it goes unread
        acks = [e.ack for e in received if e.WhichOneof("body") == "ack"]
        # Acks still queued when the session ends are dropped (on a rejection, and when
        # the agent's goodbye or end of stream cancels the writer); the agent resends.
        assert [a.seq for a in acks] == expected[: len(acks)]
        for ack in acks:
            assert ack.ok == (not ack.error) and "\n" not in ack.error
    else:
        assert bodies in ([], ["redirect"]), bodies
    assert errors.take() == []
    # The replica still serves a well-behaved agent.
    (code, reason), received = fixture.run(
        fixture.stream(
            agent, [_wire(_hello(agent)), _wire(pb.Envelope(seq=2, goodbye=pb.Goodbye()))]
        )
    )
    assert code == grpc.StatusCode.OK and received[0].WhichOneof("body") in ("welcome", "redirect")
    assert errors.take() == []
