"""JSON that Python decodes but cannot encode again (a lone surrogate), or nested deep
enough to exhaust the decoder's stack, is refused in an acknowledgement; the session
goes on (it used to end the stream with an unhandled UnicodeEncodeError/RecursionError)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import grpc.aio
import pytest

from principal import _server as server
from proto import _credentials as credentials
from proto import codec, objects, pb

pytestmark = pytest.mark.integration

HOSTILE = {
    "lone surrogate": ('{"sync": {"status": "\\ud800"}}', "holds text that is not valid Unicode"),
    "surrogate key": ('{"\\udfff": 1}', "holds text that is not valid Unicode"),
    "deep": ("[" * 5000 + "]" * 5000, "nested"),
    "deeper than the limit": ("[" * 150 + "]" * 150, f"nested deeper than {objects.MAX_DEPTH}"),
    "not JSON": ("{", "is not JSON"),
}


async def test_hostile_status_json_is_refused_and_the_session_goes_on(
    replica: server.Replica, pki_dir: Path
) -> None:
    creds = credentials.channel_credentials(pki_dir / "agents" / "agent-b")
    async with grpc.aio.secure_channel(f"127.0.0.1:{replica.port}", creds) as channel:
        call = channel.stream_stream(
            codec.SUBSCRIBE_METHOD,
            request_serializer=pb.Envelope.SerializeToString,
            response_deserializer=pb.Envelope.FromString,
        )()
        hello = pb.Hello(agent_name="agent-b", mode=pb.MODE_MANAGED, min_protocol=1, max_protocol=1)
        await call.write(pb.Envelope(seq=1, hello=hello))

        async def next_ack(seq: int) -> pb.Ack:
            async with asyncio.timeout(10):
                while True:
                    got = await call.read()
                    assert got is not grpc.aio.EOF, "the stream ended"
                    if got.WhichOneof("body") == "ack" and got.ack.seq == seq:
                        return got.ack

        async with asyncio.timeout(10):
            while (await call.read()).WhichOneof("body") != "welcome":
                pass
        for seq, (status_json, message) in enumerate(HOSTILE.values(), start=2):
            update = pb.StatusUpdate(
                key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name="app"),
                version=1,
                status_json=status_json,
            )
            await call.write(pb.Envelope(seq=seq, status=update))
            ack = await next_ack(seq)
            assert not ack.ok and message in ack.error and "\n" not in ack.error
        good = pb.StatusUpdate(
            key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name="app"),
            version=1,
            status_json='{"sync": {"status": "Synced"}}',
        )
        await call.write(pb.Envelope(seq=100, status=good))
        assert (await next_ack(100)).ok  # the same session, still served
        await call.done_writing()
