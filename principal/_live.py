"""An open session's live loop, and the `sync.Link` its strategy is given.

One writer (the stream handler's own coroutine: nothing else writes to the stream), one
reader task that routes the agent's acks itself and its events and statuses to the
strategy, the strategy's task, and a heartbeat timer that also drops a silent agent.
The first of them to fail ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

import grpc

from principal import _deliveries as deliveries_
from principal import _dispatch as dispatch
from principal import _hub as hub
from principal import _metrics as metrics
from principal import _sync as sync
from principal._session import (
    CloseReason,
    Rejection,
    RejectReason,
    Session,
    SessionEnded,
    SessionSettings,
    store_unavailable,
)
from proto import codec, logfields, pb

__all__ = ["Host", "Live"]

T = TypeVar("T")
logger = logging.getLogger(__name__)


class Fenced(Protocol):
    def is_fenced(self) -> bool: ...


class Host(Protocol):
    """What a live session needs of the replica's stream handler."""

    replica_id: str
    desired: hub.HubStore
    dispatcher: dispatch.Dispatcher
    metrics: metrics.PrincipalMetrics
    settings: SessionSettings
    deliveries: deliveries_.DeliveryLog | None

    @property
    def holder(self) -> Fenced: ...

    async def read(
        self, context: grpc.aio.ServicerContext, *, limit: float | None
    ) -> pb.Envelope | None: ...


class Live:
    """One open session: the live loop (writer, reader, heartbeats) and the `sync.Link` its
    strategy is given."""

    __slots__ = ("_handler", "session")

    def __init__(self, handler: Host, session: Session) -> None:
        self._handler = handler
        self.session = session

    # ------------------------------------------------------------------ sync.Link
    @property
    def store(self) -> hub.HubStore:
        return self._handler.desired

    @property
    def dispatcher(self) -> dispatch.Dispatcher:
        return self._handler.dispatcher

    @property
    def metrics(self) -> metrics.PrincipalMetrics:
        return self._handler.metrics

    @property
    def settings(self) -> SessionSettings:
        return self._handler.settings

    def send(self, envelope: pb.Envelope) -> None:
        session = self.session
        if session.outbox.qsize() + len(session.pending) > self.settings.max_pending:
            session.close(
                CloseReason.SLOW,
                "agent too slow: pending limit reached; it will resync on reconnect",
            )
            return
        session.outbox.put_nowait(envelope)

    def ack(self, seq: int, *, error: str = "") -> None:
        self.send(pb.Envelope(ack=pb.Ack(seq=seq, ok=not error, error=error)))

    async def store_call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except hub.ModeConflictError:
            raise
        except hub.StoreError as err:
            self.metrics.store_errors.inc()
            raise store_unavailable(err) from err

    def fields(self, **more: Any) -> dict[str, Any]:
        return logfields.of(
            agent=self.session.agent,
            replica=self._handler.replica_id,
            session=self.session.session_id,
            **more,
        )

    # ------------------------------------------------------------------ live loop
    async def run(self, context: grpc.aio.ServicerContext, strategy: sync.Strategy) -> None:
        session = self.session
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

        tasks = [
            asyncio.create_task(self.reader(context, strategy), name=f"read:{session.agent}"),
            asyncio.create_task(strategy.run(), name=f"sync:{session.agent}"),
        ]
        # Heartbeats are a timer callback, not a task: a task and its coroutine frame
        # cost a few KB per session, a timer handle a few hundred bytes.
        beat = _Heartbeats(self)
        for task in tasks:
            task.add_done_callback(ended)
        try:
            try:
                await self._writer(context)
            except SessionEnded:
                pass
            except asyncio.CancelledError:
                if not failure or me.uncancel() > 0:
                    raise  # cancelled from outside (the RPC ended), not by `ended`
            finally:
                writing = False
            if failure and not isinstance(failure[0], SessionEnded):
                raise failure[0]
        finally:
            beat.cancel()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)

    async def write(self, context: grpc.aio.ServicerContext, envelope: pb.Envelope) -> None:
        session = self.session
        if not envelope.seq:
            envelope.seq = session.next_seq()
        body = envelope.WhichOneof("body") or "unknown"
        if body == "event":
            event = envelope.event
            session.pending[envelope.seq] = (
                asyncio.get_running_loop().time(),
                codec.KIND_NAMES.get(event.key.kind, ""),
                event.key.name,
                logfields.DELETE if event.operation == pb.OPERATION_DELETE else logfields.UPSERT,
                event.version,
                event.checksum,
            )
        await context.write(envelope)
        self.metrics.events_sent.labels(body).inc()

    async def _writer(self, context: grpc.aio.ServicerContext) -> None:
        """The only writer to the stream (run by the handler itself); raises SessionEnded
        after a close."""
        session = self.session
        while True:
            envelope = await session.outbox.get()
            if envelope is None:
                raise SessionEnded()
            if self._handler.holder.is_fenced():  # e.g. resumed after a pause: serve nobody
                session.close(
                    CloseReason.SELF_FENCE, "self-fence: this replica's liveness is unconfirmed"
                )
                raise SessionEnded()
            await self.write(context, envelope)

    def heartbeat(self, *, beat: bool) -> float | None:
        """The heartbeat timer's tick: drop a silent session, else send it a heartbeat when
        `beat`. None once the session is closed for silence, else the seconds until the
        agent's silence would reach heartbeat_timeout (the timer checks again then, so a
        silent agent is dropped on time, not up to one interval late)."""
        session = self.session
        silent = asyncio.get_running_loop().time() - session.last_received
        if silent > self.settings.heartbeat_timeout:
            session.close(
                CloseReason.HEARTBEAT_TIMEOUT, f"no message from the agent for {silent:.1f}s"
            )
            return None
        if beat:
            self.send(session.heartbeat())
        return self.settings.heartbeat_timeout - silent

    async def reader(self, context: grpc.aio.ServicerContext, strategy: sync.Strategy) -> None:
        """The reader task: acks are taken here, events and statuses by the strategy; raises
        SessionEnded when the agent ends the session, Rejection on a protocol error."""
        session = self.session
        while True:
            envelope = await self._handler.read(context, limit=None)
            if envelope is None:
                session.close(CloseReason.STREAM_ENDED, "agent closed the stream")
                raise SessionEnded()
            session.last_received = asyncio.get_running_loop().time()
            body = envelope.WhichOneof("body")
            if body == "ack":
                await self._acked(envelope.ack)
            elif body == "status":
                await strategy.on_status(envelope)
            elif body == "event":
                await strategy.on_event(envelope)
            elif body == "resync_done":
                self.metrics.resync_events.inc(envelope.resync_done.sent)
            elif body == "goodbye":
                session.close(CloseReason.GOODBYE, f"agent said goodbye: {envelope.goodbye.reason}")
                raise SessionEnded()
            elif body == "hello":
                raise Rejection(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "hello sent twice",
                    reason=RejectReason.PROTOCOL,
                )

    async def _acked(self, ack: pb.Ack) -> None:
        sent = self.session.pending.pop(ack.seq, None)
        if sent is None:
            return
        sent_at, kind, name, operation, version, checksum = sent
        self.metrics.ack_seconds.observe(asyncio.get_running_loop().time() - sent_at)
        deliveries = self._handler.deliveries
        if kind and deliveries is not None:
            answer = None
            if operation != logfields.DELETE or not ack.ok:
                answer = hub.Delivery(checksum, version, ack.ok, hub.now_rfc3339())
            deliveries.note(self.session.agent, kind, name, answer)
        if ack.ok:
            self._delivered(kind, name, operation, version)
        else:
            await self._refused(kind, name, ack.error)

    def _delivered(self, kind: str, name: str, operation: str, version: int) -> None:
        """The agent acknowledged an event: one line per change it took (the principal
        sends a resource only when the agent's copy differs, so each ack is one change)."""
        logger.info(
            "agent %s: delivered the deletion of %s %s (version %d)"
            if operation == logfields.DELETE
            else "agent %s: delivered %s %s (version %d)",
            self.session.agent,
            kind,
            name,
            version,
            extra=self.fields(kind=kind, name=name, version=version, operation=operation),
        )

    async def _refused(self, kind: str, name: str, error: str) -> None:
        """The agent could not apply what we sent (its cluster refused it): count it, log
        it once, and say so in the object's status on the hub; the agent gets it again
        when it changes or on the next resync, never in a retry loop."""
        agent = self.session.agent
        self.metrics.delivery_errors.inc()
        reason = error.replace("\n", " ")[:300]
        logger.warning(
            "agent %s refused %s %s: %s",
            agent,
            kind,
            name,
            reason,
            extra=self.fields(kind=kind or None, name=name or None, error=reason),
        )
        if not kind:
            return
        try:
            await self.store.record_refusal(agent, kind, name, message=error)
        except hub.StoreError as err:
            self.metrics.store_errors.inc()
            logger.warning(
                "agent %s: cannot note the refusal of %s %s: %s",
                agent,
                kind,
                name,
                err,
                extra=logfields.of(
                    agent=agent,
                    replica=self._handler.replica_id,
                    kind=kind,
                    name=name,
                    reason="store",
                    error=str(err),
                ),
            )


class _Heartbeats:
    """One session's heartbeat timer: a heartbeat every heartbeat_interval from the start
    of the session, as a sleep loop would send them, and a silence check at each beat and
    at the moment the agent's silence reaches heartbeat_timeout."""

    __slots__ = ("_due", "_handle", "_link")

    # The silence check fires this much after the deadline, so that `silent` exceeds it.
    MARGIN = 0.005  # seconds

    def __init__(self, link: Live) -> None:
        self._link = link
        self._handle: asyncio.TimerHandle | None = None
        loop = asyncio.get_running_loop()
        self._due = loop.time() + link.settings.heartbeat_interval  # the next beat
        self._handle = loop.call_at(self._due, self._fire)

    def _fire(self) -> None:
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        beat = now >= self._due
        if beat:
            self._due += self._link.settings.heartbeat_interval
            if self._due <= now:  # the loop was stalled past a whole interval
                self._due = now + self._link.settings.heartbeat_interval
        left: float | None = math.inf  # if heartbeat() raises: check again at the next beat
        try:
            left = self._link.heartbeat(beat=beat)
        finally:  # an error must not end the silence checks: keep checking
            if left is not None:
                self._handle = loop.call_at(min(self._due, now + left + self.MARGIN), self._fire)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
