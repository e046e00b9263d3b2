"""Bad clients are refused with one clear line, counted, and never disturb other sessions.

A real principal replica (in this process) on a real etcd with real mTLS; a real
agent keeps a session open throughout and must see no interruption.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import prometheus_client as prom
import pytest

from agent import _client as agent_client
from agent import _settings as agent_settings
from principal import _server as server
from proto import _credentials as credentials
from proto import codec, pb
from tests.integration.conftest import LIMIT

pytestmark = pytest.mark.integration


@pytest.fixture
async def steady(
    replica: server.Replica, pki_dir: Path, tmp_path: Path
) -> AsyncIterator[agent_client.Agent]:
    cfg = agent_settings.AgentSettings(
        name="steady",
        mode="managed",
        endpoints=(f"127.0.0.1:{replica.port}",),
        tls_dir=pki_dir / "agents" / "steady",
        state=tmp_path / "steady.db",
    )
    agent = agent_client.Agent(cfg)
    task = asyncio.create_task(agent.run())
    await asyncio.wait_for(agent.welcomed.wait(), 10)
    try:
        yield agent
    finally:
        agent.stop()
        await asyncio.wait_for(task, 10)


def _raw_call(
    replica: server.Replica, creds: grpc.ChannelCredentials
) -> tuple[grpc.aio.Channel, object]:
    channel = grpc.aio.secure_channel(f"127.0.0.1:{replica.port}", creds)
    call = channel.stream_stream(
        codec.SUBSCRIBE_METHOD, request_serializer=None, response_deserializer=None
    )()
    return channel, call


async def _send_raw(
    replica: server.Replica, creds: grpc.ChannelCredentials, payload: bytes
) -> grpc.aio.AioRpcError:
    channel, call = _raw_call(replica, creds)
    try:
        async with asyncio.timeout(10):
            await call.write(payload)  # type: ignore[attr-defined]
            while True:
                msg = await call.read()  # type: ignore[attr-defined]
                if msg is grpc.aio.EOF:
                    code = await call.code()  # type: ignore[attr-defined]
                    pytest.fail(f"stream ended with {code} instead of an error")
    except grpc.aio.AioRpcError as err:
        return err
    finally:
        await channel.close()


def _hello(name: str, **extra: object) -> bytes:
    return pb.Envelope(
        seq=1,
        hello=pb.Hello(
            agent_name=name, mode=pb.MODE_MANAGED, min_protocol=1, max_protocol=1, **extra
        ),
    ).SerializeToString()


def _rejected(replica: server.Replica, reason: str) -> float:
    return replica.metrics.sessions_rejected.labels(reason)._value.get()


def _one_line(err: grpc.aio.AioRpcError) -> str:
    details = err.details() or ""
    assert details and "\n" not in details, details
    return details


async def test_application_level_rejections(
    replica: server.Replica, steady: agent_client.Agent, pki_dir: Path
) -> None:
    session_before = steady.session_id
    creds_a = credentials.channel_credentials(pki_dir / "agents" / "agent-a")

    err = await _send_raw(replica, creds_a, _hello("agent-b"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _one_line(err) == "certificate identifies agent 'agent-a' but hello claims 'agent-b'"
    assert _rejected(replica, "identity_mismatch") == 1
    assert dict(err.trailing_metadata() or ()).get("mooring-rejected") == "identity_mismatch"

    big = [
        pb.InventoryItem(
            key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name=f"a{i:06d}"), checksum="x" * 64
        )
        for i in range(1500)
    ]
    err = await _send_raw(replica, creds_a, _hello("agent-a", inventory=big))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _one_line(err).endswith(f"exceeds the limit of {LIMIT} bytes")
    assert _rejected(replica, "oversized") == 1

    err = await _send_raw(replica, creds_a, b"\xff\xff\xff\xff")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _one_line(err).startswith("malformed message")
    assert _rejected(replica, "malformed") == 1

    unknown_field = b"\x98\x06\x01"  # field 99, varint 1: a body this protocol does not know
    err = await _send_raw(replica, creds_a, unknown_field)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _one_line(err) == "unknown message type (empty or unrecognised envelope body)"
    assert _rejected(replica, "unknown_type") == 1

    welcome_from_agent = pb.Envelope(seq=1, welcome=pb.Welcome(replica_id="x")).SerializeToString()
    err = await _send_raw(replica, creds_a, welcome_from_agent)
    assert _one_line(err) == "unexpected message type 'welcome' from an agent"

    env = pb.Envelope.FromString(_hello("agent-a"))
    env.hello.min_protocol, env.hello.max_protocol = 7, 9
    err = await _send_raw(replica, creds_a, env.SerializeToString())
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no common protocol version" in _one_line(err)

    # The steady agent's session saw none of it.
    assert steady.session_id == session_before
    assert steady.metrics.sessions._value.get() == 1
    assert replica.metrics.sessions_open._value.get() == 1
    doc = {
        "kind": "Application",
        "metadata": {"name": "after-storm"},
        "spec": {"project": "default"},
    }
    await replica.desired.apply_desired("steady", doc)
    for _ in range(200):
        if await steady.store.get("Application", "after-storm"):
            break
        await asyncio.sleep(0.02)
    assert await steady.store.get("Application", "after-storm") is not None


@pytest.mark.parametrize("tls_dir", ["none", "foreign", "expired"])
async def test_tls_rejections(
    replica: server.Replica, steady: agent_client.Agent, pki_dir: Path, tmp_path: Path, tls_dir: str
) -> None:
    session_before = steady.session_id
    if tls_dir == "none":
        creds = grpc.ssl_channel_credentials(root_certificates=(pki_dir / "ca.crt").read_bytes())
        err = await _send_raw(replica, creds, _hello("agent-a"))
        assert err.code() == grpc.StatusCode.UNAVAILABLE
        _one_line(err)
    else:
        # A real agent with the bad certificate: refused at the handshake, counted on its side.
        registry = prom.CollectorRegistry()
        cfg = agent_settings.AgentSettings(
            name="agent-a" if tls_dir == "foreign" else "late",
            mode="managed",
            endpoints=(f"127.0.0.1:{replica.port}",),
            tls_dir=pki_dir / tls_dir,
            state=tmp_path / "bad.db",
            backoff_base=0.05,
            backoff_cap=0.2,
        )
        bad = agent_client.Agent(cfg, registry=registry)
        task = asyncio.create_task(bad.run())
        for _ in range(200):
            if bad.metrics.connect_errors.labels("tls")._value.get() >= 2:
                break
            await asyncio.sleep(0.02)
        bad.stop()
        await asyncio.wait_for(task, 10)
        assert bad.metrics.connect_errors.labels("tls")._value.get() >= 2
        assert bad.metrics.sessions._value.get() == 0
    assert steady.session_id == session_before
    assert replica.metrics.sessions_open._value.get() == 1
