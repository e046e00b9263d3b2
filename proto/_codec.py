"""Wire helpers shared by both ends: protocol negotiation, checksums, bounded decoding."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
from typing import Any, cast

from google.protobuf import message as _message

from proto.v1 import mooring_pb2 as pb

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "KEEPALIVE_TIMEOUT_S",
    "KEEPALIVE_TIME_S",
    "KIND_NAMES",
    "MIN_PING_INTERVAL_S",
    "PROTOCOL_MAX",
    "PROTOCOL_MIN",
    "REJECTED_TRAILER",
    "RELEASE",
    "RETRY_AFTER_TRAILER",
    "RETRY_REASONS",
    "SERVICE_NAME",
    "SUBSCRIBE_METHOD",
    "Rejected",
    "bounded_decoder",
    "canonical_json",
    "checksum",
    "kind_from_name",
    "negotiate",
]

# Protocol versions this build speaks. A peer is accepted when the ranges overlap;
# the session then runs at the highest common version (so a rolling upgrade that
# raises PROTOCOL_MAX keeps every old agent connected).
PROTOCOL_MIN = 1
PROTOCOL_MAX = 1


def _release() -> str:
    try:
        return importlib.metadata.version("mooring")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "0+unknown"


RELEASE = _release()
"""Mooring's release, from the installed package's metadata (pyproject's version)."""

SERVICE_NAME = "mooring.v1.AgentStream"
SUBSCRIBE_METHOD = f"/{SERVICE_NAME}/Subscribe"
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20  # 1 MiB per envelope

# HTTP/2 keepalive, agreed by both ends (the agent's channel and the replica's server
# import these): each pings after KEEPALIVE_TIME_S of idleness and gives up on a peer
# that does not answer within KEEPALIVE_TIMEOUT_S; the server accepts pings down to
# every MIN_PING_INTERVAL_S, so a client keeping the default is never sent GOAWAY
# too_many_pings (an agent may not ping more often than that: AgentSettings checks).
KEEPALIVE_TIME_S = 10.0
KEEPALIVE_TIMEOUT_S = 5.0
MIN_PING_INTERVAL_S = 4.0

# Every refusal a replica sends carries this trailer with its reason, so an agent can
# tell "a replica answered no" (it is reachable) from a transport failure.
REJECTED_TRAILER = "mooring-rejected"
# Refusal reasons that mean "reachable, retry soon": no cooldown for that replica.
RETRY_REASONS = frozenset({"held", "not_ready", "store", "registry", "busy", "rate_limited"})
# A refusal may say when to come back: milliseconds, a decimal integer. The agent waits
# at least that long (plus jitter, so a refused crowd does not return as one).
RETRY_AFTER_TRAILER = "mooring-retry-after-ms"

KIND_NAMES: dict[int, str] = {
    pb.KIND_APPLICATION: "Application",
    pb.KIND_APP_PROJECT: "AppProject",
}


def kind_from_name(name: str) -> pb.Kind:
    """ "Application" / "AppProject" -> the wire enum; ValueError otherwise."""
    for value, label in KIND_NAMES.items():
        if label == name:
            return cast("pb.Kind", value)
    raise ValueError(f"unsupported kind {name!r}: expected Application or AppProject")


def negotiate(
    peer_min: int, peer_max: int, *, ours: tuple[int, int] = (PROTOCOL_MIN, PROTOCOL_MAX)
) -> int | None:
    """The highest protocol version both ranges contain, or None when they do not overlap."""
    if peer_min == 0 and peer_max == 0:
        return None
    low, high = max(peer_min, ours[0]), min(peer_max, ours[1])
    return high if low <= high else None


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace; checksums are taken over this."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def checksum(obj: Any) -> str:
    """sha256 hex of the canonical JSON of obj; "" for None."""
    if obj is None:
        return ""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


@dataclasses.dataclass(frozen=True, slots=True)
class Rejected:
    """What a bounded decoder returns instead of raising: the reason and a one-line error."""

    reason: str  # metric label: "oversized" | "malformed"
    error: str


def bounded_decoder(limit: int) -> Any:
    """A gRPC request deserializer that never raises.

    gRPC turns a raising deserializer into an opaque INTERNAL error; returning a
    `Rejected` value lets the handler answer with a clear status and count it.
    """

    def decode(data: bytes) -> pb.Envelope | Rejected:
        if len(data) > limit:
            return Rejected(
                "oversized", f"message of {len(data)} bytes exceeds the limit of {limit} bytes"
            )
        envelope = pb.Envelope()
        try:
            envelope.ParseFromString(data)
        except _message.DecodeError as err:
            return Rejected("malformed", f"malformed message: {err or 'cannot decode'}")
        return envelope

    return decode
