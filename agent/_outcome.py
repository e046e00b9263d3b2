"""What a dial or a session came to, classified in one place.

A dial ends in a welcome, a redirect, or a `ConnectFailed` whose `DialFailure` (the
`reason` label of mooring_agent_connect_errors_total) is classified from the gRPC status
code and the replica's refusal trailer. A session ends with a `SessionEnd`, which alone
decides whether the channel under it is kept for the next dial.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from agent import _errors as errors
from proto import codec

__all__ = [
    "DROPS_CHANNEL",
    "REJECTING_CODES",
    "ConnectFailed",
    "DialFailure",
    "Ended",
    "Redirected",
    "SessionEnd",
    "Stopped",
    "classify",
    "classify_error",
    "one_line",
    "retry_after",
    "rpc_end",
    "trailer",
]


class Stopped(errors.AgentError):
    """The agent was asked to stop: unwinds whatever it is doing."""


class DialFailure(enum.StrEnum):
    BUSY = "busy"  # a replica answered "not now" (codec.RETRY_REASONS): no cooldown
    REJECTED = "rejected"  # a replica refused us (identity, registration, mode, revoked)
    PROTOCOL = "protocol"  # a replica found our messages wrong
    TLS = "tls"  # the TLS handshake failed (either side refused the other's certificate)
    TIMEOUT = "timeout"  # no welcome within connect_timeout
    UNAVAILABLE = "unavailable"  # nothing answered (refused connection, reset, no route)
    INTERNAL = "internal"  # a bug in the agent's own session loop (logged whole)


class ConnectFailed(errors.AgentError):
    """One endpoint could not give us a session; `reason` is a metric label.

    `answered` is True when a replica itself refused (it is reachable), False for
    transport failures (refused connection, timeout, broken handshake); `refusal` is
    the replica's reason then (its `codec.REJECTED_TRAILER`), else "".
    """

    def __init__(
        self,
        message: str,
        *,
        reason: DialFailure,
        answered: bool = False,
        refusal: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.answered = answered
        self.refusal = refusal
        self.retry_after = retry_after  # seconds the replica asked us to wait, if it did

    @classmethod
    def ended(
        cls, message: str, *, reason: DialFailure, trailers: Iterable[tuple[str, Any]] | None
    ) -> ConnectFailed:
        """A dial whose call ended with `trailers`: answered when they carry a refusal."""
        refusal = trailer(trailers)
        return cls(
            message,
            reason=reason,
            answered=refusal is not None,
            refusal=refusal or "",
            retry_after=retry_after(trailers),
        )


REJECTING_CODES: Mapping[grpc.StatusCode, DialFailure] = {
    grpc.StatusCode.PERMISSION_DENIED: DialFailure.REJECTED,
    grpc.StatusCode.UNAUTHENTICATED: DialFailure.REJECTED,
    grpc.StatusCode.FAILED_PRECONDITION: DialFailure.REJECTED,
    grpc.StatusCode.INVALID_ARGUMENT: DialFailure.PROTOCOL,
    grpc.StatusCode.RESOURCE_EXHAUSTED: DialFailure.PROTOCOL,
}

# gRPC reports a failed TLS handshake as UNAVAILABLE like any other transport failure;
# only its words tell them apart (a principal that refuses our certificate closes the
# socket during the handshake: "Socket closed"; an SSL error when we refuse theirs).
# The one place the agent reads error text.
_TLS_WORDS = ("ssl", "handshake", "certificate", "socket closed")


def classify(code: grpc.StatusCode, details: str, refusal: str | None) -> DialFailure:
    """A failed dial's label: from the replica's refusal trailer when a replica answered,
    else from the status code (and, for TLS, the transport's words)."""
    if refusal is not None:
        if refusal in codec.RETRY_REASONS:
            return DialFailure.BUSY
        return REJECTING_CODES.get(code, DialFailure.REJECTED)
    if code in REJECTING_CODES:
        return REJECTING_CODES[code]
    if any(word in details.lower() for word in _TLS_WORDS):
        return DialFailure.TLS
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DialFailure.TIMEOUT
    return DialFailure.UNAVAILABLE


def trailer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The replica's refusal reason in a call's trailing metadata, or None."""
    for key, value in metadata or ():
        if key == codec.REJECTED_TRAILER:
            return str(value)
    return None


def retry_after(metadata: Iterable[tuple[str, Any]] | None) -> float | None:
    """Seconds the replica asked us to wait before trying again (its
    `codec.RETRY_AFTER_TRAILER`), or None; nonsense is None, never an error."""
    for key, value in metadata or ():
        if key == codec.RETRY_AFTER_TRAILER:
            try:
                millis = int(str(value))
            except ValueError:
                return None
            return min(max(millis, 0), 3_600_000) / 1000.0  # at most an hour
    return None


def classify_error(err: grpc.aio.AioRpcError) -> DialFailure:
    return classify(err.code(), err.details() or "", trailer(err.trailing_metadata()))


def one_line(err: grpc.aio.AioRpcError, *, connecting: bool = False) -> str:
    details = (err.details() or "").strip().splitlines()
    line = f"{err.code().name}: {details[0] if details else 'no details'}"
    if connecting and classify_error(err) is DialFailure.TLS:
        line += (
            " (TLS handshake refused: is this agent's certificate signed by the principal's CA,"
            " unexpired, and does the principal's certificate name this endpoint?)"
        )
    return line


class SessionEnd(enum.StrEnum):
    """How an open session ended."""

    GOODBYE = "goodbye"  # the principal said goodbye (shutdown, self-fence, revoked)
    CLOSED = "closed"  # the principal ended the stream with a status
    TRANSPORT = "transport"  # the connection broke (UNAVAILABLE)
    RPC_ERROR = "rpc_error"  # the call failed with another status
    WRITE_RACE = "write_race"  # a write raced the end of the call
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # nothing from the principal: a silent path
    DRIFT = "drift"  # the local cluster changed behind Mooring: resync
    ENDED = "ended"  # every task finished without saying why


# Ends after which the connection itself is gone or untrustworthy: dial a new one.
DROPS_CHANNEL = frozenset(
    {SessionEnd.TRANSPORT, SessionEnd.WRITE_RACE, SessionEnd.HEARTBEAT_TIMEOUT}
)


def rpc_end(err: grpc.aio.AioRpcError) -> SessionEnd:
    return (
        SessionEnd.TRANSPORT if err.code() == grpc.StatusCode.UNAVAILABLE else SessionEnd.RPC_ERROR
    )


@dataclasses.dataclass(frozen=True)
class Redirected:
    endpoint: str
    epoch: int
    owner_id: str = ""


@dataclasses.dataclass(frozen=True)
class Ended:
    end: SessionEnd
    reason: str  # the sentence for logs
    lasted: float = 0.0  # seconds from the dial to the end

    @property
    def silent(self) -> bool:
        """Ended by the heartbeat timeout: the path is silent, not closed."""
        return self.end is SessionEnd.HEARTBEAT_TIMEOUT
