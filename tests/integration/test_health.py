"""The principal serves the standard gRPC health service and server reflection (over mTLS)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from principal import _probes as probes
from principal import _server as server
from principal import _settings as settings
from proto import _credentials as credentials
from proto import codec
from tests._procs import free_port

pytestmark = pytest.mark.integration


async def test_health_and_reflection(replica: server.Replica, pki_dir: Path) -> None:
    creds = credentials.channel_credentials(pki_dir / "agents" / "agent-a")
    async with grpc.aio.secure_channel(f"127.0.0.1:{replica.port}", creds) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", codec.SERVICE_NAME):
            got = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert got.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        answer = await call.read()
        await call.done_writing()
        names = {s.name for s in answer.list_services_response.service}
        assert {codec.SERVICE_NAME, "grpc.health.v1.Health"} <= names


async def test_health_reports_not_serving_during_shutdown(
    replica: server.Replica, pki_dir: Path
) -> None:
    await replica.agent_server.enter_graceful_shutdown()
    creds = credentials.channel_credentials(pki_dir / "agents" / "agent-a")
    async with grpc.aio.secure_channel(f"127.0.0.1:{replica.port}", creds) as channel:
        got = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert got.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_the_plaintext_probe_port_separates_liveness_from_readiness(
    pki_dir: Path, etcd
) -> None:
    port = free_port()
    cfg = settings.PrincipalSettings(
        replica_id="probe",
        listen=f"127.0.0.1:{free_port()}",
        advertise="127.0.0.1:1",
        coordination=etcd.url,
        store_root="/probe-test/",
        tls_dir=pki_dir / "principals" / "p1",
        health=f"127.0.0.1:{port}",
    )
    rep = server.Replica(cfg)
    await rep.start()
    try:
        # What kubelet does: plaintext, no client certificate.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def status(service: str) -> int:
                got = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                return int(got.status)

            serving = health_pb2.HealthCheckResponse.SERVING
            assert await status(probes.LIVENESS) == serving
            for _ in range(50):  # the first shard map: a member with it applied
                if await status(probes.READINESS) == serving:
                    break
                await asyncio.sleep(0.1)
            assert await status(probes.READINESS) == serving
            assert await status("") == serving
            assert rep.readiness()[1].startswith("member, shard map epoch ")
            with pytest.raises(grpc.aio.AioRpcError) as err:  # the agent service is not here
                await health.Check(
                    health_pb2.HealthCheckRequest(service=codec.SERVICE_NAME), timeout=5
                )
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            await rep.probes.enter_graceful_shutdown()  # what stop() does first
            assert await status(probes.READINESS) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await rep.stop()
