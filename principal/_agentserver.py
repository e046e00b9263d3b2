"""The port agents dial (mTLS): the Subscribe stream, grpc.health.v1 and reflection, with
the channel args that bound handshakes, idle connections and the connection count."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from principal import _binding as binding
from proto import codec, pb

__all__ = ["AgentServer", "Subscribe", "grpc_server_options"]

HANDSHAKE_TIMEOUT_MS = 10_000
"""A new connection's TLS and HTTP/2 handshakes must be done by then, or it is closed."""
IDLE_CONNECTION_MS = 300_000
"""A connection with no stream for this long is closed."""

Subscribe = Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]
"""The Subscribe handler: one call per agent stream (`principal._stream.StreamHandler`)."""


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
    flood pins at most that many handshakes' memory (bench_hardening: about 30 KB each,
    with proto.limits.map_large_allocations).
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


class AgentServer:
    """The agents' port: `start()` once, then `enter_graceful_shutdown()` and `stop()`.

    `health` answers for "" and the agent service: SERVING once started, NOT_SERVING
    from the graceful shutdown on. An agent's message is decoded up to
    `max_message_bytes`; at most `max_connections` connections are open at once.
    """

    def __init__(self, *, max_message_bytes: int, max_connections: int) -> None:
        self.health = health_aio.HealthServicer()
        self.port = 0
        self._limit = max_message_bytes
        self._max_connections = max_connections
        self._server: grpc.aio.Server | None = None

    @property
    def started(self) -> bool:
        return self._server is not None

    async def start(
        self, subscribe: Subscribe, *, listen: str, creds: grpc.ServerCredentials
    ) -> tuple[str, int]:
        """Serve `subscribe` on LISTEN (--listen) with TLS: the host and the port bound."""
        generic = grpc.method_handlers_generic_handler(
            codec.SERVICE_NAME,
            {
                "Subscribe": grpc.stream_stream_rpc_method_handler(
                    subscribe,
                    request_deserializer=codec.bounded_decoder(self._limit),
                    response_serializer=pb.Envelope.SerializeToString,
                )
            },
        )
        server = grpc.aio.server(
            options=grpc_server_options(self._limit, max_connections=self._max_connections)
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
        host, self.port = binding.listen(
            server, listen, flag="--listen", purpose="agents", creds=creds
        )
        await server.start()
        self._server = server
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(codec.SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        return host, self.port

    async def enter_graceful_shutdown(self) -> None:
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float | None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
