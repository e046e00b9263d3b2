"""Run one principal replica: gRPC server (agents, health, reflection), metrics, store watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

import grpc
import prometheus_client as prom
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from election import _cluster as cluster
from election import _electing as electing
from election import _stores as stores
from principal import _dispatch as dispatch
from principal import _history as history
from principal import _holds as holds
from principal import _hub as hub
from principal import _metrics as metrics_
from principal import _ownership as ownership
from principal import _presence as presence
from principal import _registry as registry_
from principal import _session as session_
from principal import _settings as settings_
from principal import _sharding as sharding
from proto import _credentials as credentials
from proto import _exposition as exposition
from proto import codec, pb

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
SERVING_POLL = 0.1
"""Seconds between looks at whether this replica can hold agents (for its member record)."""
"""Seconds between readiness updates on the --health port."""


def grpc_server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Server channel args, agreed with the agent's keepalive settings.

    The agent pings every 10 s of idleness; we accept pings down to every 4 s so
    a client is never answered with GOAWAY too_many_pings. gRPC's own receive
    limit sits well above ours so oversized messages reach our decoder, which
    rejects them with a clear error and counts them.

    TLS frames of at most 4 KB (C-core's default is 16 KB): the frame protector's
    buffer is per connection, and this saves about 5 KB per agent session (90 -> 85 KB
    for a bare mTLS stream in bench_memory) with no measurable change in bench_sync
    throughput (our messages are a few hundred bytes).

    A connection must finish its TLS and HTTP/2 handshakes within HANDSHAKE_TIMEOUT_MS
    (C-core waits 120 s) and is closed after IDLE_CONNECTION_MS without a stream: idle
    or half-open connections cannot pile up (an agent's session stream never idles).
    """
    return [
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 4_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.max_receive_message_length", max_message_bytes * 8),
        ("grpc.max_send_message_length", max_message_bytes * 8),
        ("grpc.so_reuseport", 0),
        ("grpc.tsi.max_frame_size", 4096),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_TIMEOUT_MS),
        ("grpc.max_connection_idle_ms", IDLE_CONNECTION_MS),
    ]


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
            replica_id=electing.ReplicaId(settings.replica_id),
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
        self.presence = presence.Presence(
            self.registry,
            replica_id=settings.replica_id,
            sessions=self.sessions,
            routing=self.sharding,
            shared=self.holder.registry if isinstance(self.holder, holds.RedisHolds) else None,
            on_counts=self._counts,
        )
        self.sessions.on_release = self.presence.closed
        self.server: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()
        self.probes = health_aio.HealthServicer()  # the plaintext --health port's
        self.probe_server: grpc.aio.Server | None = None
        self.port = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._metrics_server: exposition.MetricsServer | None = None
        self._stopped = False

    async def start(self) -> None:
        creds = credentials.server_credentials(self.settings.tls_dir)
        if self.settings.health:  # first: a slow store must not fail the liveness probe
            await self._start_probes()
        await self.desired.connect()
        self._tasks.append(asyncio.create_task(self.dispatcher.run(), name="dispatch-watch"))
        await asyncio.wait_for(self.dispatcher.wait_ready(), self.settings.store_timeout * 3)
        await self.holder.start()
        self.coordinator.start()
        self._tasks.append(asyncio.create_task(self.sharding.run(), name="sharding"))
        self._tasks.append(asyncio.create_task(self.presence.run(), name="presence"))
        self._tasks.append(
            asyncio.create_task(self.holder.run(self.sessions.close_lost), name="holds")
        )
        self._tasks.append(asyncio.create_task(self._serving(), name="serving"))
        handler = session_.StreamHandler(
            replica_id=self.settings.replica_id,
            desired=self.desired,
            dispatcher=self.dispatcher,
            routing=self.routing,
            sessions=self.sessions,
            settings=self.settings.session,
            metrics=self.metrics,
            holder=self.holder,
            recorder=self.recorder,
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
        server = grpc.aio.server(options=grpc_server_options(limit))
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
        self.port = server.add_secure_port(f"{host}:{port}", creds)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.settings.listen}")
        await server.start()
        self.server = server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(codec.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        if self.settings.metrics:
            mhost, mport = settings_.parse_hostport(self.settings.metrics, what="--metrics")
            self._metrics_server = exposition.serve(
                mhost, mport, registry=self.registry, ready=self.readiness
            )
        await self._wait_first_map()
        logger.info("replica %s serving agents on %s:%d", self.settings.replica_id, host, self.port)

    async def _start_probes(self) -> None:
        """A plaintext grpc.health.v1 server for kubelet probes: `liveness` answers SERVING
        while the process runs (never asks a store, Redis or an agent); `readiness` and ""
        follow `readiness()`, refreshed every PROBE_REFRESH seconds."""
        assert self.settings.health is not None
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.probes, server)
        host, port = settings_.parse_hostport(self.settings.health, what="--health")
        if server.add_insecure_port(f"{host}:{port}") == 0:
            raise OSError(f"cannot listen on {self.settings.health}")
        await server.start()
        self.probe_server = server
        await self.probes.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        self._tasks.append(asyncio.create_task(self._mirror_readiness(), name="probes"))

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
        while True:
            await asyncio.sleep(SERVING_POLL)
            self.coordinator.set_serving(not self.holder.is_fenced())

    def _counts(self, registered: int, standins: int) -> None:
        self.metrics.agents_registered.set(registered)
        self.metrics.standins_open.set(standins)

    def readiness(self) -> tuple[bool, str]:
        """Ready: serving, a member of the cluster, with a shard map applied."""
        if self._stopped:
            return False, "shutting down"
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
        await self.holder.close()
        await self.records.close()
        await self.desired.close()
        self.recorder.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self.probe_server is not None:
            await self.probe_server.stop(None)


async def run(settings: settings_.PrincipalSettings) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    replica = Replica(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await replica.start()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(replica.stop())
