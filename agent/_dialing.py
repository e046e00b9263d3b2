"""The agent's channels: one long-lived mTLS channel per endpoint, its keepalive and
reconnect options, and when a channel is dropped for a new one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc

from agent import _outcome as outcome_
from agent import _settings as settings_
from proto import credentials

__all__ = ["Channels", "channel_options"]


def channel_options(settings: settings_.AgentSettings) -> list[tuple[str, Any]]:
    """Client channel args; keepalive agreed with the principal's ping allowance (>= 4 s)."""
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.max_receive_message_length", 64 << 20),
        ("grpc.client_idle_timeout_ms", 60_000),  # cached channels to idle replicas let go
    ]


class Channels:
    """A long-lived channel per endpoint: redirects and reconnects to a replica we
    already talk to reuse its TLS connection. A transport failure drops it, and so do
    new TLS files: every cached channel is idle here (one session at a time).

    `server_name(target)` is the name to verify for an address resolved from a DNS
    name (None for an address given as such)."""

    def __init__(
        self,
        creds: credentials.ReloadingCredentials,
        *,
        options: Sequence[tuple[str, Any]],
        server_name: Callable[[str], str | None],
    ) -> None:
        self._creds = creds
        self._options = tuple(options)
        self._server_name = server_name
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._tls_generation = 0  # of the TLS files the cached channels use

    @contextlib.asynccontextmanager
    async def channel(self, target: str) -> AsyncIterator[Any]:
        """The channel to `target`, dropped if what runs on it fails, unless a replica
        answered (a `ConnectFailed` with `answered`: the connection is sound)."""
        creds = self._creds.current()
        if self._channels and self._tls_generation != self._creds.generation:
            for old in list(self._channels):
                await self.drop(old)
        self._tls_generation = self._creds.generation
        channel = self._channels.get(target)
        if channel is None:
            options = list(self._options)
            server_name = self._server_name(target)
            if server_name:  # an address resolved from a DNS name: verify the name
                options.append(("grpc.ssl_target_name_override", server_name))
            channel = grpc.aio.secure_channel(target, creds, options=options)
            self._channels[target] = channel
        try:
            yield channel
        except outcome_.ConnectFailed as err:
            if not err.answered:
                await self.drop(target)
            raise
        except BaseException:
            await self.drop(target)
            raise

    async def drop(self, target: str) -> None:
        channel = self._channels.pop(target, None)
        if channel is not None:
            await channel.close()

    async def close(self) -> None:
        """Drop every channel."""
        for target in list(self._channels):
            await self.drop(target)
