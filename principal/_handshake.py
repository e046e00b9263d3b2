"""Admission, without I/O: a first message and what the hub knows -> whom to serve, or why not.

Everything here is a pure function of its arguments (no stream, store or clock), so each
refusal has one place and a unit test; `principal._stream` does the reading, the store
calls and the writing around it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import grpc

from principal import _hub as hub
from principal import _ownership as ownership
from principal._session import Rejection, RejectReason
from proto import codec, pb

__all__ = [
    "AGENT_BODIES",
    "MODE_NAMES",
    "Admission",
    "Placement",
    "admit",
    "check_envelope",
    "check_registration",
    "place",
]

MODE_NAMES: dict[int, hub.Mode] = {pb.MODE_MANAGED: "managed", pb.MODE_AUTONOMOUS: "autonomous"}
AGENT_BODIES = frozenset({"hello", "event", "status", "ack", "resync_done", "heartbeat", "goodbye"})


def check_envelope(msg: object) -> pb.Envelope:
    """What the codec decoded from an agent -> an envelope an agent may send, or Rejection."""
    if isinstance(msg, codec.Rejected):
        code = (
            grpc.StatusCode.RESOURCE_EXHAUSTED
            if msg.reason == RejectReason.OVERSIZED
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        raise Rejection(code, msg.error, reason=msg.reason)
    assert isinstance(msg, pb.Envelope)
    body = msg.WhichOneof("body")
    if body is None:
        raise Rejection(
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown message type (empty or unrecognised envelope body)",
            reason=RejectReason.UNKNOWN_TYPE,
        )
    if body not in AGENT_BODIES:
        raise Rejection(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"unexpected message type {body!r} from an agent",
            reason=RejectReason.UNKNOWN_TYPE,
        )
    return msg


@dataclasses.dataclass(frozen=True, slots=True)
class Admission:
    agent: str  # from the verified certificate
    mode: hub.Mode
    protocol: int  # the version both ends speak
    hello: pb.Hello


def admit(agent: str, first: pb.Envelope) -> Admission:
    """The first envelope of a stream from `agent` -> an Admission, or Rejection."""
    body = first.WhichOneof("body")
    if body != "hello":
        raise Rejection(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"expected hello as the first message, got {body}",
            reason=RejectReason.PROTOCOL,
        )
    hello = first.hello
    if hello.agent_name and hello.agent_name != agent:
        raise Rejection(
            grpc.StatusCode.PERMISSION_DENIED,
            f"certificate identifies agent {agent!r} but hello claims {hello.agent_name!r}",
            reason=RejectReason.IDENTITY_MISMATCH,
        )
    protocol = codec.negotiate(hello.min_protocol, hello.max_protocol)
    if protocol is None:
        raise Rejection(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"no common protocol version: agent speaks {hello.min_protocol}..{hello.max_protocol}, "
            f"principal {codec.PROTOCOL_MIN}..{codec.PROTOCOL_MAX}",
            reason=RejectReason.PROTOCOL_VERSION,
        )
    mode = MODE_NAMES.get(hello.mode)
    if mode is None:
        raise Rejection(
            grpc.StatusCode.INVALID_ARGUMENT,
            "hello names no mode (managed|autonomous)",
            reason=RejectReason.PROTOCOL,
        )
    return Admission(agent=agent, mode=mode, protocol=protocol, hello=hello)


def check_registration(agent: str, mode: hub.Mode, record: hub.AgentRecord | None) -> None:
    """Rejection unless the hub's record registers `agent` in `mode`."""
    if record is None:
        raise Rejection(
            grpc.StatusCode.PERMISSION_DENIED,
            f"agent {agent} is not registered on the hub (this hub does not register"
            " agents on their first connect)",
            reason=RejectReason.NOT_REGISTERED,
        )
    if record.mode != mode:
        raise Rejection(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"agent {agent} is registered as {record.mode}, not {mode}",
            reason=RejectReason.MODE_CONFLICT,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Placement:
    route: ownership.Route  # serve here, or redirect to route.owner_endpoint
    standin_for: str = ""  # the unreachable owner this replica stands in for, if it does


def place(
    route: ownership.Route,
    hello: pb.Hello,
    *,
    standin: Callable[[str], ownership.Route],
    shared_holds: bool,
) -> Placement:
    """Where the agent is served, given the map's route for it and what its hello says.

    An agent that names its owner as unreachable is served by the replica that would
    own it without that owner (`standin(owner)`), so that when the map drops a dead
    owner nobody moves again. That needs holds shared between replicas (Redis): the
    session entry still guarantees a single holder, since the owner's session must end
    or its liveness lapse before the entry can be taken. Rejection `not_ready` when
    this replica has no map to route by.
    """
    if (
        not route.serve
        and route.owner_endpoint
        and hello.unreachable_owner
        and hello.unreachable_owner == route.owner_id
        and shared_holds
    ):
        owner = route.owner_id
        route = standin(owner)
        standin_for = owner if route.serve else ""
    else:
        standin_for = ""
    if not route.serve and not route.owner_endpoint:
        raise Rejection(
            grpc.StatusCode.UNAVAILABLE,
            "this replica has no shard map applied (or lost its membership); try another",
            reason=RejectReason.NOT_READY,
        )
    return Placement(route, standin_for)
