"""The agent's session loop: dial, hello, resync, then live sync; reconnect forever.

Reconnects sweep every endpoint before backing off; backoff is tenacity's full-jitter
exponential, capped. Every session starts with the resync handshake, so a session
lost at any point loses nothing: what was not acknowledged is found again by the
next resync's inventory comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import prometheus_client as prom
import tenacity

from agent import _endpoints as endpoints_
from agent import _localstore as localstore
from agent import _metrics as metrics_
from agent import _settings as settings_
from agent import _store as store_
from proto import _credentials as credentials
from proto import _logfields as logfields
from proto import codec, objects, pb

__all__ = ["Agent", "AgentError", "channel_options"]

logger = logging.getLogger(__name__)

STORE_CHECK_SECONDS = 5.0
"""How often the agent checks that its local store answers (readiness)."""
MODES = {"managed": pb.MODE_MANAGED, "autonomous": pb.MODE_AUTONOMOUS}
REJECTING_CODES = {
    grpc.StatusCode.PERMISSION_DENIED: "rejected",
    grpc.StatusCode.UNAUTHENTICATED: "rejected",
    grpc.StatusCode.FAILED_PRECONDITION: "rejected",
    grpc.StatusCode.INVALID_ARGUMENT: "protocol",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "protocol",
}


class AgentError(Exception):
    """Root of the agent's errors."""


class ConnectFailed(AgentError):
    """One endpoint could not give us a session; `reason` is a metric label.

    `answered` is True when a replica itself refused (it is reachable), False for
    transport failures (refused connection, timeout, broken handshake).
    """

    def __init__(self, message: str, *, reason: str, answered: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.answered = answered


class SweepFailed(AgentError):
    """Every endpoint of one sweep failed."""


@dataclasses.dataclass(frozen=True)
class _Redirected:
    endpoint: str
    epoch: int
    owner_id: str = ""


@dataclasses.dataclass(frozen=True)
class _Ended:
    reason: str
    lasted: float
    silent: bool = False  # ended by the heartbeat timeout: the path is silent, not closed


def channel_options(settings: settings_.AgentSettings) -> list[tuple[str, Any]]:
    """Client channel args; keepalive agreed with the principal's ping allowance (>= 4 s)."""
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.client_idle_timeout_ms", 60_000),  # cached channels to idle replicas let go
    ]


def _label(code: grpc.StatusCode, details: str, trailer: str | None) -> str:
    """The metric label of a failed dial: from the replica's refusal trailer when a
    replica answered, else from the status code and the transport's words."""
    if trailer is not None:
        return "busy" if trailer in codec.RETRY_REASONS else REJECTING_CODES.get(code, "rejected")
    reason = REJECTING_CODES.get(code)
    if reason:
        return reason
    # A principal that refuses our certificate closes the socket during the handshake;
    # gRPC reports that as "Socket closed" (or an SSL error when we refuse theirs).
    lowered = details.lower()
    if any(word in lowered for word in ("ssl", "handshake", "certificate", "socket closed")):
        return "tls"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "timeout"
    return "unavailable"


def _trailer(metadata: Any) -> str | None:
    """The replica's refusal reason in a call's trailing metadata, or None."""
    for key, value in metadata or ():
        if key == codec.REJECTED_TRAILER:
            return str(value)
    return None


def _classify(err: grpc.aio.AioRpcError) -> str:
    return _label(err.code(), err.details() or "", _trailer(err.trailing_metadata()))


def _one_line(err: grpc.aio.AioRpcError, *, connecting: bool = False) -> str:
    details = (err.details() or "").strip().splitlines()
    line = f"{err.code().name}: {details[0] if details else 'no details'}"
    if connecting and _classify(err) == "tls":
        line += (
            " (TLS handshake refused: is this agent's certificate signed by the principal's CA,"
            " unexpired, and does the principal's certificate name this endpoint?)"
        )
    return line


class Agent:
    """One agent instance; several can share a process (the fleet simulator does)."""

    def __init__(
        self,
        settings: settings_.AgentSettings,
        *,
        registry: prom.CollectorRegistry | None = None,
        dial_gate: asyncio.Semaphore | None = None,
    ) -> None:
        # Agents sharing a process (a fleet) share a gate that bounds concurrent dials:
        # a thousand TLS handshakes at once starve each other past any timeout.
        self._dial_gate: contextlib.AbstractAsyncContextManager[Any] = (
            dial_gate if dial_gate is not None else contextlib.nullcontext()
        )
        self.settings = settings
        self.registry = registry or prom.CollectorRegistry()
        self.metrics = metrics_.AgentMetrics(
            self.registry, agent=settings.name, tls_dir=settings.tls_dir
        )
        self.store = localstore.open_local_store(
            settings.store_url, mode=settings.mode, agent=settings.name
        )
        self.endpoints = endpoints_.EndpointSet(
            settings.endpoints, cooldown=settings.endpoint_cooldown
        )
        self.creds = credentials.channel_credentials(settings.tls_dir)
        self.welcomed = asyncio.Event()  # set while a session is open and resynced
        self.session_id = ""
        self.replica_id = ""
        self.epoch = 0
        self._lost_at: float | None = None
        self.sessions_opened = 0  # welcomes received (the fleet reports it without a scrape)
        self.failovers: list[tuple[float, float]] = []  # (lost at, seconds to resynced), monotonic
        self._stop = asyncio.Event()
        self._sweeps_failed = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._last_endpoint = ""  # where the last session was welcomed
        self.standby = ""  # where that replica said to go first if it stops answering
        self._store_error: str | None = None
        self._store_checked = False

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ health
    def readiness(self) -> tuple[bool, str]:
        """Ready while the local store answers (checked every STORE_CHECK_SECONDS); the
        session is reported but never decides: an unreachable hub is an edge's normal
        weather, and restarting or unreadying the agent would not bring it back."""
        session = (
            f"session open with replica {self.replica_id}"
            if self.welcomed.is_set()
            else "no session with the hub"
        )
        if self._store_error is not None:
            return False, f"local store not answering: {self._store_error}; {session}"
        if not self._store_checked:
            return False, f"local store not checked yet; {session}"
        return True, f"local store ok; {session}"

    async def _check_store(self) -> None:
        while True:
            try:
                async with asyncio.timeout(STORE_CHECK_SECONDS):
                    await self.store.data_version()
                self._store_error = None
            except Exception as err:  # any failure means "not answering"; said in the reason
                self._store_error = str(err).splitlines()[0] if str(err) else type(err).__name__
            self._store_checked = True
            await self._sleep(STORE_CHECK_SECONDS)

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Keep a session with the owner until stop(); never raises for network faults."""
        checker = asyncio.create_task(self._check_store(), name=f"{self.settings.name}:store-check")
        try:
            while not self._stop.is_set():
                retrying = tenacity.AsyncRetrying(
                    retry=tenacity.retry_if_exception_type(SweepFailed),
                    wait=tenacity.wait_random_exponential(
                        multiplier=self.settings.backoff_base, max=self.settings.backoff_cap
                    ),
                    sleep=self._sleep,
                    reraise=True,
                )
                try:
                    async for attempt in retrying:
                        with attempt:
                            await self._sweep()
                except (_Stopped, asyncio.CancelledError):
                    raise
                except Exception:
                    # A bug must not end the agent (nor a fleet's other agents): log it
                    # whole, rest, and start over with a fresh session and resync.
                    self.metrics.connect_errors.labels("internal").inc()
                    logger.exception(
                        "agent %s: session loop failed; restarting",
                        self.settings.name,
                        extra=logfields.of(agent=self.settings.name, reason="internal"),
                    )
                    self.welcomed.clear()
                    self.metrics.connected.set(0)
                    await self._sleep(self.settings.backoff_cap)
        except _Stopped:
            pass
        finally:
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Stopped):
                await checker
            self.metrics.connected.set(0)
            for target in list(self._channels):
                await self._drop_channel(target)
            await self.store.close()

    async def _sleep(self, seconds: float) -> None:
        """Interruptible backoff: stop() wakes it at once."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()
        if self._stop.is_set():
            raise _Stopped()

    async def _sweep(self) -> None:
        """Try every endpoint once (owner first), following redirects; raise if all fail.

        When the owner a replica redirects us to cannot be reached (it failed just
        now, or is cooling down after a failure), go back to that replica and say so:
        it may serve us as a stand-in if it can take our session entry.
        """
        failures: list[str] = []
        if self.endpoints.refresh_due() or (self.endpoints.names and self._sweeps_failed):
            await self.endpoints.refresh()
        suspect = ""  # our last replica, once it has refused a redial: say so to the others
        if self._last_endpoint and self.replica_id and self.endpoints.cooling(self._last_endpoint):
            suspect = self.replica_id  # it just failed us: no redial, say so at once
        for address in self._order():
            target, hops = address, 0
            via, owner_id, unreachable = "", "", suspect
            while True:
                if self._stop.is_set():
                    raise _Stopped()
                try:
                    outcome = await self._session(target, hops=hops, unreachable=unreachable)
                except ConnectFailed as err:
                    self.metrics.connect_errors.labels(err.reason).inc()
                    logger.warning(
                        "agent %s: cannot open a session on %s: %s",
                        self.settings.name,
                        target,
                        err,
                        extra=logfields.of(
                            agent=self.settings.name, endpoint=target, reason=err.reason
                        ),
                    )
                    failures.append(f"{target}: {err}")
                    if err.answered and err.reason == "busy":
                        break  # reachable, just not ready for us yet: no cooldown
                    self.endpoints.failed(target, timed_out=err.reason == "timeout")
                    if target == self._last_endpoint and not err.answered and self.replica_id:
                        suspect = self.replica_id
                    if via and owner_id and not unreachable and not err.answered:
                        target, unreachable = via, owner_id  # the owner is unreachable
                        continue
                    break
                if isinstance(outcome, _Redirected):
                    self.metrics.redirects.inc()
                    if not outcome.endpoint:  # nowhere named: sweep on instead of dialing ""
                        failures.append(f"{target}: redirected without an endpoint")
                        break
                    hops += 1
                    if hops > self.settings.max_redirects:
                        failures.append(
                            f"{target}: more than {self.settings.max_redirects} redirects"
                        )
                        break
                    if (
                        self.endpoints.black_holed(outcome.endpoint)
                        and not unreachable
                        and outcome.owner_id
                    ):
                        unreachable = outcome.owner_id  # ask the same replica to stand in
                        continue
                    via, owner_id = target, outcome.owner_id
                    self.endpoints.prefer(outcome.endpoint)
                    target = outcome.endpoint
                    continue
                if outcome.lasted < 1.0:
                    failures.append(
                        f"{target}: session ended after {outcome.lasted:.2f}s ({outcome.reason})"
                    )
                    self.endpoints.failed(target)
                    break
                if outcome.silent:  # a black hole: dialing it first again would hang
                    self.endpoints.failed(target, timed_out=True)
                self._sweeps_failed = 0
                return  # a real session ended: reconnect at once
        self._sweeps_failed += 1
        raise SweepFailed("; ".join(failures) or "no endpoint")

    def _order(self) -> list[str]:
        """This sweep's endpoints: the last owner, then the standby it named, then the rest."""
        order = self.endpoints.sweep()
        standby = self.standby
        if standby and not self.endpoints.cooling(standby):
            if standby in order:
                order.remove(standby)
            first = 1 if order and order[0] == self._last_endpoint else 0
            order.insert(first, standby)
        return order

    # ------------------------------------------------------------------ one session
    async def _hello(self, hops: int, unreachable: str = "") -> pb.Envelope:
        inventory = []
        if self.settings.mode == "managed":
            for row in await self.store.rows():
                inventory.append(
                    pb.InventoryItem(
                        key=pb.ResourceKey(kind=codec.kind_from_name(row.kind), name=row.name),
                        version=row.version,
                        checksum=row.checksum,
                        status_checksum=row.status_checksum,
                    )
                )
        return pb.Envelope(
            seq=1,
            hello=pb.Hello(
                agent_name=self.settings.name,
                mode=MODES[self.settings.mode],
                agent_version=metrics_.VERSION,
                min_protocol=codec.PROTOCOL_MIN,
                max_protocol=codec.PROTOCOL_MAX,
                inventory=inventory,
                known_epoch=self.epoch,
                redirect_hops=hops,
                unreachable_owner=unreachable,
            ),
        )

    async def _session(
        self, target: str, *, hops: int, unreachable: str = ""
    ) -> _Redirected | _Ended:
        started = time.monotonic()
        async with self._channel(target) as channel:
            call = channel.stream_stream(
                codec.SUBSCRIBE_METHOD,
                request_serializer=pb.Envelope.SerializeToString,
                response_deserializer=pb.Envelope.FromString,
            )()
            try:
                async with self._dial_gate, asyncio.timeout(self.settings.connect_timeout):
                    await call.write(await self._hello(hops, unreachable))
                    first = await call.read()
            except TimeoutError:
                call.cancel()
                raise ConnectFailed(
                    f"no welcome within {self.settings.connect_timeout:.1f}s", reason="timeout"
                ) from None
            except asyncio.InvalidStateError:  # the call ended under our write
                code = await call.code()
                raise ConnectFailed(
                    f"{code.name}: stream ended while dialling", reason="unavailable"
                ) from None
            except grpc.aio.AioRpcError as err:
                raise ConnectFailed(
                    _one_line(err, connecting=True),
                    reason=_classify(err),
                    answered=_trailer(err.trailing_metadata()) is not None,
                ) from None
            if first is grpc.aio.EOF:
                code, details = await call.code(), await call.details() or ""
                trailer = _trailer(await call.trailing_metadata())
                raise ConnectFailed(
                    f"{code.name}: {details}",
                    reason=_label(code, details, trailer),
                    answered=trailer is not None,
                )
            body = first.WhichOneof("body")
            if body == "redirect":
                self.epoch = max(self.epoch, first.redirect.epoch)
                call.cancel()
                logger.info(
                    "agent %s: redirected by %s to %s (epoch %d)",
                    self.settings.name,
                    target,
                    first.redirect.owner_endpoint,
                    first.redirect.epoch,
                    extra=logfields.of(
                        agent=self.settings.name,
                        replica=first.redirect.owner_replica_id or None,
                        epoch=first.redirect.epoch,
                        endpoint=first.redirect.owner_endpoint,
                        reason="redirect",
                    ),
                )
                return _Redirected(
                    first.redirect.owner_endpoint,
                    first.redirect.epoch,
                    first.redirect.owner_replica_id,
                )
            if body != "welcome":
                call.cancel()
                raise ConnectFailed(f"expected welcome, got {body}", reason="protocol")
            welcome = first.welcome
            self.endpoints.succeeded(target)
            self.endpoints.prefer(target)
            self._last_endpoint = target
            self.standby = welcome.standby_endpoint
            self.session_id, self.replica_id, self.epoch = (
                welcome.session_id,
                welcome.replica_id,
                welcome.epoch,
            )
            self.sessions_opened += 1
            self.metrics.sessions.inc()
            self.metrics.events_received.labels("welcome").inc()
            fields = logfields.of(
                agent=self.settings.name,
                replica=welcome.replica_id,
                session=welcome.session_id,
                epoch=welcome.epoch,
                endpoint=target,
            )
            logger.info(
                "agent %s: session %s with replica %s on %s",
                self.settings.name,
                welcome.session_id,
                welcome.replica_id,
                target,
                extra=fields,
            )
            live = _Live(self, call, welcome=welcome, started=started)
            reason = await live.run()
            self.welcomed.clear()
            self.metrics.connected.set(0)
            self._lost_at = time.monotonic()
            if isinstance(reason, _Redirected):
                return reason
            logger.info(
                "agent %s: session %s ended: %s",
                self.settings.name,
                welcome.session_id,
                reason,
                extra=fields,
            )
            if live.silent or reason.startswith(("UNAVAILABLE", "stream ended")):
                await self._drop_channel(target)  # the connection itself is gone
            return _Ended(reason, time.monotonic() - started, silent=live.silent)

    @contextlib.asynccontextmanager
    async def _channel(self, target: str) -> AsyncIterator[Any]:
        """A long-lived channel per endpoint: redirects and reconnects to a replica we
        already talk to reuse its TLS connection. A transport failure drops it."""
        channel = self._channels.get(target)
        if channel is None:
            options = channel_options(self.settings)
            server_name = self.endpoints.server_name(target)
            if server_name:  # an address resolved from a DNS name: verify the name
                options.append(("grpc.ssl_target_name_override", server_name))
            channel = grpc.aio.secure_channel(target, self.creds, options=options)
            self._channels[target] = channel
        try:
            yield channel
        except ConnectFailed as err:
            if not err.answered:
                await self._drop_channel(target)
            raise
        except BaseException:
            await self._drop_channel(target)
            raise

    async def _drop_channel(self, target: str) -> None:
        channel = self._channels.pop(target, None)
        if channel is not None:
            await channel.close()

    def _resynced(self, started: float) -> None:
        now = time.monotonic()
        self.metrics.resync_seconds.observe(now - started)
        if self._lost_at is not None:
            self.metrics.failover_seconds.observe(now - self._lost_at)
            self.failovers.append((self._lost_at, now - self._lost_at))
            self._lost_at = None
        self.metrics.connected.set(1)
        self.welcomed.set()


class _Stopped(Exception):
    pass


class _SessionOver(Exception):
    def __init__(self, outcome: str | _Redirected) -> None:
        super().__init__(str(outcome))
        self.outcome = outcome


class _Live:
    """The running part of one session: reader, writer, local-change pusher, heartbeats."""

    def __init__(self, agent: Agent, call: Any, *, welcome: pb.Welcome, started: float) -> None:
        self.agent = agent
        self.store = agent.store
        self.metrics = agent.metrics
        self.call = call
        self.started = started
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
        self.last_received = time.monotonic()
        self.silent = False  # set when the heartbeat timeout ends the session
        self.wake = asyncio.Event()

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

    async def run(self) -> str | _Redirected:
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
                if isinstance(err, _Stopped):
                    raise err
            for err in errors:
                if isinstance(err, _SessionOver):
                    return err.outcome
            for err in errors:
                if isinstance(err, grpc.aio.AioRpcError):
                    return _one_line(err)
                if isinstance(err, asyncio.InvalidStateError):  # a write raced the call's end
                    return "stream ended while sending"
            for err in errors:
                if err is not None:
                    raise err
            return "session ended"
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
        raise _Stopped()

    async def _writer(self) -> None:
        while True:
            envelope = await self.outbox.get()
            await self.call.write(envelope)
            self.metrics.events_sent.labels(envelope.WhichOneof("body") or "unknown").inc()

    async def _heartbeat(self) -> None:
        timeout = self.interval * self.agent.settings.heartbeat_timeout_factor
        while True:
            await asyncio.sleep(self.interval)
            silent = time.monotonic() - self.last_received
            if silent > timeout:
                self.silent = True
                raise _SessionOver(
                    f"heartbeat timeout: nothing from the principal for {silent:.1f}s"
                )
            self.send(pb.Envelope(heartbeat=pb.Heartbeat(sent_unix_ms=int(time.time() * 1000))))

    async def _reader(self) -> None:
        while True:
            envelope = await self.call.read()
            if envelope is grpc.aio.EOF:
                code = await self.call.code()
                details = await self.call.details()
                raise _SessionOver(
                    f"stream closed by the principal ({code.name}: {details or 'no details'})"
                )
            self.last_received = time.monotonic()
            body = envelope.WhichOneof("body")
            self.metrics.events_received.labels(body or "unknown").inc()
            if body == "event":
                await self._apply(envelope)
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
                await self._answer_resync(envelope.resync_request)
                self.resyncing = False
                if first:
                    self.agent._resynced(self.started)
            elif body == "redirect":
                self.agent.epoch = max(self.agent.epoch, envelope.redirect.epoch)
                raise _SessionOver(
                    _Redirected(
                        envelope.redirect.owner_endpoint,
                        envelope.redirect.epoch,
                        envelope.redirect.owner_replica_id,
                    )
                )
            elif body == "goodbye":
                raise _SessionOver(f"principal said goodbye: {envelope.goodbye.reason}")

    # --- managed ---------------------------------------------------------------------
    async def _apply(self, envelope: pb.Envelope) -> None:
        event = envelope.event
        kind = codec.KIND_NAMES.get(event.key.kind)
        error = ""
        changed = False
        if kind is None or not event.key.name:
            error = "resource event without a valid key"
        elif self.agent.settings.mode != "managed":
            error = "autonomous agents do not take desired state from the principal"
        else:
            try:
                if event.operation == pb.OPERATION_DELETE:
                    changed = await self.store.apply_remote_delete(
                        kind, event.key.name, version=event.version, force=self.resyncing
                    )
                else:
                    changed = await self.store.apply_remote_upsert(
                        kind,
                        event.key.name,
                        obj=objects.load_json(event.object_json, what=f"{kind} {event.key.name}"),
                        version=event.version,
                        checksum=event.checksum,
                        force=self.resyncing,
                    )
            except objects.InvalidObjectError as err:
                error = str(err)
            except store_.LocalStoreError as err:
                # Refused by the local store (the workload apiserver's schema or RBAC, an
                # object Mooring did not create): acknowledged as an error, counted, logged
                # once; the principal sends it again only when it changes or on a resync.
                error = str(err)
                self.metrics.apply_errors.inc()
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

    # --- autonomous ------------------------------------------------------------------
    def _event_for(self, row: store_.LocalResource) -> pb.Envelope:
        key = pb.ResourceKey(kind=codec.kind_from_name(row.kind), name=row.name)
        if row.deleted:
            return pb.Envelope(
                event=pb.ResourceEvent(key=key, operation=pb.OPERATION_DELETE, version=row.version)
            )
        doc: dict[str, Any] = dict(row.object)
        if row.status is not None:
            doc["status"] = row.status
        return pb.Envelope(
            event=pb.ResourceEvent(
                key=key,
                operation=pb.OPERATION_UPSERT,
                version=row.version,
                checksum=row.checksum,
                object_json=codec.canonical_json(doc),
            )
        )

    def _push_row(self, row: store_.LocalResource) -> None:
        seq = self.send(self._event_for(row))
        operation = logfields.DELETE if row.deleted else logfields.UPSERT
        self.pending[seq] = ("event", row.kind, row.name, row.version, operation)
        self.inflight[(row.kind, row.name)] = row.version

    async def _answer_resync(self, request: pb.ResyncRequest) -> None:
        theirs = {(codec.KIND_NAMES.get(i.key.kind, ""), i.key.name): i for i in request.inventory}
        sent = 0
        for row in await self.store.rows(include_deleted=True):
            item = theirs.pop((row.kind, row.name), None)
            if row.deleted:
                if item is None:
                    await self.store.mark_synced(row.kind, row.name, row.version)
                else:
                    self._push_row(row)
                    sent += 1
            elif (
                item is None
                or item.checksum != row.checksum
                or item.status_checksum != row.status_checksum
            ):
                self._push_row(row)
                sent += 1
            else:
                if row.synced_version < row.version:  # sent before, its ack lost with a session
                    self._sent(row.kind, row.name, row.version, logfields.UPSERT)
                await self.store.mark_synced(row.kind, row.name, row.version)
        for (kind, name), item in theirs.items():
            if not kind:
                continue
            key = pb.ResourceKey(kind=item.key.kind, name=name)
            self.send(
                pb.Envelope(
                    event=pb.ResourceEvent(
                        key=key, operation=pb.OPERATION_DELETE, version=item.version
                    )
                )
            )
            sent += 1
        self.metrics.resync_events.inc(sent)
        self.send(pb.Envelope(resync_done=pb.ResyncDone(sent=sent)))

    def _sent(self, kind: str, name: str, version: int, operation: str) -> None:
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
                    raise _SessionOver(f"local drift: {drift}")
            else:
                interval = min(interval * 1.5, self.agent.settings.poll_interval_max)
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self.wake.wait()

    async def _push_local(self) -> None:
        for row in await self.store.unsynced():
            key = (row.kind, row.name)
            if self.agent.settings.mode == "autonomous":
                if self.inflight.get(key) == row.version:
                    continue
                self._push_row(row)
            else:
                if self.inflight.get(key) == row.status_checksum:
                    continue
                seq = self.send(
                    pb.Envelope(
                        status=pb.StatusUpdate(
                            key=pb.ResourceKey(kind=codec.kind_from_name(row.kind), name=row.name),
                            version=row.version,
                            status_json=codec.canonical_json(row.status),
                            status_checksum=row.status_checksum,
                        )
                    )
                )
                self.pending[seq] = ("status", row.kind, row.name, row.status_checksum, "")
                self.inflight[key] = row.status_checksum

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
            self._sent(kind, name, marker, operation)
        else:
            assert isinstance(marker, str)
            await self.store.mark_status_synced(kind, name, marker)
        if self.inflight.get((kind, name)) == marker:
            del self.inflight[(kind, name)]
        self.wake.set()
