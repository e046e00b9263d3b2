"""Admission and placement, as pure functions: each refusal and each route, without a stream."""

from __future__ import annotations

import grpc
import pytest

from principal import _handshake as handshake
from principal import _hub as hub
from principal import _ownership as ownership
from principal._session import Rejection
from proto import codec, pb

pytestmark = pytest.mark.unit


def _hello(**fields: object) -> pb.Envelope:
    base: dict[str, object] = {
        "agent_name": "edge-1",
        "mode": pb.MODE_MANAGED,
        "min_protocol": codec.PROTOCOL_MIN,
        "max_protocol": codec.PROTOCOL_MAX,
    }
    base.update(fields)
    return pb.Envelope(hello=pb.Hello(**base))  # type: ignore[arg-type]


def test_a_good_hello_is_admitted_with_its_mode_and_the_highest_common_protocol() -> None:
    admitted = handshake.admit("edge-1", _hello(mode=pb.MODE_AUTONOMOUS))
    assert (admitted.agent, admitted.mode, admitted.protocol) == (
        "edge-1",
        "autonomous",
        codec.PROTOCOL_MAX,
    )
    # A hello that names nobody is judged by the certificate alone.
    assert handshake.admit("edge-1", _hello(agent_name="")).agent == "edge-1"


@pytest.mark.parametrize(
    ("first", "code", "reason"),
    [
        (pb.Envelope(heartbeat=pb.Heartbeat()), grpc.StatusCode.INVALID_ARGUMENT, "protocol"),
        (_hello(agent_name="edge-2"), grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch"),
        (
            _hello(min_protocol=codec.PROTOCOL_MAX + 1, max_protocol=codec.PROTOCOL_MAX + 5),
            grpc.StatusCode.FAILED_PRECONDITION,
            "protocol_version",
        ),
        (_hello(mode=pb.MODE_UNSPECIFIED), grpc.StatusCode.INVALID_ARGUMENT, "protocol"),
    ],
)
def test_each_bad_first_message_has_its_code_reason_and_one_line(
    first: pb.Envelope, code: grpc.StatusCode, reason: str
) -> None:
    with pytest.raises(Rejection) as caught:
        handshake.admit("edge-1", first)
    assert (caught.value.code, caught.value.reason) == (code, reason)
    assert caught.value.message and "\n" not in caught.value.message


def test_registration_must_exist_in_the_same_mode() -> None:
    handshake.check_registration("a", "managed", hub.AgentRecord("a", "managed"))
    with pytest.raises(Rejection, match="not registered") as missing:
        handshake.check_registration("a", "managed", None)
    assert missing.value.reason == "not_registered"
    with pytest.raises(Rejection, match="registered as autonomous, not managed") as other:
        handshake.check_registration("a", "managed", hub.AgentRecord("a", "autonomous"))
    assert other.value.reason == "mode_conflict"


def test_envelopes_an_agent_may_not_send_are_refused() -> None:
    assert handshake.check_envelope(pb.Envelope(heartbeat=pb.Heartbeat())).HasField("heartbeat")
    for envelope in (pb.Envelope(), pb.Envelope(welcome=pb.Welcome())):
        with pytest.raises(Rejection) as caught:
            handshake.check_envelope(envelope)
        assert caught.value.reason == "unknown_type"
    with pytest.raises(Rejection) as big:
        handshake.check_envelope(codec.Rejected("oversized", "message of 9 bytes over 8"))
    assert big.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED


OWNED_ELSEWHERE = ownership.Route(serve=False, epoch=4, owner_id="p1", owner_endpoint="h:1")
SERVE_HERE = ownership.Route(serve=True, epoch=4)


def _standin(route: ownership.Route) -> object:
    asked: list[str] = []

    def standin(owner: str) -> ownership.Route:
        asked.append(owner)
        return route

    standin.asked = asked  # type: ignore[attr-defined]
    return standin


def test_an_agent_is_served_by_its_owner_or_redirected_there() -> None:
    hello = _hello().hello
    never = _standin(SERVE_HERE)
    placed = handshake.place(SERVE_HERE, hello, standin=never, shared_holds=True)  # type: ignore[arg-type]
    assert placed == handshake.Placement(SERVE_HERE, "")
    placed = handshake.place(OWNED_ELSEWHERE, hello, standin=never, shared_holds=True)  # type: ignore[arg-type]
    assert placed == handshake.Placement(OWNED_ELSEWHERE, "")
    assert never.asked == []  # type: ignore[attr-defined]


def test_an_agent_that_cannot_reach_its_owner_is_stood_in_for_only_with_shared_holds() -> None:
    hello = _hello(unreachable_owner="p1").hello
    here = _standin(SERVE_HERE)
    placed = handshake.place(OWNED_ELSEWHERE, hello, standin=here, shared_holds=True)  # type: ignore[arg-type]
    assert placed == handshake.Placement(SERVE_HERE, "p1")
    assert here.asked == ["p1"]  # type: ignore[attr-defined]
    # Without a registry shared by the replicas nobody could prove a single holder.
    placed = handshake.place(OWNED_ELSEWHERE, hello, standin=here, shared_holds=False)  # type: ignore[arg-type]
    assert placed == handshake.Placement(OWNED_ELSEWHERE, "")
    # A stand-in elsewhere: redirect there, standing in for nobody here.
    third = ownership.Route(serve=False, epoch=4, owner_id="p3", owner_endpoint="h:3")
    placed = handshake.place(OWNED_ELSEWHERE, hello, standin=_standin(third), shared_holds=True)  # type: ignore[arg-type]
    assert placed == handshake.Placement(third, "")
    # Naming a replica that is not the owner changes nothing.
    other = _hello(unreachable_owner="p2").hello
    placed = handshake.place(OWNED_ELSEWHERE, other, standin=here, shared_holds=True)  # type: ignore[arg-type]
    assert placed == handshake.Placement(OWNED_ELSEWHERE, "")


def test_without_a_map_the_replica_is_not_ready() -> None:
    with pytest.raises(Rejection) as caught:
        handshake.place(
            ownership.Route(serve=False, epoch=0),
            _hello().hello,
            standin=_standin(SERVE_HERE),  # type: ignore[arg-type]
            shared_holds=True,
        )
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.UNAVAILABLE, "not_ready")
