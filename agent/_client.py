"""The agent's session loop: dial, hello, resync, then live sync; reconnect forever.

Reconnects sweep every endpoint before backing off (`agent._backoff`: full-jitter
exponential, capped), over one cached channel per endpoint (`agent._dialing`). Every
session starts with the resync handshake, so a session lost at any point loses nothing:
what was not acknowledged is found again by the next resync's inventory comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from typing import Any

import grpc
import prometheus_client as prom

from agent import _backoff as backoff
from agent import _dialing as dialing
from agent import _endpoints as endpoints_
from agent import _link as link_
from agent import _live as live_
from agent import _localstore as localstore
from agent import _metrics as metrics_
from agent import _outcome as outcome_
from agent import _refusals as refusals
from agent import _settings as settings_
from agent import _sides as sides
from agent import _storecheck as storecheck
from agent import _sweep as sweep_
from proto import codec, credentials, logfields, pb

__all__ = ["Agent"]

logger = logging.getLogger(__name__)

MODES = {"managed": pb.MODE_MANAGED, "autonomous": pb.MODE_AUTONOMOUS}


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
        self.creds = credentials.ReloadingCredentials(
            settings.tls_dir, on_failure=self.metrics.certificate_reload_failures.inc
        )
        self.link = link_.Link.IDLE  # the connection's state (agent._link's table)
        self.welcomed = asyncio.Event()  # set while the link is LIVE (open and resynced)
        self.session_id = ""
        self.replica_id = ""
        self.epoch = 0
        self._lost_at: float | None = None
        self.sessions_opened = 0  # welcomes received (the fleet reports it without a scrape)
        self.failovers: list[tuple[float, float]] = []  # (lost at, seconds to resynced), monotonic
        self._stop = asyncio.Event()
        self._sleep = functools.partial(backoff.sleep, stop=self._stop)  # stop() wakes it
        self._wait = backoff.wait(
            base=settings.backoff_base,
            cap=settings.backoff_cap,
            refused_interval=settings.refused_retry_interval,
        )
        self._sweeps_failed = 0
        self._channels = dialing.Channels(
            self.creds,
            options=dialing.channel_options(settings),
            server_name=self.endpoints.server_name,
        )
        self._last_endpoint = ""  # where the last session was welcomed
        self.standby = ""  # where that replica said to go first if it stops answering
        self._store_check = storecheck.StoreCheck(
            lambda: self.store.data_version(), sleep=self._sleep
        )
        self._refusal = refusals.Refusal(
            self.metrics.refused,
            agent=settings.name,
            mode=settings.mode,
            interval=settings.refused_retry_interval,
        )

    @property
    def refused(self) -> str | None:
        """The refusal no retry cures (a reason of `refusals.FIXES`) that the hub last
        answered this agent with, until its next welcome; None when not refused."""
        return self._refusal.reason

    def stop(self) -> None:
        self._stop.set()

    def _on(self, event: link_.Event) -> None:
        """Move the link by `event` (agent._link's table); LIVE alone counts as connected."""
        state = link_.next_state(self.link, event)
        if state is self.link:
            return
        logger.debug(
            "agent %s: link %s -> %s (%s)",
            self.settings.name,
            self.link,
            state,
            event,
            extra=logfields.of(agent=self.settings.name, reason=str(event)),
        )
        self.metrics.link_state.labels(str(self.link)).set(0)
        self.metrics.link_state.labels(str(state)).set(1)
        self.link = state
        live = state is link_.Link.LIVE
        self.metrics.connected.set(1 if live else 0)
        if live:
            self.welcomed.set()
        else:
            self.welcomed.clear()

    # ------------------------------------------------------------------ health
    def readiness(self) -> tuple[bool, str]:
        """Ready while the local store answers (`agent._storecheck`); the session is
        reported but never decides: an unreachable hub is an edge's normal weather, and
        restarting or unreadying the agent would not bring it back."""
        session = (
            f"session open with replica {self.replica_id}"
            if self.welcomed.is_set()
            else "no session with the hub"
        )
        ready, store = self._store_check.status()
        return ready, f"{store}; {session}"

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Keep a session with the owner until stop(); never raises for network faults."""
        checker = asyncio.create_task(
            self._store_check.run(), name=f"{self.settings.name}:store-check"
        )
        try:
            while not self._stop.is_set():
                retrying = backoff.retrying(self._wait, sleep=self._sleep)
                try:
                    async for attempt in retrying:
                        with attempt:
                            await self._sweep()
                except (outcome_.Stopped, asyncio.CancelledError):
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
                    self._on(link_.Event.FAILED)
                    await self._sleep(self.settings.backoff_cap)
        except outcome_.Stopped:
            pass
        finally:
            self._on(link_.Event.STOP)
            checker.cancel()
            with contextlib.suppress(asyncio.CancelledError, outcome_.Stopped):
                await checker
            await self._channels.close()
            await self.store.close()

    async def _sweep(self) -> None:
        """Try every endpoint once (owner first), following redirects; raise if all fail.

        When the owner a replica redirects us to cannot be reached (it failed just
        now, or is cooling down after a failure), go back to that replica and say so:
        it may serve us as a stand-in if it can take our session entry.
        """
        self._on(link_.Event.SWEEP)
        failures: list[str] = []
        refused = False  # a replica refused us for good: the next sweep waits long
        retry_after: float | None = None  # the longest wait a replica asked for
        if self.endpoints.refresh_due() or (self.endpoints.names and self._sweeps_failed):
            await self.endpoints.refresh()
        suspect = ""  # our last replica, once it has refused a redial: say so to the others
        if self._last_endpoint and self.replica_id and self.endpoints.cooling(self._last_endpoint):
            suspect = self.replica_id  # it just failed us: no redial, say so at once
        for address in self._order():
            attempt = sweep_.Attempt(address, unreachable=suspect)
            while True:
                if self._stop.is_set():
                    raise outcome_.Stopped()
                target = attempt.target
                try:
                    outcome: (
                        sweep_.Failed | outcome_.Redirected | outcome_.Ended
                    ) = await self._session(
                        target, hops=attempt.hops, unreachable=attempt.unreachable
                    )
                except outcome_.ConnectFailed as err:
                    refused |= self._connect_failed(target, err)
                    if err.retry_after is not None:
                        retry_after = max(retry_after or 0.0, err.retry_after)
                    outcome = sweep_.Failed(err.reason, str(err), answered=err.answered)
                if isinstance(outcome, outcome_.Redirected):
                    self.metrics.redirects.inc()
                step = sweep_.next_step(
                    attempt,
                    outcome,
                    max_redirects=self.settings.max_redirects,
                    black_holed=isinstance(outcome, outcome_.Redirected)
                    and self.endpoints.black_holed(outcome.endpoint),
                )
                if step.cooldown is not sweep_.Cooldown.NONE:
                    self.endpoints.failed(
                        target, timed_out=step.cooldown is sweep_.Cooldown.TIMED_OUT
                    )
                if step.suspect and target == self._last_endpoint and self.replica_id:
                    suspect = self.replica_id
                if step.prefer:
                    self.endpoints.prefer(step.prefer)
                if step.failure:
                    failures.append(step.failure)
                if step.served:
                    self._sweeps_failed = 0
                    return  # a real session ended: reconnect at once
                if step.then is None:
                    break
                attempt = step.then
        self._sweeps_failed += 1
        self._on(link_.Event.REFUSED if refused else link_.Event.NO_REPLICA)
        raise backoff.SweepFailed(
            "; ".join(failures) or "no endpoint", refused=refused, retry_after=retry_after
        )

    def _connect_failed(self, target: str, err: outcome_.ConnectFailed) -> bool:
        """Count and log a failed dial; True when the refusal is one no retry cures."""
        self.metrics.connect_errors.labels(err.reason).inc()
        if refusals.permanent(err.refusal):
            self._refusal.refused(err.refusal, endpoint=target, error=str(err))
            return True
        logger.warning(
            "agent %s: cannot open a session on %s: %s",
            self.settings.name,
            target,
            err,
            extra=logfields.of(agent=self.settings.name, endpoint=target, reason=err.reason),
        )
        return False

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
        inventory = await sides.SIDES[self.settings.mode].inventory(self.store)
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
    ) -> outcome_.Redirected | outcome_.Ended:
        loop = asyncio.get_running_loop()
        started = loop.time()  # how long it lasted decides the sweep's next step
        async with self._channels.channel(target) as channel:
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
                raise outcome_.ConnectFailed(
                    f"no welcome within {self.settings.connect_timeout:.1f}s",
                    reason=outcome_.DialFailure.TIMEOUT,
                ) from None
            except asyncio.InvalidStateError:  # the call ended under our write
                code = await call.code()
                raise outcome_.ConnectFailed(
                    f"{code.name}: stream ended while dialling",
                    reason=outcome_.DialFailure.UNAVAILABLE,
                ) from None
            except grpc.aio.AioRpcError as err:
                raise outcome_.ConnectFailed.ended(
                    outcome_.one_line(err, connecting=True),
                    reason=outcome_.classify_error(err),
                    trailers=err.trailing_metadata(),
                ) from err
            if first is grpc.aio.EOF:
                code, details = await call.code(), await call.details() or ""
                trailers = await call.trailing_metadata()
                raise outcome_.ConnectFailed.ended(
                    f"{code.name}: {details}",
                    reason=outcome_.classify(code, details, outcome_.trailer(trailers)),
                    trailers=trailers,
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
                return outcome_.Redirected(
                    first.redirect.owner_endpoint,
                    first.redirect.epoch,
                    first.redirect.owner_replica_id,
                )
            if body != "welcome":
                call.cancel()
                raise outcome_.ConnectFailed(
                    f"expected welcome, got {body}", reason=outcome_.DialFailure.PROTOCOL
                )
            welcome = first.welcome
            self._on(link_.Event.WELCOMED)
            self._refusal.welcomed(endpoint=target)
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
            live = live_.Live(self, call, welcome=welcome, started=started)
            try:
                ended = await live.run()
            finally:  # cancelled (stop) included: not connected any more
                self._on(link_.Event.ENDED)
            self._lost_at = time.monotonic()
            if isinstance(ended, outcome_.Redirected):
                return ended
            logger.info(
                "agent %s: session %s ended: %s",
                self.settings.name,
                welcome.session_id,
                ended.reason,
                extra=fields,
            )
            if ended.end in outcome_.DROPS_CHANNEL:
                await self._channels.drop(target)  # the connection itself is gone
            return dataclasses.replace(ended, lasted=loop.time() - started)

    def _resynced(self, started: float) -> None:
        """The session that began at loop time `started` is resynced (said once a session:
        a later resync_done, after the hub asked again, changes nothing here)."""
        if self.link is not link_.Link.RESYNCING:
            return
        self.metrics.resync_seconds.observe(asyncio.get_running_loop().time() - started)
        # Failovers are on the monotonic clock: benches compare them across processes.
        now = time.monotonic()
        if self._lost_at is not None:
            self.metrics.failover_seconds.observe(now - self._lost_at)
            self.failovers.append((self._lost_at, now - self._lost_at))
            self._lost_at = None
        self._on(link_.Event.RESYNCED)
