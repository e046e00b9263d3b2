"""Fuzzing what a replica makes of the bytes of one incoming message: the Subscribe
handler's request deserializer (`codec.bounded_decoder`) and `StreamHandler.read`,
which turns its answer into an envelope or a rejection. Arbitrary bytes and mutated
encodings of valid envelopes give an Envelope with an agent's body, or a `Rejection`
with INVALID_ARGUMENT / RESOURCE_EXHAUSTED and one line; never another exception."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import prometheus_client as prom
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from principal import _handshake as handshake
from principal import _metrics as metrics_
from principal import _session as session_
from principal import _stream as stream_
from proto import codec, pb
from tests.fuzz import _budget as budget
from tests.fuzz import _strategies as strat

pytestmark = pytest.mark.fuzz

LIMIT = 1024  # the smallest limit SessionSettings allows: oversized inputs stay cheap
decode = codec.bounded_decoder(LIMIT)


class _Reads:
    """The one method of a grpc.aio context that `read` calls."""

    def __init__(self, message: Any) -> None:
        self.message = message

    async def read(self) -> Any:
        return self.message


class Replica:
    """What a replica makes of the bytes of one message, on one event loop."""

    def __init__(self) -> None:
        self.runner = asyncio.Runner()
        self.handler = stream_.StreamHandler(
            replica_id="fuzz",
            desired=None,  # type: ignore[arg-type]  # `read` touches neither store nor routing
            dispatcher=None,  # type: ignore[arg-type]
            routing=None,  # type: ignore[arg-type]
            sessions=session_.SessionManager(),
            settings=session_.SessionSettings(max_message_bytes=LIMIT),
            metrics=metrics_.PrincipalMetrics(
                prom.CollectorRegistry(), replica_id="fuzz", tls_dir="/nonexistent"
            ),
        )

    def check(self, data: bytes) -> pb.Envelope | None:
        """The envelope the replica goes on with, or None for a rejection (asserted to be
        a documented one)."""
        decoded = decode(data)
        assert isinstance(decoded, pb.Envelope | codec.Rejected)
        if isinstance(decoded, codec.Rejected):
            assert decoded.reason == ("oversized" if len(data) > LIMIT else "malformed")
            assert decoded.error and "\n" not in decoded.error
        try:
            envelope = self.runner.run(self.handler.read(_Reads(decoded), limit=1.0))
        except session_.Rejection as rej:
            assert rej.code in (
                grpc.StatusCode.INVALID_ARGUMENT,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
            )
            assert rej.reason in ("oversized", "malformed", "unknown_type")
            assert rej.message and "\n" not in rej.message
            return None
        assert isinstance(envelope, pb.Envelope)
        assert envelope.WhichOneof("body") in handshake.AGENT_BODIES
        envelope.SerializeToString()  # what was parsed can be written again (valid UTF-8)
        return envelope


@pytest.fixture(scope="module")
def replica() -> Iterator[Replica]:
    rep = Replica()
    try:
        yield rep
    finally:
        rep.runner.close()


@budget.fuzz_settings(3000)
@given(st.binary(max_size=LIMIT + 64) | st.binary(min_size=LIMIT - 8, max_size=LIMIT + 8))
@example(b"")  # no body: refused as an unknown type
@example(b"\x0a")  # a field with no value
@example(b"\xa2\x01\x02\x0a\x80")  # hello.agent_name with invalid UTF-8
@example(b"\x0b" * 200)  # groups nested past protobuf's recursion limit
@example(b"\x00" * (LIMIT + 1))
@budget.counted
def test_arbitrary_bytes_are_an_envelope_or_a_documented_rejection(
    replica: Replica, data: bytes
) -> None:
    replica.check(data)


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """A valid envelope's encoding, cut, flipped, spliced or padded a little."""
    data = bytearray(draw(strat.envelopes).SerializeToString())
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["flip", "cut", "insert", "splice", "varint"]))
        if op == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "splice":
            data[at:at] = draw(strat.envelopes).SerializeToString()
        else:  # a field tag or length with the continuation bit set forever
            data[at:at] = b"\xff" * draw(st.integers(1, 11))
    return bytes(data)


@budget.fuzz_settings(2000)
@given(mutations())
@budget.counted
def test_mutated_envelopes_are_an_envelope_or_a_documented_rejection(
    replica: Replica, data: bytes
) -> None:
    replica.check(data)


@budget.fuzz_settings(500)
@given(strat.envelopes)
@budget.counted
def test_valid_envelopes_decode_to_themselves(replica: Replica, envelope: pb.Envelope) -> None:
    data = envelope.SerializeToString()
    got = decode(data)
    if len(data) > LIMIT:
        assert isinstance(got, codec.Rejected) and got.reason == "oversized"
        return
    assert got == envelope
    if envelope.WhichOneof("body") in handshake.AGENT_BODIES:
        assert replica.check(data) == envelope
    else:
        assert replica.check(data) is None
