"""The running part of one agent session: reader, writer, local-change pusher, heartbeats.

`agent._client` dials and is welcomed; `Live.run` then serves the session until it
ends and says how (`agent._outcome.Ended`) or where the principal sent it
(`agent._outcome.Redirected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc

from agent import _errors as errors_
from agent import _outcome as outcome_
from agent import _sides as sides
from proto import codec, logfields, objects, pb

if TYPE_CHECKING:
    from agent import _client as client

__all__ = ["Live", "SessionOver"]

logger = logging.getLogger(__name__)


class SessionOver(errors_.AgentError):
    """Raised by a session's task to end it with `outcome`."""

    def __init__(self, outcome: outcome_.Ended | outcome_.Redirected) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


class Live:
    """The running part of one session: reader, writer, local-change pusher, heartbeats."""

    def __init__(
        self, agent: client.Agent, call: Any, *, welcome: pb.Welcome, started: float
    ) -> None:
        self.agent = agent
        self.store = agent.store
        self.metrics = agent.metrics
        self.call = call
        self.started = started  # loop time
        self.interval = (
            max(welcome.heartbeat_interval_ms / 1000.0, 0.1)
            if welcome.heartbeat_interval_ms
            else 5.0
        )
        self.outbox: asyncio.Queue[pb.Envelope] = asyncio.Queue()
        self.seq = 1
        # seq -> (what, kind, name, marker, operation): "event" at a version, "status" at a checksum
        self.pending: dict[int, tuple[str, str, str, int | str, str]] = {}
        self.inflight: dict[tuple[str, str], int | str] = {}
        self.resyncing = True
        self.last_received = asyncio.get_running_loop().time()
        self.wake = asyncio.Event()
        self.side: sides.Side = sides.SIDES[agent.settings.mode](self)

    def _fields(
        self,
        *,
        kind: str | None = None,
        name: str | None = None,
        version: int | None = None,
        operation: str | None = None,
        reason: str | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """Log fields naming this agent and session, and what the line is about."""
        agent = self.agent
        return logfields.of(
            agent=agent.settings.name,
            replica=agent.replica_id,
            session=agent.session_id,
            epoch=agent.epoch,
            kind=kind,
            name=name,
            version=version,
            operation=operation,
            reason=reason,
            error=error,
        )

    def send(self, envelope: pb.Envelope) -> int:
        self.seq += 1
        envelope.seq = self.seq
        self.outbox.put_nowait(envelope)
        return self.seq

    async def run(self) -> outcome_.Ended | outcome_.Redirected:
        tasks = [
            asyncio.create_task(self._reader(), name="agent-read"),
            asyncio.create_task(self._writer(), name="agent-write"),
            asyncio.create_task(self._heartbeat(), name="agent-beat"),
            asyncio.create_task(self._watch_local(), name="agent-local"),
            asyncio.create_task(self._stopper(), name="agent-stop"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            errors = [t.exception() for t in done if not t.cancelled()]
            for err in errors:
                if isinstance(err, outcome_.Stopped):
                    raise err
            for err in errors:
                if isinstance(err, SessionOver):
                    return err.outcome
            for err in errors:
                if isinstance(err, grpc.aio.AioRpcError):
                    return outcome_.Ended(outcome_.rpc_end(err), outcome_.one_line(err))
                if isinstance(err, asyncio.InvalidStateError):  # a write raced the call's end
                    return outcome_.Ended(
                        outcome_.SessionEnd.WRITE_RACE, "stream ended while sending"
                    )
            for err in errors:
                if err is not None:
                    raise err
            return outcome_.Ended(outcome_.SessionEnd.ENDED, "session ended")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.call.cancel()

    async def _stopper(self) -> None:
        await self.agent._stop.wait()
        with contextlib.suppress(Exception):
            await self.call.write(
                pb.Envelope(seq=self.seq + 1, goodbye=pb.Goodbye(reason="agent stopping"))
            )
        raise outcome_.Stopped()

    async def _writer(self) -> None:
        while True:
            envelope = await self.outbox.get()
            await self.call.write(envelope)
            self.metrics.events_sent.labels(envelope.WhichOneof("body") or "unknown").inc()

    async def _heartbeat(self) -> None:
        timeout = self.interval * self.agent.settings.heartbeat_timeout_factor
        while True:
            await asyncio.sleep(self.interval)
            silent = asyncio.get_running_loop().time() - self.last_received
            if silent > timeout:
                raise SessionOver(
                    outcome_.Ended(
                        outcome_.SessionEnd.HEARTBEAT_TIMEOUT,
                        f"heartbeat timeout: nothing from the principal for {silent:.1f}s",
                    )
                )
            self.send(pb.Envelope(heartbeat=pb.Heartbeat(sent_unix_ms=int(time.time() * 1000))))

    async def _reader(self) -> None:
        while True:
            envelope = await self.call.read()
            if envelope is grpc.aio.EOF:
                code = await self.call.code()
                details = await self.call.details()
                raise SessionOver(
                    outcome_.Ended(
                        outcome_.SessionEnd.CLOSED,
                        f"stream closed by the principal ({code.name}: {details or 'no details'})",
                    )
                )
            self.last_received = asyncio.get_running_loop().time()
            body = envelope.WhichOneof("body")
            self.metrics.events_received.labels(body or "unknown").inc()
            if body == "event":
                await self._on_event(envelope)
            elif body == "ack":
                await self._acked(envelope.ack)
            elif body == "heartbeat":
                self.agent.standby = envelope.heartbeat.standby_endpoint
            elif body == "resync_done":
                self.resyncing = False
                self.agent._resynced(self.started)
                self.wake.set()
            elif body == "resync_request":
                first = self.resyncing  # later ones: the hub's mirror drifted; answer again
                if await self.side.answer_resync(envelope.resync_request):
                    self.resyncing = False
                    if first:
                        self.agent._resynced(self.started)
            elif body == "redirect":
                self.agent.epoch = max(self.agent.epoch, envelope.redirect.epoch)
                raise SessionOver(
                    outcome_.Redirected(
                        envelope.redirect.owner_endpoint,
                        envelope.redirect.epoch,
                        envelope.redirect.owner_replica_id,
                    )
                )
            elif body == "goodbye":
                raise SessionOver(
                    outcome_.Ended(
                        outcome_.SessionEnd.GOODBYE,
                        f"principal said goodbye: {envelope.goodbye.reason}",
                    )
                )

    # --- events from the hub, and local changes --------------------------------------
    async def _on_event(self, envelope: pb.Envelope) -> None:
        event = envelope.event
        kind = codec.KIND_NAMES.get(event.key.kind)
        changed, error = False, ""
        if kind is None or not event.key.name:
            error = "resource event without a valid key"
        else:
            try:  # the one validator the hub uses too: no name reaches a store unchecked
                objects.validate_name(event.key.name, kind=kind)
            except objects.InvalidObjectError as err:
                error = str(err)
            else:
                changed, error = await self.side.apply(event, kind)
        if changed:  # once per change: a resent or unchanged event changes nothing
            assert kind is not None
            op = logfields.DELETE if event.operation == pb.OPERATION_DELETE else logfields.UPSERT
            self.metrics.events_applied.labels(op).inc()
            logger.info(
                "agent %s: deleted %s %s (version %d)"
                if op == logfields.DELETE
                else "agent %s: applied %s %s (version %d)",
                self.agent.settings.name,
                kind,
                event.key.name,
                event.version,
                extra=self._fields(
                    kind=kind, name=event.key.name, version=event.version, operation=op
                ),
            )
        if self.resyncing:
            self.metrics.resync_events.inc()
        if error:
            logger.warning(
                "agent %s: refused event: %s",
                self.agent.settings.name,
                error,
                extra=self._fields(
                    kind=kind, name=event.key.name or None, version=event.version, error=error
                ),
            )
        self.send(pb.Envelope(ack=pb.Ack(seq=envelope.seq, ok=not error, error=error)))

    def sent(self, kind: str, name: str, version: int, operation: str) -> None:
        """A local change is the principal's now: logged once, when it is acknowledged
        (or, its ack lost with a session, when the next resync finds the hub has it)."""
        logger.info(
            "agent %s: sent the deletion of %s %s to the principal (version %d)"
            if operation == logfields.DELETE
            else "agent %s: sent %s %s to the principal (version %d)",
            self.agent.settings.name,
            kind,
            name,
            version,
            extra=self._fields(kind=kind, name=name, version=version, operation=operation),
        )

    # --- both: local changes and acknowledgements ---------------------------------------
    async def _watch_local(self) -> None:
        """Push local changes; the poll backs off while the store is quiet (many agents
        may share a process) and snaps back to `poll_interval` on the next change."""
        seen = -1
        # A session's first pass is no sign of activity: start slow, so a reconnect storm
        # of many agents in one process does not poll at the full rate.
        interval = self.agent.settings.poll_interval_max
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            version = await self.store.data_version()
            due = loop.time() - checked >= self.agent.settings.drift_check_interval
            if (version != seen or due) and not self.resyncing:
                if seen != -1 and version != seen:
                    interval = self.agent.settings.poll_interval  # a change: look again soon
                seen = version
                checked = loop.time()
                await self._push_local()
                drift = await self.store.drifted()
                if drift:
                    # Repaired by the resync that every session starts with: what differs
                    # from the principal's inventory is sent again, and wins.
                    self.metrics.drift_repairs.inc()
                    logger.info(
                        "agent %s: %s; resyncing",
                        self.agent.settings.name,
                        drift,
                        extra=self._fields(reason="drift"),
                    )
                    raise SessionOver(
                        outcome_.Ended(outcome_.SessionEnd.DRIFT, f"local drift: {drift}")
                    )
            else:
                interval = min(interval * 1.5, self.agent.settings.poll_interval_max)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.wake.wait()

    async def _push_local(self) -> None:
        for row in await self.store.unsynced():
            self.side.push(row)

    async def _acked(self, ack: pb.Ack) -> None:
        entry = self.pending.pop(ack.seq, None)
        if entry is None:
            return
        what, kind, name, marker, operation = entry
        if not ack.ok:
            logger.warning(
                "agent %s: principal refused %s of %s %s: %s",
                self.agent.settings.name,
                what,
                kind,
                name,
                ack.error,
                extra=self._fields(kind=kind, name=name, error=ack.error),
            )
            return  # stays in flight at this version: resent only after it changes again
        if what == "event":
            assert isinstance(marker, int)
            await self.store.mark_synced(kind, name, marker)
            self.sent(kind, name, marker, operation)
        else:
            assert isinstance(marker, str)
            await self.store.mark_status_synced(kind, name, marker)
        if self.inflight.get((kind, name)) == marker:
            del self.inflight[(kind, name)]
        self.wake.set()
