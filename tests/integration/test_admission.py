"""Admission limits on a real replica over mTLS (issue 14): an agent that reconnects too
fast is refused `rate_limited`, streams beyond the setting-up cap are refused `busy`, and
the refusal's time to retry is what a real agent waits."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import grpc.aio
import pytest

from principal import _admission as admission
from principal import _server as server
from proto import _credentials as credentials
from proto import codec, pb
from tests._poll import eventually
from tests.integration._agents import rejected, running, serving

pytestmark = pytest.mark.integration


@pytest.fixture
async def channel_to(pki_dir: Path) -> AsyncIterator[object]:
    """Open mTLS channels as agent `steady`; all closed at the end."""
    opened: list[grpc.aio.Channel] = []

    def open_channel(replica: server.Replica) -> grpc.aio.Channel:
        creds = credentials.channel_credentials(pki_dir / "agents" / "steady")
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{replica.port}",
            creds,
            options=[("grpc.ssl_target_name_override", "127.0.0.1")],
        )
        opened.append(channel)
        return channel

    yield open_channel
    for channel in opened:
        await channel.close()


def stream(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamCall:  # type: ignore[type-arg]
    return channel.stream_stream(
        codec.SUBSCRIBE_METHOD,
        request_serializer=pb.Envelope.SerializeToString,
        response_deserializer=pb.Envelope.FromString,
    )()


async def hello_once(channel: grpc.aio.Channel) -> tuple[str, dict[str, str]]:
    """One stream: hello, first answer, end. ("welcome", {}) or ("refused", trailers)."""
    call = stream(channel)
    hello = pb.Hello(
        agent_name="steady",
        mode=pb.MODE_MANAGED,
        min_protocol=codec.PROTOCOL_MIN,
        max_protocol=codec.PROTOCOL_MAX,
    )
    try:
        await call.write(pb.Envelope(seq=1, hello=hello))
        first = await call.read()
    except grpc.aio.AioRpcError as err:
        return "refused", {k: str(v) for k, v in err.trailing_metadata() or ()}
    if first is grpc.aio.EOF:
        return "refused", {k: str(v) for k, v in await call.trailing_metadata() or ()}
    call.cancel()
    return first.WhichOneof("body") or "", {}


async def test_an_agent_starting_streams_too_fast_is_rate_limited_with_a_time_to_retry(
    pki_dir: Path, etcd, channel_to
) -> None:
    limits = admission.AdmissionSettings(reconnect_burst=3, reconnect_rate=0.5)
    root = f"/admission-{uuid.uuid4().hex[:8]}/"
    async with serving(pki_dir, etcd, root=root, admission=limits, auto_register=True) as rep:
        channel = channel_to(rep)
        answers = [await hello_once(channel) for _ in range(4)]
        assert [body for body, _ in answers[:3]] == ["welcome"] * 3
        body, trailers = answers[3]
        assert body == "refused"
        assert trailers[codec.REJECTED_TRAILER] == "rate_limited"
        assert 1500 <= int(trailers[codec.RETRY_AFTER_TRAILER]) <= 2000  # a token at 0.5/s
        assert rejected(rep, "rate_limited") == 1
        await asyncio.sleep(2.1)  # one token back
        assert (await hello_once(channel))[0] == "welcome"


async def test_beyond_the_setting_up_cap_an_agent_is_busy_and_waits_what_it_is_told(
    pki_dir: Path, etcd, channel_to, tmp_path: Path
) -> None:
    """One stalled stream (no hello) holds the only setting-up slot: a real agent is
    refused `busy` and comes back after the 1.5 s asked for (plus jitter), not after
    its own 0.2 s backoff."""
    limits = admission.AdmissionSettings(max_setting_up=1, busy_retry_after=1.5)
    root = f"/admission-{uuid.uuid4().hex[:8]}/"
    async with serving(pki_dir, etcd, root=root, admission=limits, auto_register=True) as rep:
        stalled = stream(channel_to(rep))  # opened, and never a message
        await stalled.wait_for_connection()
        await eventually(
            lambda: rep.admission.setting_up,
            until=lambda n: n >= 1,
            timeout=5.0,
            interval=0.02,
            what="the stalled stream to reach the replica",
        )
        async with running(rep, "agent-a", pki_dir / "agents" / "agent-a", tmp_path / "a.db") as a:
            await eventually(  # every 10 ms: `refused_at` times the wait that follows
                lambda: rejected(rep, "busy"),
                until=lambda n: n >= 1,
                timeout=5.0,
                interval=0.01,
                what="the agent to be refused busy",
            )
            refused_at = time.monotonic()
            stalled.cancel()  # the slot is free at once; the agent must still wait
            await asyncio.wait_for(a.welcomed.wait(), 10)
            waited = time.monotonic() - refused_at
        assert rejected(rep, "busy") == 1
        assert 1.5 - 0.1 <= waited <= 1.5 * 1.5 + 1.0, waited
