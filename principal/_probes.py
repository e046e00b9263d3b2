"""A replica's readiness, judged from its parts, and the plaintext --health port that
reports it to kubelet (grpc.health.v1) next to a liveness that never asks anything."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Collection

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from principal import _binding as binding
from proto import exposition

__all__ = ["LIVENESS", "READINESS", "ProbePort", "Signals", "readiness"]

LIVENESS = "liveness"
READINESS = "readiness"
"""Service names on the --health port (kubelet gRPC probes name one in `service`)."""
PROBE_REFRESH = 0.5
"""Seconds between readiness updates on the --health port."""


@dataclasses.dataclass(frozen=True)
class Signals:
    """What readiness is judged from, each read when asked."""

    fenced_by: Callable[[], str | None]  # the FATAL task that failed, once one has
    stopping: Callable[[], bool]  # stop() has begun
    restarting: Callable[[], Collection[str]]  # RESTART tasks down until they restart
    serving: Callable[[], bool]  # the agents' port is up
    member: Callable[[], bool]  # this replica's member record is current
    map_applied: Callable[[], bool]  # a shard map is applied
    map_epoch: Callable[[], int]  # the applied map's epoch (0: none)


def readiness(signals: Signals) -> tuple[bool, str]:
    """Ready: serving, a member of the cluster, with a shard map applied, every task up."""
    failed = signals.fenced_by()
    if failed is not None:
        return False, f"fenced: task {failed} failed"
    if signals.stopping():
        return False, "shutting down"
    down = signals.restarting()
    if down:
        return False, f"task {', '.join(sorted(down))} failed; restarting"
    if not signals.serving():
        return False, "starting"
    if not signals.member():
        return False, "not a member: this replica's member record is not current"
    if not signals.map_applied():
        return False, "no shard map applied yet"
    return True, f"member, shard map epoch {signals.map_epoch()}"


class ProbePort:
    """A plaintext grpc.health.v1 server for kubelet probes: `liveness` answers SERVING
    while the process runs (never asks a store, Redis or an agent); `readiness` and ""
    follow `ready()`, refreshed every PROBE_REFRESH seconds by `mirror()`."""

    def __init__(self, ready: exposition.Readiness) -> None:
        self.servicer = health_aio.HealthServicer()
        self._ready = ready
        self._server: grpc.aio.Server | None = None

    async def start(self, address: str) -> None:
        """Serve on ADDRESS (--health); `mirror()` is to run next."""
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, server)
        binding.listen(server, address, flag="--health", purpose="health probes")
        await server.start()
        self._server = server
        await self.servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)

    async def mirror(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            ready, _ = self._ready()
            for service in ("", READINESS):
                await self.servicer.set(service, serving if ready else not_serving)
            await asyncio.sleep(PROBE_REFRESH)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING at once, and for good."""
        await self.servicer.enter_graceful_shutdown()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(None)
