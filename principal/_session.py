"""One agent's session on this replica, as state: limits, why it ends, and who holds which.

A session goes OPEN -> CLOSING (an end was asked, with a CloseReason) -> CLOSED (its
stream is done and the agent released here); a stream that ends without being asked
(the RPC was cancelled) goes OPEN -> CLOSED. The stream itself (hello, routing, the
live loop) is `principal._stream`; the per-mode sync is `principal._managed` and
`principal._autonomous`; admission is `principal._handshake`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Mapping

import grpc

from principal import _errors as errors
from principal import _hub as hub
from principal import _queue as queue_
from proto import codec, credentials, pb

__all__ = [
    "TRANSITIONS",
    "CloseReason",
    "RejectReason",
    "Rejection",
    "Session",
    "SessionEnded",
    "SessionManager",
    "SessionSettings",
    "State",
]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """Per-session limits and timers."""

    max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES  # bytes per envelope
    hello_timeout: float = 10.0  # seconds to wait for the first message
    heartbeat_interval: float = 5.0  # seconds between heartbeats we send
    heartbeat_timeout: float = 15.0  # seconds of silence before we drop the session
    max_resources: int = 5000  # an autonomous agent's objects mirrored on the hub, at most
    max_pending: int = 50_000  # unacknowledged or queued envelopes before a session is dropped
    # seconds a hello that saw a newer shard-map epoch than ours waits for it to arrive
    catch_up_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must exceed heartbeat_interval")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")
        if self.max_resources < 1:
            raise ValueError(f"max_resources must be at least 1, got {self.max_resources}")


class CloseReason(enum.StrEnum):
    """Why a session ended: the `reason` label of mooring_sessions_closed_total."""

    STREAM_ENDED = "stream_ended"  # the agent closed the stream (or the RPC ended)
    GOODBYE = "goodbye"  # the agent said goodbye
    SUPERSEDED = "superseded"  # a newer session of the same agent opened here
    SELF_FENCE = "self_fence"  # this replica can no longer prove it may serve
    SHUTDOWN = "shutdown"  # this replica is stopping
    LEAVING = "leaving"  # this replica left the membership
    MOVED = "moved"  # a new shard map gave the agent to another replica
    STANDIN_ENDED = "standin_ended"  # the owner this session stood in for is back
    SLOW = "slow"  # the agent fell max_pending envelopes behind
    HEARTBEAT_TIMEOUT = "heartbeat_timeout"  # the agent was silent too long
    RESYNC = "resync"  # the hub store's watch history was lost: resync on reconnect
    REVOKED = "revoked"  # the agent's certificate was revoked


class RejectReason(enum.StrEnum):
    """Why a stream was refused: the trailer the agent reads and the `reason` label of
    mooring_sessions_rejected_total. The agent's copy of the permanent ones is
    `agent._refusals.FIXES`."""

    NO_IDENTITY = "no_identity"
    REVOKED = "revoked"
    NO_HELLO = "no_hello"
    PROTOCOL = "protocol"
    UNKNOWN_TYPE = "unknown_type"
    MALFORMED = "malformed"
    OVERSIZED = "oversized"
    IDENTITY_MISMATCH = "identity_mismatch"
    PROTOCOL_VERSION = "protocol_version"
    NOT_REGISTERED = "not_registered"
    MODE_CONFLICT = "mode_conflict"
    NOT_READY = "not_ready"
    HELD = "held"
    REGISTRY = "registry"
    STORE = "store"
    BUSY = "busy"  # too many sessions being set up on this replica at once
    RATE_LIMITED = "rate_limited"  # this agent starts streams too often


class Rejection(errors.PrincipalError):
    """A stream refused before or during the session: status code, one line, metric reason."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: RejectReason | str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = str(reason)
        self.retry_after = retry_after  # seconds the agent is asked to wait, if any


def store_unavailable(err: BaseException) -> Rejection:
    """The hub store or the coordination store did not answer: the agent retries (through a
    resync once the store is back), so nothing is lost."""
    return Rejection(grpc.StatusCode.UNAVAILABLE, f"store unavailable: {err}", reason="store")


class SessionEnded(errors.PrincipalError):
    """Raised inside a session's tasks once it is closing: the normal way out of the loop."""


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


TRANSITIONS: Mapping[State, frozenset[State]] = {
    State.OPEN: frozenset({State.CLOSING, State.CLOSED}),
    State.CLOSING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Session:
    __slots__ = (
        "_seq",
        "agent",
        "certificate",
        "close_label",
        "close_reason",
        "epoch",
        "last_received",
        "mirrored",
        "mode",
        "opened_at",
        "outbox",
        "pending",
        "session_id",
        "standby",
        "standin_for",
        "state",
        "token",
    )

    def __init__(
        self,
        *,
        agent: str,
        mode: hub.Mode,
        session_id: str,
        epoch: int,
        token: int = 0,
        standin_for: str = "",
        certificate: credentials.CertificateId | None = None,
    ) -> None:
        self.agent = agent
        self.certificate = certificate  # the peer's, for the revocation list
        self.token = token
        self.standin_for = standin_for  # the unreachable owner this session stands in for
        self.standby = ""  # the endpoint the agent was told to try first if we fail
        now = asyncio.get_running_loop().time()  # made on the loop; its timers read it
        self.opened_at = now
        self.mode = mode
        self.session_id = session_id
        self.epoch = epoch
        self.outbox: queue_.LightQueue[pb.Envelope | None] = queue_.LightQueue()
        self.state = State.OPEN
        self.close_reason = ""
        self.close_label = CloseReason.STREAM_ENDED
        # seq -> (sent at, kind, name, operation, version, checksum) of each unacked event
        self.pending: dict[int, tuple[float, str, str, str, int, str]] = {}
        self._seq = 0
        self.last_received = now
        self.mirrored = 0  # an autonomous agent's objects on the hub, as this session knows

    @property
    def closed(self) -> bool:
        """True once an end was asked (or the session is over): send it nothing more."""
        return self.state is not State.OPEN

    def _transition(self, to: State) -> None:
        if to not in TRANSITIONS[self.state]:
            raise RuntimeError(f"illegal session transition {self.state.value} -> {to.value}")
        self.state = to

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def heartbeat(self) -> pb.Envelope:
        return pb.Envelope(
            heartbeat=pb.Heartbeat(
                sent_unix_ms=int(time.time() * 1000), standby_endpoint=self.standby
            )
        )

    def advise_standby(self, endpoint: str) -> None:
        """Tell the agent a new standby at once (a map change moved it)."""
        if endpoint != self.standby and not self.closed:
            self.standby = endpoint
            self.outbox.put_nowait(self.heartbeat())

    def close(self, label: CloseReason, reason: str, *, final: pb.Envelope | None = None) -> None:
        """Ask the session to end: send `final` if given, then finish the stream.

        `label` is the metric label (`mooring_sessions_closed_total{reason}`), `reason`
        the sentence for logs. Only the first ask counts."""
        if self.closed:
            return
        self._transition(State.CLOSING)
        self.close_label, self.close_reason = label, reason
        if final is not None:
            self.outbox.put_nowait(final)
        self.outbox.put_nowait(None)

    def ended(self) -> None:
        """The stream is done (whether or not an end was asked)."""
        if self.state is not State.CLOSED:
            self._transition(State.CLOSED)


class SessionManager:
    """The sessions open on this replica, at most one per agent (the newest wins)."""

    def __init__(
        self,
        *,
        on_change: Callable[[int], None] | None = None,
        on_release: Callable[[str], None] | None = None,
    ) -> None:
        self.sessions: dict[str, Session] = {}
        self._on_change = on_change
        self.on_release = on_release  # agent name, after its session here ended

    def open(self, session: Session) -> None:
        previous = self.sessions.get(session.agent)
        if previous is not None:
            previous.close(
                CloseReason.SUPERSEDED, "superseded by a newer session of the same agent"
            )
        self.sessions[session.agent] = session
        if self._on_change:
            self._on_change(len(self.sessions))

    def release(self, session: Session) -> None:
        session.ended()
        if self.sessions.get(session.agent) is session:
            del self.sessions[session.agent]
            if self.on_release:
                self.on_release(session.agent)
        if self._on_change:
            self._on_change(len(self.sessions))

    def close_lost(self, agent: str, token: int) -> None:
        """The session-registry entry behind this session is gone: stop serving (self-fence)."""
        session = self.sessions.get(agent)
        if session is not None and session.token == token:
            session.close(CloseReason.SELF_FENCE, "self-fence: session entry lost or unconfirmed")

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close(
                CloseReason.SHUTDOWN, reason, final=pb.Envelope(goodbye=pb.Goodbye(reason=reason))
            )
