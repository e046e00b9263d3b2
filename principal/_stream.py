"""The Subscribe handler: one agent's stream on this replica, from hello to release.

A stream is read, admitted (`principal._handshake`), placed (served here, redirected,
or served as a stand-in), held (the session registry's entry), welcomed, then run: one
writer (this coroutine), one reader task, the mode's strategy task
(`principal._managed` or `principal._autonomous`) and a heartbeat timer. The first of
them to fail ends the session; the entry is released whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from principal import _admission as admission_
from principal import _autonomous as autonomous
from principal import _deliveries as deliveries_
from principal import _dispatch as dispatch
from principal import _handshake as handshake
from principal import _history as history
from principal import _holds as holds
from principal import _hub as hub
from principal import _live as live_
from principal import _managed as managed
from principal import _metrics as metrics
from principal import _ownership as ownership
from principal import _registry as registry
from principal import _revocations as revocations_
from principal import _sync as sync
from principal._session import (
    CloseReason,
    Rejection,
    RejectReason,
    Session,
    SessionManager,
    SessionSettings,
    store_unavailable,
)
from proto import codec, credentials, logfields, pb

__all__ = ["STRATEGIES", "StreamHandler"]

T = TypeVar("T")
logger = logging.getLogger(__name__)

# The one place a session's mode is looked at: which sync it runs.
STRATEGIES: dict[hub.Mode, Callable[..., sync.Strategy]] = {
    "managed": managed.ManagedSync,
    "autonomous": autonomous.AutonomousSync,
}


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
        deliveries: deliveries_.DeliveryLog | None = None,
        revocations: revocations_.Revocations | None = None,
        auto_register: bool = False,
        admission: admission_.Admission | None = None,
    ) -> None:
        self.admission = admission or admission_.Admission(admission_.AdmissionSettings())
        self.holder = holder or holds.LocalHolds(replica_id)
        self.revocations = revocations  # None: no revocation list (tests)
        # Register an unknown agent at its first hello (else it is refused: not_registered).
        self.auto_register = auto_register
        self.deliveries = deliveries  # where acks are noted for `mooring app list`
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
        auth = context.auth_context()
        agent = credentials.identity_from_auth_context(auth)
        try:
            if agent is None:
                raise Rejection(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "client certificate names no agent (CN or spiffe://mooring/agent/NAME)",
                    reason=RejectReason.NO_IDENTITY,
                )
            certificate = credentials.certificate_id_from_auth_context(auth)
            self._check_revoked(certificate)
            set_up = self.admission.enter(agent)  # until the welcome (or the refusal)
            try:
                await self._serve(agent, context, certificate, set_up=set_up)
            finally:
                set_up()
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
            trailers: list[tuple[str, str]] = [(codec.REJECTED_TRAILER, rej.reason)]
            if rej.retry_after is not None:
                trailers.append((codec.RETRY_AFTER_TRAILER, str(int(rej.retry_after * 1000))))
            await context.abort(rej.code, rej.message, trailing_metadata=tuple(trailers))

    async def read(
        self, context: grpc.aio.ServicerContext, *, limit: float | None
    ) -> pb.Envelope | None:
        """Next envelope from the agent, None at end of stream; Rejection on bad input."""
        async with asyncio.timeout(limit):
            msg = await context.read()
        if msg is grpc.aio.EOF:
            return None
        envelope = handshake.check_envelope(msg)
        self.metrics.events_received.labels(envelope.WhichOneof("body")).inc()
        return envelope

    def _check_revoked(self, certificate: credentials.CertificateId | None) -> None:
        """Rejection `revoked` when the revocation list names the peer's certificate."""
        refused = self.revocations.refused(certificate) if self.revocations else None
        if refused is not None:
            reason = RejectReason.REVOKED if certificate is not None else RejectReason.NO_IDENTITY
            raise Rejection(grpc.StatusCode.UNAUTHENTICATED, refused, reason=reason)

    async def _check_registered(self, agent: str, mode: hub.Mode) -> None:
        """Without auto-registration: Rejection unless `agent` is registered in `mode`."""
        if self.auto_register:
            return  # registered (or refused for its mode) once it is ours, below
        try:
            record = await self.desired.get_agent(agent, cached=True)
        except hub.StoreError as err:
            self.metrics.store_errors.inc()
            raise store_unavailable(err) from err
        handshake.check_registration(agent, mode, record)

    async def _register(self, agent: str, mode: hub.Mode) -> None:
        """With auto-registration: register the agent (once ours), refusing a mode change."""
        try:
            await self.desired.register_agent(agent, mode=mode)
        except hub.ModeConflictError as err:
            raise Rejection(
                grpc.StatusCode.FAILED_PRECONDITION, str(err), reason=RejectReason.MODE_CONFLICT
            ) from err
        except hub.StoreError as err:
            self.metrics.store_errors.inc()
            raise store_unavailable(err) from err

    async def _place(self, agent: str, hello: pb.Hello) -> handshake.Placement:
        route = self.routing.route(agent)
        if not route.serve and hello.known_epoch > route.epoch:
            # The agent was sent here under a map we have not applied yet (a replica
            # that just started or rejoined): wait for it rather than redirect under the
            # old one, which sends the agent back and forth, then to a stand-in.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.catch_up_timeout):
                    await self.routing.catch_up(hello.known_epoch)
                route = self.routing.route(agent)
        placed = handshake.place(
            route,
            hello,
            standin=lambda owner: self.routing.standin(agent, unreachable=owner),
            shared_holds=self.holder.shared,
        )
        if placed.standin_for:
            logger.warning(
                "agent %s cannot reach its owner %s: serving it as a stand-in",
                agent,
                placed.standin_for,
                extra=logfields.of(agent=agent, replica=self.replica_id, reason="standin"),
            )
            self.metrics.standins.inc()
        return placed

    async def _hold(self, agent: str, session_id: str, placed: handshake.Placement) -> int:
        """The session registry's entry for `agent`: its fencing token, or Rejection."""
        try:
            return await self.holder.acquire(
                agent,
                session=session_id,
                epoch=placed.route.epoch,
                unreachable=placed.standin_for,
            )
        except holds.HeldElsewhere as err:
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE, str(err), reason=RejectReason.HELD
            ) from err
        except registry.RegistryError as err:
            self.metrics.registry_errors.inc()
            raise Rejection(
                grpc.StatusCode.UNAVAILABLE,
                f"session registry unavailable: {err}",
                reason=RejectReason.REGISTRY,
            ) from err

    async def _serve(
        self,
        agent: str,
        context: grpc.aio.ServicerContext,
        certificate: credentials.CertificateId | None = None,
        *,
        set_up: Callable[[], None] = lambda: None,
    ) -> None:
        """One stream; `set_up()` is called once it no longer counts as being set up."""
        started = time.monotonic()
        try:
            first = await self.read(context, limit=self.settings.hello_timeout)
        except TimeoutError as err:
            raise Rejection(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "no hello within the hello timeout",
                reason=RejectReason.NO_HELLO,
            ) from err
        if first is None:
            return
        admitted = handshake.admit(agent, first)
        del first
        await self._check_registered(agent, admitted.mode)
        placed = await self._place(agent, admitted.hello)
        route = placed.route
        if not route.serve:
            self.metrics.redirects.inc()
            self.metrics.events_sent.labels("redirect").inc()
            await context.write(ownership.redirect(route, reason="not the owner"))
            return
        if self.auto_register:
            await self._register(agent, admitted.mode)
        session_id = uuid.uuid4().hex
        token = await self._hold(agent, session_id, placed)
        session = Session(
            agent=agent,
            mode=admitted.mode,
            session_id=session_id,
            epoch=route.epoch,
            token=token,
            standin_for=placed.standin_for,
            certificate=certificate,
        )
        self.sessions.open(session)
        if self.revocations is not None:  # revoked meanwhile: the list's sweep missed it
            self.revocations.close_if_revoked(session)
        # The map may have changed while we registered and acquired: from here on the
        # handoff loop sees this session; before, only this re-check does.
        now = self.routing.route(agent)
        if not now.serve and now.owner_endpoint and now.owner_id != route.owner_id:
            session.close(
                CloseReason.MOVED,
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
            admitted.mode,
            admitted.protocol,
            route.epoch,
            token,
            extra=logfields.of(
                agent=agent,
                replica=self.replica_id,
                session=session_id,
                epoch=route.epoch,
                mode=admitted.mode,
                fencing_token=token,
            ),
        )
        try:
            # Whom the agent should try first if we fail (stand-ins need shared holds).
            # Named under the map we hold now, after any wait for the entry: from here
            # on every map change re-advises it (the session is registered above).
            if self.holder.shared:
                session.standby = self.routing.successor(agent, standin_for=placed.standin_for)
            link = live_.Live(self, session)
            await link.write(
                context,
                pb.Envelope(
                    welcome=pb.Welcome(
                        replica_id=self.replica_id,
                        epoch=route.epoch,
                        session_id=session.session_id,
                        protocol=admitted.protocol,
                        heartbeat_interval_ms=int(self.settings.heartbeat_interval * 1000),
                        max_message_bytes=self.settings.max_message_bytes,
                        standby_endpoint=session.standby,
                    )
                ),
            )
            set_up()
            # Only the managed resync reads the hello (its inventory): hand it over in a
            # box that it empties, so no frame keeps it (~1.5 KB) for the whole session.
            box = [admitted.hello]
            del admitted
            strategy = STRATEGIES[session.mode](link, box, started=started)
            await link.run(context, strategy)
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
