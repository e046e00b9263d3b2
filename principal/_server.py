"""One principal replica assembled from its parts: stores, coordination, sessions, the
agents' port, probes and metrics; its supervised tasks, start, graceful stop, and `run`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Awaitable, Callable

import prometheus_client as prom

from election import cluster, lease, membership, stores
from principal import _admission as admission
from principal import _agentserver as agentserver
from principal import _binding as binding
from principal import _deliveries as deliveries_
from principal import _dispatch as dispatch
from principal import _history as history
from principal import _holds as holds
from principal import _hub as hub
from principal import _memberreport as memberreport
from principal import _metrics as metrics_
from principal import _ownership as ownership
from principal import _presence as presence
from principal import _probes as probes_
from principal import _registry as registry_
from principal import _revocations as revocations_
from principal import _session as session_
from principal import _settings as settings_
from principal import _sharding as sharding
from principal import _stream as stream
from principal import _supervise as supervise
from proto import credentials, exposition, limits, pb

__all__ = ["Replica", "run"]

logger = logging.getLogger(__name__)

RESTART, FATAL = supervise.Policy.RESTART, supervise.Policy.FATAL
POLICIES: dict[str, supervise.Policy] = {
    # What a replica does when one of its long-lived tasks fails unexpectedly (errors a
    # task expects, such as a store outage, it retries itself). A task that moves data
    # restarts in place, and the replica is not ready until it has. One that decides who
    # serves an agent, or whether this replica may serve at all, must not be down while
    # sessions go on: the replica fences itself and exits with status 3 for systemd or
    # Kubernetes to restart it, and its agents fail over meanwhile.
    "dispatch-watch": RESTART,  # changes to sessions; a restart resumes after the last one
    "revocations": FATAL,  # a replica that cannot follow revocations must serve nobody
    "coordinator": FATAL,  # election, member record, shard-map watch: the view it serves by
    "sharding": FATAL,  # ownership and redirects, and the self-fence without Redis
    "holds": FATAL,  # renews session entries, fences when liveness lapses (single holder)
    "presence": RESTART,  # last-seen times and agent counts, for metrics
    "serving": RESTART,  # the member record's serving flag and sessions report
    "deliveries": RESTART,  # writes what agents acknowledged (noted meanwhile in memory)
    "probes": RESTART,  # mirrors readiness() to the --health port
    "trim": RESTART,  # hands freed heap back to the system (RSS after a connection flood)
}


class Replica:
    """One principal replica's running parts; `start()` then `stop()` (idempotent)."""

    def __init__(
        self,
        settings: settings_.PrincipalSettings,
        *,
        registry: prom.CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry or prom.CollectorRegistry()
        self.metrics = metrics_.PrincipalMetrics(
            self.registry, replica_id=settings.replica_id, tls_dir=settings.tls_dir
        )
        self.desired = hub.open_hub_store(
            settings.desired_store, root=settings.store_root, timeout=settings.store_timeout
        )
        self.dispatcher = dispatch.Dispatcher(self.desired, on_error=self.metrics.store_errors.inc)
        self.sessions = session_.SessionManager(on_change=self.metrics.sessions_open.set)
        self.records = stores.open_store(
            settings.coordination,
            prefix=f"{settings.store_root}election/",
            timeout=settings.election.request_timeout,
            namespace=settings.namespace,
        )
        self.coordinator = cluster.Coordinator(
            self.records,
            replica_id=lease.ReplicaId(settings.replica_id),
            endpoint=settings.advertise,
            registry=self.registry,
            settings=settings.election,
            pid=os.getpid(),
            metrics_address=settings.metrics,
        )
        self.sharding = sharding.Sharding(
            replica_id=settings.replica_id,
            coordinator=self.coordinator,
            desired=self.desired,
            sessions=self.sessions,
            on_handoff=self.metrics.handoffs.inc,
            on_owned=self.metrics.agents_owned.set,
            standbys=bool(settings.redis),  # stand-ins need the shared Redis entries
            fence_without_membership=not settings.redis,  # Redis holds fence us instead
            on_store_error=self.metrics.store_errors.inc,
        )
        self.routing: ownership.Ownership = self.sharding
        self.holder: holds.LocalHolds | holds.RedisHolds
        if settings.redis:
            self.holder = holds.RedisHolds(
                registry_.SessionRegistry(
                    settings.redis,
                    ttl=settings.session_ttl,
                    timeout=0.5,
                    beat_timeout=settings.liveness_ttl * holds.BEAT_FRACTION,
                ),
                replica=settings.replica_id,
                alive_ttl=settings.liveness_ttl,
                on_error=self.metrics.registry_errors.inc,
            )
        else:
            self.holder = holds.LocalHolds(settings.replica_id)
        self.recorder = history.Recorder(settings.history, replica=settings.replica_id)
        self.deliveries = deliveries_.DeliveryLog(
            self.desired, on_store_error=self.metrics.store_errors.inc
        )
        self.presence = presence.Presence(
            self.registry,
            replica_id=settings.replica_id,
            sessions=self.sessions,
            routing=self.sharding,
            shared=self.holder.registry if isinstance(self.holder, holds.RedisHolds) else None,
            on_counts=self._counts,
        )
        self.sessions.on_release = self.presence.closed
        self.revocations = revocations_.Revocations(
            self.desired,
            sessions=self.sessions,
            replica_id=settings.replica_id,
            on_store_error=self.metrics.store_errors.inc,
        )
        self.agent_server = agentserver.AgentServer(
            max_message_bytes=settings.session.max_message_bytes,
            max_connections=settings.max_connections,
        )
        self.probes = probes_.ProbePort(self.readiness)  # the plaintext --health port
        self._signals = probes_.Signals(
            fenced_by=lambda: self.supervisor.failed,
            stopping=lambda: self._stopped,
            restarting=lambda: self.supervisor.down,
            serving=lambda: self.agent_server.started,
            member=self.coordinator.is_registered,
            map_applied=self.sharding.applied.is_set,
            map_epoch=lambda: self.sharding.map.epoch if self.sharding.map else 0,
        )
        self.member_report = memberreport.MemberReport(
            fenced=self.holder.is_fenced,
            agents=lambda: self.sessions.sessions,
            set_serving=self.coordinator.set_serving,
            publish=functools.partial(self.coordinator.report, membership.SESSIONS),
        )
        self.admission = admission.Admission(settings.admission)
        self.supervisor = supervise.Supervisor(
            replica=settings.replica_id, failures=self.metrics.task_failures, on_fatal=self._fence
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: exposition.MetricsServer | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The agents' port bound (0 until started)."""
        return self.agent_server.port

    async def start(self) -> None:
        creds = credentials.server_credentials(
            self.settings.tls_dir, on_reload_failure=self.metrics.certificate_reload_failures.inc
        )
        if self.settings.health:  # first: a slow store must not fail the liveness probe
            await self.probes.start(self.settings.health)
            self._supervise("probes", self.probes.mirror)
        await self._reach_hub_store()
        # No agent is served before the revocation list is read.
        self._supervise("revocations", self.revocations.run)
        await asyncio.wait_for(self.revocations.wait_ready(), self.settings.store_timeout * 3)
        await self.holder.start()
        self.coordinator.start()
        self._supervise("coordinator", self.coordinator.join)  # its failure, raised
        self._supervise("sharding", self.sharding.run)
        self._supervise("presence", self.presence.run)
        self._supervise("holds", functools.partial(self.holder.run, self.sessions.close_lost))
        self._supervise("serving", self.member_report.run)
        self._supervise("deliveries", self.deliveries.run)
        self._supervise("trim", limits.trim_periodically)
        handler = stream.StreamHandler(
            replica_id=self.settings.replica_id,
            desired=self.desired,
            dispatcher=self.dispatcher,
            routing=self.routing,
            sessions=self.sessions,
            settings=self.settings.session,
            metrics=self.metrics,
            holder=self.holder,
            recorder=self.recorder,
            deliveries=self.deliveries,
            revocations=self.revocations,
            auto_register=self.settings.auto_register,
            admission=self.admission,
        )
        host, port = await self.agent_server.start(
            handler.subscribe, listen=self.settings.listen, creds=creds
        )
        if self.settings.metrics:
            mhost, mport = settings_.parse_hostport(self.settings.metrics, what="--metrics")
            try:
                self._metrics_server = exposition.serve(
                    mhost, mport, registry=self.registry, ready=self.readiness
                )
            except OSError as err:
                raise binding.cannot_listen(self.settings.metrics, "metrics", err) from err
        await self._wait_first_map()
        logger.info("replica %s serving agents on %s:%d", self.settings.replica_id, host, port)

    async def _reach_hub_store(self) -> None:
        """Connect the hub store and start the dispatcher's watch on it; a one-line StoreError
        naming the store when that fails or its cursor is not read within 3 store timeouts."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            await self.desired.connect()
            async with asyncio.timeout(self.settings.store_timeout * 3):
                await self.dispatcher.start()
        except TimeoutError:  # before OSError: TimeoutError is one
            raise self._unreachable(f"timed out after {loop.time() - began:.1f}s") from None
        except (hub.StoreError, OSError) as err:
            raise self._unreachable(err) from err
        self._supervise("dispatch-watch", self.dispatcher.run)

    def _unreachable(self, why: BaseException | str) -> hub.StoreError:
        which = "the coordination store" if self.settings.store is None else "the hub store"
        detail = str(why).strip() or type(why).__name__
        return hub.StoreError(f"cannot reach {which} {self.settings.desired_store} ({detail})")

    def _supervise(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Run `factory()` as task `name` under its policy in POLICIES."""
        self._tasks.append(self.supervisor.supervise(name, factory, policy=POLICIES[name]))

    def _fence(self, task: str) -> None:
        """A FATAL task failed: serve no agent from now on (`run` stops the replica next)."""
        reason = f"self-fence: task {task} failed"
        for session in list(self.sessions.sessions.values()):
            session.close(
                session_.CloseReason.SELF_FENCE,
                reason,
                final=pb.Envelope(goodbye=pb.Goodbye(reason=reason)),
            )

    def _counts(self, registered: int, standins: int) -> None:
        self.metrics.agents_registered.set(registered)
        self.metrics.standins_open.set(standins)

    def readiness(self) -> tuple[bool, str]:
        """Ready: serving, a member of the cluster, with a shard map applied, every task up."""
        return probes_.readiness(self._signals)

    async def _wait_first_map(self) -> None:
        """Agents are served once a shard map is applied; wait a bounded time for the first."""
        try:
            await asyncio.wait_for(
                self.sharding.applied.wait(), self.settings.election.lease_duration * 3
            )
        except TimeoutError:
            logger.warning("no shard map applied yet; agents are told to retry until one is")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.agent_server.enter_graceful_shutdown()
        await self.probes.enter_graceful_shutdown()  # readiness goes NOT_SERVING at once
        # Hand every agent to its owner in the map without us, then leave the member
        # set (releasing the lease if leading) so peers publish that map at once.
        drained = self.sharding.drain()
        if drained:
            logger.info(
                "replica %s leaving: handed %d agent(s) over", self.settings.replica_id, drained
            )
            self.metrics.handoffs.inc(drained)
        await self.coordinator.shutdown()
        self.sessions.close_all("principal replica shutting down")
        await self.agent_server.stop(self.settings.shutdown_grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):  # a report for people: best effort at exit
            await asyncio.wait_for(self.deliveries.flush(), self.settings.store_timeout)
        await self.holder.close()
        await self.records.close()
        await self.desired.close()
        self.recorder.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        await self.probes.stop()


async def run(settings: settings_.PrincipalSettings) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully: exit status 0. Once a FATAL
    task has failed (the replica fenced itself), shut down at once: supervise.EXIT_FATAL."""
    limits.raise_open_files_limit()
    limits.map_large_allocations()  # a flood's freed TLS buffers leave RSS at once
    replica = Replica(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def serve() -> None:
        await replica.start()
        await stop.wait()

    serving = asyncio.create_task(serve(), name="serve")
    fatal = asyncio.create_task(replica.supervisor.fatal.wait(), name="fatal")
    try:
        await asyncio.wait((serving, fatal), return_when=asyncio.FIRST_COMPLETED)
        if not replica.supervisor.fatal.is_set():
            serving.result()  # start()'s error, if it failed
    finally:
        for task in (serving, fatal):
            task.cancel()
        await asyncio.gather(serving, fatal, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.shield(replica.stop())
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return supervise.EXIT_FATAL if replica.supervisor.fatal.is_set() else 0
