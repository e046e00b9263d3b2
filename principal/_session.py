"""One agent's stream on this replica: hello, routing, resync, then live sync.

Flow of a session (both modes):
    agent: Hello(inventory)  ->  principal: Welcome | Redirect+close
managed:     principal sends what differs from the agent's inventory, ResyncDone,
             then every later change of the agent's desired state; the agent
             acknowledges each event and sends StatusUpdates.
autonomous:  principal sends ResyncRequest(mirror inventory); the agent sends what
             differs, ResyncDone, then every later local change; each is written to
             the mirror before it is acknowledged (no ack, no loss).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from election import _errors as cerrors
from principal import _dispatch as dispatch
from principal import _history as history
from principal import _holds as holds
from principal import _hub as hub
from principal import _metrics as metrics
from principal import _ownership as ownership
from principal import _queue as queue_
from principal import _registry as registry
from proto import _credentials as credentials
from proto import _logfields as logfields
from proto import codec, objects, pb

__all__ = ["SessionManager", "SessionSettings", "StreamHandler"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

MODE_NAMES: dict[int, hub.Mode] = {pb.MODE_MANAGED: "managed", pb.MODE_AUTONOMOUS: "autonomous"}
AGENT_BODIES = {"hello", "event", "status", "ack", "resync_done", "heartbeat", "goodbye"}


@dataclasses.dataclass(frozen=True)
class SessionSettings:
    """Per-session limits and timers."""

    max_message_bytes: int = codec.DEFAULT_MAX_MESSAGE_BYTES  # bytes per envelope
    hello_timeout: float = 10.0  # seconds to wait for the first message
    heartbeat_interval: float = 5.0  # seconds between heartbeats we send
    heartbeat_timeout: float = 15.0  # seconds of silence before we drop the session
    max_pending: int = 50_000  # unacknowledged or queued envelopes before a session is dropped
    # seconds a hello that saw a newer shard-map epoch than ours waits for it to arrive
    catch_up_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError("heartbeat_timeout must exceed heartbeat_interval")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be at least 1024")


class Rejection(Exception):
    """A stream refused before or during the session: status code, one line, metric reason."""

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


class Session:
    __slots__ = (
        "_closed",
        "_seq",
        "agent",
        "close_label",
        "close_reason",
        "epoch",
        "last_received",
        "mode",
        "opened_at",
        "outbox",
        "pending",
        "session_id",
        "standby",
        "standin_for",
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
    ) -> None:
        self.agent = agent
        self.token = token
        self.standin_for = standin_for  # the unreachable owner this session stands in for
        self.standby = ""  # the endpoint the agent was told to try first if we fail
        self.opened_at = time.monotonic()
        self.mode = mode
        self.session_id = session_id
        self.epoch = epoch
        self.outbox: queue_.LightQueue[pb.Envelope | None] = queue_.LightQueue()
        self._closed = False
        self.close_reason = ""
        self.close_label = "stream_ended"
        # seq -> (sent at, kind, name, operation, version) of each unacknowledged event
        self.pending: dict[int, tuple[float, str, str, str, int]] = {}
        self._seq = 0
        self.last_received = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed

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
        if endpoint != self.standby and not self._closed:
            self.standby = endpoint
            self.outbox.put_nowait(self.heartbeat())

    def close(self, label: str, reason: str, *, final: pb.Envelope | None = None) -> None:
        """Ask the session to end: send `final` if given, then finish the stream.

        `label` is the metric label (`mooring_sessions_closed_total{reason}`), `reason`
        the sentence for logs."""
        if self._closed:
            return
        self.close_label, self.close_reason = label, reason
        if final is not None:
            self.outbox.put_nowait(final)
        self.outbox.put_nowait(None)
        self._closed = True


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
            previous.close("superseded", "superseded by a newer session of the same agent")
        self.sessions[session.agent] = session
        if self._on_change:
            self._on_change(len(self.sessions))

    def release(self, session: Session) -> None:
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
            session.close("self_fence", "self-fence: session entry lost or unconfirmed")

    def close_all(self, reason: str) -> None:
        for session in list(self.sessions.values()):
            session.close("shutdown", reason, final=pb.Envelope(goodbye=pb.Goodbye(reason=reason)))


def _key(kind: str, name: str) -> pb.ResourceKey:
    return pb.ResourceKey(kind=codec.kind_from_name(kind), name=name)


def _upsert_event(resource: hub.Resource) -> pb.ResourceEvent:
    return pb.ResourceEvent(
        key=_key(resource.kind, resource.name),
        operation=pb.OPERATION_UPSERT,
        version=resource.version,
        checksum=resource.checksum,
        object_json=codec.canonical_json(resource.object),
    )


class StreamHandler:
    """The Subscribe handler: one instance per replica, one call per agent stream."""

    def __init__(
        self,
        *,
        replica_id: str,
        desired: hub.HubStore,
        dispatcher: dispatch.Dispatcher,
        routing: ownership.Ownership,
        sessions: SessionManager,
        settings: SessionSettings,
        metrics: metrics.PrincipalMetrics,
        holder: holds.LocalHolds | holds.RedisHolds | None = None,
        recorder: history.Recorder | None = None,
    ) -> None:
        self.holder = holder or holds.LocalHolds(replica_id)
        self.recorder = recorder or history.Recorder(None, replica=replica_id)
        self.replica_id = replica_id
        self.desired = desired
        self.dispatcher = dispatcher
        self.routing = routing
        self.sessions = sessions
        self.settings = settings
        self.metrics = metrics

    # ------------------------------------------------------------------ entry
    async def subscribe(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        peer = context.peer()
        agent = credentials.peer_identity(context)
        try:
            if agent is None:
                raise Rejection(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "client certificate names no agent (CN or spiffe://mooring/agent/NAME)",
                    reason="no_identity",
                )
            await self._serve(agent, context)
        except Rejection as rej:
            self.metrics.sessions_rejected.labels(rej.reason).inc()
            logger.warning(
                "rejected stream from %s (agent %s): %s",
                peer,
                agent,
                rej.message,
                extra=logfields.of(
                    agent=agent, replica=self.replica_id, peer=peer, reason=rej.reason
                ),
            )
            # The trailer tells the agent that a replica answered (it is reachable),
            # and why it said no.
            await context.abort(
                rej.code, rej.message, trailing_metadata=((codec.REJECTED_TRAILER, rej.reason),)
            )

    async def _read(
        self, context: grpc.aio.ServicerContext, *, limit: float | None
    ) -> pb.Envelope | None:
        """Next envelope from the agent, None at end of stream; Rejection on bad input."""
        async with asyncio.timeout(limit):
            msg = await context.read()
        if msg is grpc.aio.EOF:
            return None
        if isinstance(msg, codec.Rejected):
            code = (
                grpc.StatusCode.RESOURCE_EXHAUSTED
                if msg.reason == "oversized"
                else grpc.StatusCode.INVALID_ARGUMENT
            )
            raise Rejection(code, msg.error, reason=msg.reason)
        assert isinstance(msg, pb.Envelope)
        body = msg.WhichOneof("body")
        if body is None:
            raise Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                "unknown message type (empty or unrecognised envelope body)",
                reason="unknown_type",
            )
        if body not in AGENT_BODIES:
            raise Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"unexpected message type {body!r} from an agent",
                reason="unknown_type",
            )
        self.metrics.events_received.labels(body).inc()
        return msg

    async def _serve(self, agent: str, context: grpc.aio.ServicerContext) -> None:
        started = time.monotonic()
        try:
            first = await self._read(context, limit=self.settings.hello_timeout)
        except TimeoutError:
            raise Rejection(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "no hello within the hello timeout",
                reason="no_hello",
            ) from None
        if first is None:
            return
        if first.WhichOneof("body") != "hello":
            raise Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"expected hello as the first message, got {first.WhichOneof('body')}",
                reason="protocol",
            )
        hello = first.hello
        if hello.agent_name and hello.agent_name != agent:
            raise Rejection(
                grpc.StatusCode.PERMISSION_DENIED,
                f"certificate identifies agent {agent!r} but hello claims {hello.agent_name!r}",
                reason="identity_mismatch",
            )
        protocol = codec.negotiate(hello.min_protocol, hello.max_protocol)
        if protocol is None:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"no common protocol version: agent speaks {hello.min_protocol}..{hello.max_protocol}, "
                f"principal {codec.PROTOCOL_MIN}..{codec.PROTOCOL_MAX}",
                reason="protocol_version",
            )
        mode = MODE_NAMES.get(hello.mode)
        if mode is None:
            raise Rejection(
                grpc.StatusCode.INVALID_ARGUMENT,
                "hello names no mode (managed|autonomous)",
                reason="protocol",
            )
        route = self.routing.route(agent)
        if not route.serve and hello.known_epoch > route.epoch:
            # The agent was sent here under a map we have not applied yet (a replica
            # that just started or rejoined): wait for it rather than redirect under the
            # old one, which sends the agent back and forth, then to a stand-in.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.catch_up_timeout):
                    await self.routing.catch_up(hello.known_epoch)
                route = self.routing.route(agent)
        standin_for = ""
        if (
            not route.serve
            and route.owner_endpoint
            and hello.unreachable_owner
            and hello.unreachable_owner == route.owner_id
            and self.holder.shared
        ):
            # The agent cannot reach its owner. The replica that would own it without
            # that owner stands in (so when the map drops a dead owner, nobody moves
            # again); the session entry still guarantees a single holder: the owner's
            # session must end, or its liveness lapse, before the entry can be taken.
            unreachable = route.owner_id
            alternate = self.routing.standin(agent, unreachable=unreachable)
            if alternate.serve:
                logger.warning(
                    "agent %s cannot reach its owner %s: serving it as a stand-in",
                    agent,
                    unreachable,
                    extra=logfields.of(agent=agent, replica=self.replica_id, reason="standin"),
                )
                self.metrics.standins.inc()
                standin_for = unreachable
            route = alternate
        if not route.serve and not route.owner_endpoint:
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE,
                "this replica has no shard map applied (or lost its membership); try another",
                reason="not_ready",
            )
        if not route.serve:
            self.metrics.redirects.inc()
            self.metrics.events_sent.labels("redirect").inc()
            await context.write(ownership.redirect(route, reason="not the owner"))
            return
        try:
            await self.desired.register_agent(agent, mode=mode)
        except hub.ModeConflictError as err:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION, str(err), reason="mode_conflict"
            ) from None
        except cerrors.CoordinationError as err:
            self.metrics.store_errors.inc()
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE, f"store unavailable: {err}", reason="store"
            ) from None

        session_id = uuid.uuid4().hex
        try:
            token = await self.holder.acquire(
                agent, session=session_id, epoch=route.epoch, unreachable=standin_for
            )
        except holds.HeldElsewhere as err:
            raise Rejection(grpc.StatusCode.UNAVAILABLE, str(err), reason="held") from None
        except registry.RegistryError as err:
            self.metrics.registry_errors.inc()
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE,
                f"session registry unavailable: {err}",
                reason="registry",
            ) from None
        session = Session(
            agent=agent,
            mode=mode,
            session_id=session_id,
            epoch=route.epoch,
            token=token,
            standin_for=standin_for,
        )
        self.sessions.open(session)
        # The map may have changed while we registered and acquired: from here on the
        # handoff loop sees this session; before, only this re-check does.
        now = self.routing.route(agent)
        if not now.serve and now.owner_endpoint and now.owner_id != route.owner_id:
            session.close(
                "moved",
                f"moved to replica {now.owner_id} under epoch {now.epoch} while connecting",
                final=ownership.redirect(now, reason="moved"),
            )
        self.recorder.record(
            "open", agent=agent, epoch=route.epoch, token=token, session=session_id
        )
        logger.info(
            "session %s open: agent=%s mode=%s protocol=%d epoch=%d token=%d",
            session_id,
            agent,
            mode,
            protocol,
            route.epoch,
            token,
            extra=logfields.of(
                agent=agent,
                replica=self.replica_id,
                session=session_id,
                epoch=route.epoch,
                mode=mode,
                fencing_token=token,
            ),
        )
        try:
            # Whom the agent should try first if we fail (stand-ins need shared holds).
            # Named under the map we hold now, after any wait for the entry: from here
            # on every map change re-advises it (the session is registered above).
            if self.holder.shared:
                session.standby = self.routing.successor(agent, standin_for=standin_for)
            await self._write(
                context,
                session,
                pb.Envelope(
                    welcome=pb.Welcome(
                        replica_id=self.replica_id,
                        epoch=route.epoch,
                        session_id=session.session_id,
                        protocol=protocol,
                        heartbeat_interval_ms=int(self.settings.heartbeat_interval * 1000),
                        max_message_bytes=self.settings.max_message_bytes,
                        standby_endpoint=session.standby,
                    )
                ),
            )
            # Only the managed resync reads the hello (its inventory): hand it over in a
            # box that it empties, so no frame keeps it (~1.5 KB) for the whole session.
            box = [hello]
            del first, hello
            await self._run(context, session, hello=box, started=started)
        finally:
            self.sessions.release(session)
            self.recorder.record(
                "close", agent=agent, epoch=route.epoch, token=token, session=session_id
            )
            await asyncio.shield(self.holder.release(agent, token=token))
            self.metrics.sessions_closed.labels(session.close_label).inc()
            logger.info(
                "session %s closed: agent=%s reason=%s",
                session.session_id,
                agent,
                session.close_reason or "stream ended",
                extra=logfields.of(
                    agent=agent,
                    replica=self.replica_id,
                    session=session_id,
                    epoch=route.epoch,
                    reason=session.close_label,
                ),
            )

    # ------------------------------------------------------------------ running
    async def _write(
        self, context: grpc.aio.ServicerContext, session: Session, envelope: pb.Envelope
    ) -> None:
        if not envelope.seq:
            envelope.seq = session.next_seq()
        body = envelope.WhichOneof("body") or "unknown"
        if body == "event":
            event = envelope.event
            session.pending[envelope.seq] = (
                time.monotonic(),
                codec.KIND_NAMES.get(event.key.kind, ""),
                event.key.name,
                logfields.DELETE if event.operation == pb.OPERATION_DELETE else logfields.UPSERT,
                event.version,
            )
        await context.write(envelope)
        self.metrics.events_sent.labels(body).inc()

    async def _run(
        self,
        context: grpc.aio.ServicerContext,
        session: Session,
        *,
        hello: list[pb.Hello],
        started: float,
    ) -> None:
        me = asyncio.current_task()
        assert me is not None
        failure: list[BaseException] = []
        writing = True

        def ended(task: asyncio.Task[None]) -> None:
            # The first task to raise ends the session (as asyncio.wait FIRST_EXCEPTION
            # did): interrupt the writer, which runs in this coroutine, not a task.
            if writing and not task.cancelled() and task.exception() is not None:
                failure.append(task.exception())  # type: ignore[arg-type]
                if len(failure) == 1:
                    me.cancel()

        tasks = [asyncio.create_task(self._reader(context, session), name=f"read:{session.agent}")]
        # Heartbeats are a timer callback, not a task: a task and its coroutine frame
        # cost a few KB per session, a timer handle a few hundred bytes.
        beat = _Heartbeats(self, session)
        if session.mode == "managed":
            tasks.append(
                asyncio.create_task(
                    self._push_managed(session, hello, started), name=f"push:{session.agent}"
                )
            )
        else:
            hello.clear()
            tasks.append(
                asyncio.create_task(
                    self._mirror_autonomous(session), name=f"resync:{session.agent}"
                )
            )
        for task in tasks:
            task.add_done_callback(ended)
        try:
            try:
                await self._writer(context, session)
            except _Closed:
                pass
            except asyncio.CancelledError:
                if not failure or me.uncancel() > 0:
                    raise  # cancelled from outside (the RPC ended), not by `ended`
            finally:
                writing = False
            if failure and not isinstance(failure[0], _Closed):
                raise failure[0]
        finally:
            beat.cancel()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _writer(self, context: grpc.aio.ServicerContext, session: Session) -> None:
        """The only writer to the stream (run by the handler itself); raises _Closed after a
        close."""
        while True:
            envelope = await session.outbox.get()
            if envelope is None:
                raise _Closed()
            if self.holder.is_fenced():  # e.g. resumed after a pause: serve nobody
                session.close("self_fence", "self-fence: this replica's liveness is unconfirmed")
                raise _Closed()
            await self._write(context, session, envelope)

    def _send(self, session: Session, envelope: pb.Envelope) -> None:
        if session.outbox.qsize() + len(session.pending) > self.settings.max_pending:
            session.close(
                "slow", "agent too slow: pending limit reached; it will resync on reconnect"
            )
            return
        session.outbox.put_nowait(envelope)

    def _heartbeat(self, session: Session) -> bool:
        """Every heartbeat_interval: drop a silent session, else send it a heartbeat.
        False once the session is closed for silence (no more heartbeats)."""
        silent = time.monotonic() - session.last_received
        if silent > self.settings.heartbeat_timeout:
            session.close("heartbeat_timeout", f"no message from the agent for {silent:.1f}s")
            return False
        self._send(session, session.heartbeat())
        return True

    async def _reader(self, context: grpc.aio.ServicerContext, session: Session) -> None:
        while True:
            envelope = await self._read(context, limit=None)
            if envelope is None:
                session.close("stream_ended", "agent closed the stream")
                raise _Closed()
            session.last_received = time.monotonic()
            body = envelope.WhichOneof("body")
            if body == "ack":
                sent = session.pending.pop(envelope.ack.seq, None)
                if sent is not None:
                    sent_at, kind, name, operation, version = sent
                    self.metrics.ack_seconds.observe(time.monotonic() - sent_at)
                    if envelope.ack.ok:
                        self._delivered(session, kind, name, operation, version)
                    else:
                        await self._refused(session, kind, name, envelope.ack.error)
            elif body == "status":
                await self._store_status(session, envelope)
            elif body == "event":
                await self._store_mirror(session, envelope)
            elif body == "resync_done":
                self.metrics.resync_events.inc(envelope.resync_done.sent)
            elif body == "goodbye":
                session.close("goodbye", f"agent said goodbye: {envelope.goodbye.reason}")
                raise _Closed()
            elif body == "hello":
                raise Rejection(
                    grpc.StatusCode.INVALID_ARGUMENT, "hello sent twice", reason="protocol"
                )

    def _delivered(
        self, session: Session, kind: str, name: str, operation: str, version: int
    ) -> None:
        """The agent acknowledged an event: one line per change it took (the principal
        sends a resource only when the agent's copy differs, so each ack is one change)."""
        logger.info(
            "agent %s: delivered the deletion of %s %s (version %d)"
            if operation == logfields.DELETE
            else "agent %s: delivered %s %s (version %d)",
            session.agent,
            kind,
            name,
            version,
            extra=self._fields(
                session,
                kind=kind,
                name=name,
                version=version,
                operation=operation,
            ),
        )

    def _fields(self, session: Session, **more: Any) -> dict[str, Any]:
        """Log fields naming the agent, this replica and the session, plus `more`."""
        return logfields.of(
            agent=session.agent, replica=self.replica_id, session=session.session_id, **more
        )

    async def _refused(self, session: Session, kind: str, name: str, error: str) -> None:
        """The agent could not apply what we sent (its cluster refused it): count it, log
        it once, and say so in the object's status on the hub; the agent gets it again
        when it changes or on the next resync, never in a retry loop."""
        self.metrics.delivery_errors.inc()
        reason = error.replace("\n", " ")[:300]
        logger.warning(
            "agent %s refused %s %s: %s",
            session.agent,
            kind,
            name,
            reason,
            extra=self._fields(
                session,
                kind=kind or None,
                name=name or None,
                error=reason,
            ),
        )
        if not kind:
            return
        try:
            await self.desired.record_refusal(session.agent, kind, name, message=error)
        except (hub.StoreError, cerrors.CoordinationError) as err:
            self.metrics.store_errors.inc()
            logger.warning(
                "agent %s: cannot note the refusal of %s %s: %s",
                session.agent,
                kind,
                name,
                err,
                extra=logfields.of(
                    agent=session.agent,
                    replica=self.replica_id,
                    kind=kind,
                    name=name,
                    reason="store",
                    error=str(err),
                ),
            )

    def _ack(self, session: Session, seq: int, *, error: str = "") -> None:
        self._send(session, pb.Envelope(ack=pb.Ack(seq=seq, ok=not error, error=error)))

    async def _store_call(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except hub.ModeConflictError:
            raise
        except (cerrors.CoordinationError, hub.StoreError) as err:
            self.metrics.store_errors.inc()
            # Without the store we cannot acknowledge: end the session so the agent
            # retries through a resync once the store is back. Nothing is lost.
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE, f"store unavailable: {err}", reason="store"
            ) from None

    async def _store_status(self, session: Session, envelope: pb.Envelope) -> None:
        update = envelope.status
        if session.mode != "managed":
            self._ack(
                session, envelope.seq, error="autonomous agents send status inside resource events"
            )
            return
        kind = codec.KIND_NAMES.get(update.key.kind)
        if kind is None or not update.key.name:
            self._ack(session, envelope.seq, error="status update without a valid resource key")
            return
        try:
            objects.validate_name(update.key.name, kind=kind)
        except objects.InvalidObjectError as err:
            self._ack(session, envelope.seq, error=str(err))
            return
        try:
            what = f"status of {kind} {update.key.name}"
            status = objects.load_json(update.status_json, what=what) if update.status_json else {}
        except objects.InvalidObjectError as err:
            self._ack(session, envelope.seq, error=str(err))
            return
        await self._store_call(
            self.desired.put_status(
                session.agent, kind, update.key.name, status=status, spec_version=update.version
            )
        )
        self._ack(session, envelope.seq)

    async def _store_mirror(self, session: Session, envelope: pb.Envelope) -> None:
        event = envelope.event
        if session.mode != "autonomous":
            self._ack(
                session, envelope.seq, error="managed agents cannot change their desired state"
            )
            return
        kind = codec.KIND_NAMES.get(event.key.kind)
        if kind is None or not event.key.name:
            self._ack(session, envelope.seq, error="resource event without a valid resource key")
            return
        try:
            objects.validate_name(event.key.name, kind=kind)
        except objects.InvalidObjectError as err:
            self._ack(session, envelope.seq, error=str(err))
            return
        if event.operation == pb.OPERATION_DELETE:
            operation = logfields.DELETE
            changed = await self._store_call(
                self.desired.mirror_delete(
                    session.agent, kind, event.key.name, version=event.version
                )
            )
        elif event.operation == pb.OPERATION_UPSERT:
            try:
                doc = objects.load_json(event.object_json, what=f"{kind} {event.key.name}")
                obj = objects.synced_object(doc)  # the agent checksummed exactly this part
                status = doc.get("status")
                named = {**obj, "kind": kind}
                named["metadata"] = {**obj["metadata"], "name": event.key.name}
                objects.validate_manifest(named)
            except objects.InvalidObjectError as err:
                self._ack(session, envelope.seq, error=str(err))
                return
            except (ValueError, AttributeError):
                self._ack(
                    session,
                    envelope.seq,
                    error=f"{kind} {event.key.name}: object is not a JSON object",
                )
                return
            operation = logfields.UPSERT
            changed = await self._store_call(
                self.desired.mirror_upsert(
                    session.agent,
                    kind,
                    event.key.name,
                    obj=obj,
                    version=event.version,
                    status=status,
                )
            )
        else:
            self._ack(session, envelope.seq, error="resource event without an operation")
            return
        if changed:  # not for what the mirror already holds (a resent event)
            logger.info(
                "agent %s: deleted %s %s from the hub (version %d)"
                if operation == logfields.DELETE
                else "agent %s: applied %s %s to the hub (version %d)",
                session.agent,
                kind,
                event.key.name,
                event.version,
                extra=self._fields(
                    session,
                    kind=kind,
                    name=event.key.name,
                    version=event.version,
                    operation=operation,
                ),
            )
        self._ack(session, envelope.seq)

    async def _mirror_autonomous(self, session: Session) -> None:
        """Ask the agent for what differs from the mirror, at the start and again whenever
        the mirror is changed or deleted behind Mooring's back (repairing the drift)."""
        queue = self.dispatcher.subscribe(session.agent)
        try:
            await self._request_autonomous(session)
            while True:
                changes = [await queue.get()]
                while queue.qsize():  # one request answers every drift queued so far
                    changes.append(await queue.get())
                if any(c is dispatch.RESYNC for c in changes):
                    session.close("resync", "watch history lost; resync on reconnect")
                    return
                drifted = [c for c in changes if isinstance(c, hub.Change) and c.drifted]
                if not drifted:
                    continue
                change = drifted[0]
                logger.info(
                    "agent %s: %s %s changed on the hub behind Mooring's back; asking the agent",
                    session.agent,
                    change.kind,
                    change.name,
                    extra=self._fields(
                        session,
                        kind=change.kind,
                        name=change.name,
                        reason="drift",
                    ),
                )
                self.metrics.drift_repairs.inc()
                await self._request_autonomous(session)
        finally:
            self.dispatcher.unsubscribe(session.agent, queue)

    async def _request_autonomous(self, session: Session) -> None:
        resources, _ = await self._store_call(self.desired.list_resources(session.agent))
        inventory = [
            pb.InventoryItem(
                key=_key(r.kind, r.name),
                version=r.version,
                checksum=r.checksum,
                status_checksum=r.status_checksum,
            )
            for r in resources
        ]
        self._send(session, pb.Envelope(resync_request=pb.ResyncRequest(inventory=inventory)))

    async def _resync_managed(
        self, session: Session, hello: pb.Hello, started: float
    ) -> hub.Cursor:
        """Send what differs from the agent's inventory, then ResyncDone; the snapshot's
        cursor. Its own frame, so the snapshot is freed once sent, not kept per session."""
        resources, cursor = await self._store_call(self.desired.list_resources(session.agent))
        held = {(codec.KIND_NAMES.get(i.key.kind, ""), i.key.name): i for i in hello.inventory}
        sent = 0
        for resource in resources:
            item = held.pop((resource.kind, resource.name), None)
            if item is None or item.checksum != resource.checksum:
                self._send(session, pb.Envelope(event=_upsert_event(resource)))
                sent += 1
        for kind, name in held:
            if not kind:
                continue
            self._send(
                session,
                pb.Envelope(
                    event=pb.ResourceEvent(
                        # Above every version the snapshot holds; the resyncing agent forces it.
                        key=_key(kind, name),
                        operation=pb.OPERATION_DELETE,
                        version=cursor,
                    )
                ),
            )
            sent += 1
        self._send(session, pb.Envelope(resync_done=pb.ResyncDone(sent=sent)))
        self.metrics.resync_events.inc(sent)
        self.metrics.resync_seconds.observe(time.monotonic() - started)
        return cursor

    async def _push_managed(self, session: Session, hello: list[pb.Hello], started: float) -> None:
        queue = self.dispatcher.subscribe(session.agent)
        try:
            snapshot = await self._resync_managed(session, hello.pop(), started)
            while True:
                change = await queue.get()
                if change is dispatch.RESYNC:
                    session.close("resync", "watch history lost; resync on reconnect")
                    return
                assert isinstance(change, hub.Change)
                if change.position <= snapshot:  # already in the snapshot
                    continue
                if change.deleted:
                    event = pb.ResourceEvent(
                        key=_key(change.kind, change.name),
                        operation=pb.OPERATION_DELETE,
                        version=change.version,
                    )
                elif change.resource is not None:
                    event = _upsert_event(change.resource)
                else:
                    continue
                self._send(session, pb.Envelope(event=event))
        finally:
            self.dispatcher.unsubscribe(session.agent, queue)


class _Heartbeats:
    """One session's heartbeat timer: `StreamHandler._heartbeat` every heartbeat_interval
    from the start of the session, re-armed after each run, as a sleep loop would be."""

    __slots__ = ("_handle", "_handler", "_session")

    def __init__(self, handler: StreamHandler, session: Session) -> None:
        self._handler = handler
        self._session = session
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        self._handle = asyncio.get_running_loop().call_later(
            self._handler.settings.heartbeat_interval, self._fire
        )

    def _fire(self) -> None:
        self._handle = None
        again = True
        try:
            again = self._handler._heartbeat(self._session)
        finally:  # an error must not end the silence checks: keep beating
            if again:
                self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _Closed(Exception):
    """Internal: the session ended normally."""
