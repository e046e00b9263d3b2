"""Run one principal replica: gRPC server (agents, health, reflection), metrics, store watch."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import prometheus_client as prom
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from election import cluster, lease, membership, stores
from principal import _admission as admission
from principal import _deliveries as deliveries_
from principal import _dispatch as dispatch
from principal import _history as history
from principal import _holds as holds
from principal import _hub as hub
from principal import _metrics as metrics_
from principal import _ownership as ownership
from principal import _presence as presence
from principal import _registry as registry_
from principal import _revocations as revocations_
from principal import _session as session_
from principal import _settings as settings_
from principal import _sharding as sharding
from principal import _stream as stream
from principal import _supervise as supervise
from proto import codec, credentials, exposition, limits, pb

__all__ = ["Replica", "grpc_server_options", "run"]

logger = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = "readiness"
"""Service names on the --health port (kubelet gRPC probes name one in `service`)."""
HANDSHAKE_TIMEOUT_MS = 10_000
"""A new connection's TLS and HTTP/2 handshakes must be done by then, or it is closed."""
IDLE_CONNECTION_MS = 300_000
"""A connection with no stream for this long is closed."""
PROBE_REFRESH = 0.5
"""Seconds between readiness updates on the --health port."""
SESSIONS_REPORT = 1.0
"""Seconds between updates of the sessions this replica reports in its member record."""
SESSIONS_LISTED = 2000
"""At most this many agent names in that report (beyond it, only their count)."""
SERVING_POLL = 0.1
"""Seconds between looks at whether this replica can hold agents (for its member record)."""

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


def grpc_server_options(
    max_message_bytes: int, *, max_connections: int = 10_000
) -> list[tuple[str, Any]]:
    """Server channel args, agreed with the agent's keepalive settings.

    Keepalive as both ends agree (codec.KEEPALIVE_*: the agent pings after 10 s of
    idleness; we accept pings down to every 4 s, so a client is never answered with
    GOAWAY too_many_pings). gRPC's own receive
    limit sits well above ours so oversized messages reach our decoder, which
    rejects them with a clear error and counts them.

    TLS frames of at most 4 KB (C-core's default is 16 KB): the frame protector's
    buffer is per connection, and this saves about 5 KB per agent session (90 -> 85 KB
    for a bare mTLS stream in bench_memory) with no measurable change in bench_sync
    throughput (our messages are a few hundred bytes).

    At most `max_connections` connections are open at once (agents' sessions and
    connections still in their handshakes alike); gRPC closes any beyond at once, so a
    flood pins at most that many handshakes' memory (bench_hardening: 30-60 KB each).
    An agent turned away this way tries another replica.

    A connection must finish its TLS and HTTP/2 handshakes within HANDSHAKE_TIMEOUT_MS
    (C-core waits 120 s) and is closed after IDLE_CONNECTION_MS without a stream: idle
    or half-open connections cannot pile up (an agent's session stream never idles).
    """
    return [
        ("grpc.keepalive_time_ms", int(codec.KEEPALIVE_TIME_S * 1000)),
        ("grpc.keepalive_timeout_ms", int(codec.KEEPALIVE_TIMEOUT_S * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            int(codec.MIN_PING_INTERVAL_S * 1000),
        ),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_receive_message_length", max_message_bytes * 8),
        ("grpc.max_send_message_length", max_message_bytes * 8),
        ("grpc.so_reuseport", 0),
        ("grpc.tsi.max_frame_size", 4096),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
        ("grpc.max_allowed_incoming_connections", max_connections),
    ]


def _cannot_listen(address: str, purpose: str, err: BaseException | None = None) -> OSError:
    """The one line for an address we cannot bind: which one, what for, and why."""
    reason = "the address is in use or not available"
    if isinstance(err, OSError):
        reason = (err.strerror or str(err)).lower()
    return OSError(f"cannot listen on {address} for {purpose}: {reason}")


def _check_bindable(host: str, port: int, *, address: str, purpose: str) -> None:
    """Bind HOST:PORT once ourselves before gRPC does, so that a port in use (or an address
    this host lacks) is reported with its reason: gRPC says only "Failed to bind", after
    C-core has logged a line of its own. Like gRPC, one of HOST's addresses binding is enough."""
    if port == 0:
        return
    try:
        found = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as err:
        raise _cannot_listen(address, purpose, err) from err
    failure: OSError | None = None
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                sock.bind(sockaddr)
            except OSError as err:
                failure = err
                continue
        return
    raise _cannot_listen(address, purpose, failure) from failure


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
        self.server: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()
        self.probes = health_aio.HealthServicer()  # the plaintext --health port's
        self.probe_server: grpc.aio.Server | None = None
        self.port = 0
        self.admission = admission.Admission(settings.admission)
        self.supervisor = supervise.Supervisor(
            replica=settings.replica_id, failures=self.metrics.task_failures, on_fatal=self._fence
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: exposition.MetricsServer | None = None
        self._stopped = False

    async def start(self) -> None:
        creds = credentials.server_credentials(
            self.settings.tls_dir, on_reload_failure=self.metrics.certificate_reload_failures.inc
        )
        if self.settings.health:  # first: a slow store must not fail the liveness probe
            await self._start_probes()
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
        self._supervise("serving", self._serving)
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
        limit = self.settings.session.max_message_bytes
        generic = grpc.method_handlers_generic_handler(
            codec.SERVICE_NAME,
            {
                "Subscribe": grpc.stream_stream_rpc_method_handler(
                    handler.subscribe,
                    request_deserializer=codec.bounded_decoder(limit),
                    response_serializer=pb.Envelope.SerializeToString,
                )
            },
        )
        server = grpc.aio.server(
            options=grpc_server_options(limit, max_connections=self.settings.max_connections)
        )
        server.add_generic_rpc_handlers((generic,))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                codec.SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        host, port = settings_.parse_hostport(self.settings.listen, what="--listen")
        self.port = self._add_port(
            server, host, port, address=self.settings.listen, purpose="agents", creds=creds
        )
        await server.start()
        self.server = server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(codec.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.metrics:
            mhost, mport = settings_.parse_hostport(self.settings.metrics, what="--metrics")
            try:
                self._metrics_server = exposition.serve(
                    mhost, mport, registry=self.registry, ready=self.readiness
                )
            except OSError as err:
                raise _cannot_listen(self.settings.metrics, "metrics", err) from err
        await self._wait_first_map()
        logger.info("replica %s serving agents on %s:%d", self.settings.replica_id, host, self.port)

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

    @staticmethod
    def _add_port(
        server: grpc.aio.Server,
        host: str,
        port: int,
        *,
        address: str,
        purpose: str,
        creds: grpc.ServerCredentials | None = None,
    ) -> int:
        """Add HOST:PORT to `server` (TLS with `creds`, else plaintext); the port bound."""
        _check_bindable(host, port, address=address, purpose=purpose)
        target = f"{host}:{port}"
        try:  # after the check, only a process binding in between gets here
            bound: int = (
                server.add_secure_port(target, creds)
                if creds is not None
                else server.add_insecure_port(target)
            )
        except RuntimeError as err:  # grpcio raises "Failed to bind" (old releases returned 0)
            raise _cannot_listen(address, purpose) from err
        if bound == 0:
            raise _cannot_listen(address, purpose)
        return bound

    async def _start_probes(self) -> None:
        """A plaintext grpc.health.v1 server for kubelet probes: `liveness` answers SERVING
        while the process runs (never asks a store, Redis or an agent); `readiness` and ""
        follow `readiness()`, refreshed every PROBE_REFRESH seconds."""
        assert self.settings.health is not None
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.probes, server)
        host, port = settings_.parse_hostport(self.settings.health, what="--health")
        self._add_port(server, host, port, address=self.settings.health, purpose="health probes")
        await server.start()
        self.probe_server = server
        await self.probes.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self._supervise("probes", self._mirror_readiness)

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

    async def _mirror_readiness(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            ready, _ = self.readiness()
            for service in ("", READINESS):
                await self.probes.set(service, serving if ready else not_serving)
            await asyncio.sleep(PROBE_REFRESH)

    async def _serving(self) -> None:
        """While this replica cannot confirm its liveness in the session registry it can
        hold no agent, so its agents would wait for it however long that lasts: say so
        in the member record, and the leader maps them to replicas that can (once that
        has lasted a second: see election._shardmap.SERVING_STABLE), and back after."""
        reported = 0.0
        while True:
            await asyncio.sleep(SERVING_POLL)
            self.coordinator.set_serving(not self.holder.is_fenced())
            now = time.monotonic()
            if now - reported >= SESSIONS_REPORT:
                reported = now
                self.coordinator.report(membership.SESSIONS, self._sessions_report())

    def _sessions_report(self) -> dict[str, Any]:
        """The agents this replica has a session with, for `mooring status` (the names up
        to SESSIONS_LISTED: a member record is rewritten every second)."""
        agents = sorted(self.sessions.sessions)
        report: dict[str, Any] = {"count": len(agents)}
        if len(agents) <= SESSIONS_LISTED:
            report["agents"] = agents
        return report

    def _counts(self, registered: int, standins: int) -> None:
        self.metrics.agents_registered.set(registered)
        self.metrics.standins_open.set(standins)

    def readiness(self) -> tuple[bool, str]:
        """Ready: serving, a member of the cluster, with a shard map applied, every task up."""
        if self.supervisor.failed is not None:
            return False, f"fenced: task {self.supervisor.failed} failed"
        if self._stopped:
            return False, "shutting down"
        if self.supervisor.down:
            return False, f"task {', '.join(sorted(self.supervisor.down))} failed; restarting"
        if self.server is None:
            return False, "starting"
        if not self.coordinator.is_registered():
            return False, "not a member: this replica's member record is not current"
        if not self.sharding.applied.is_set():
            return False, "no shard map applied yet"
        return (
            True,
            f"member, shard map epoch {self.sharding.map.epoch if self.sharding.map else 0}",
        )

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
        await self.health.enter_graceful_shutdown()
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
        if self.server is not None:
            await self.server.stop(self.settings.shutdown_grace)
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
        if self.probe_server is not None:
            await self.probe_server.stop(None)


async def run(settings: settings_.PrincipalSettings) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully: exit status 0. Once a FATAL
    task has failed (the replica fenced itself), shut down at once: supervise.EXIT_FATAL."""
    limits.raise_open_files_limit()
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
