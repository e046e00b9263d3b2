"""The one module that imports the etcd client (aetcd): its client, made to dial TLS and
to renew its token, and the few client names the adapter (`election._etcd`) needs.

aetcd 1.0 only ever dials `grpc.aio.insecure_channel`, and takes a user's token once,
at connect. `Client` overrides that one method, `connect`, to dial
`grpc.aio.secure_channel` with `grpc.ssl_channel_credentials` (CA, and a client
certificate for etcd's --client-cert-auth; election/_etcddial.py builds them), and adds
`reauthenticate`. The token needs renewing because etcd forgets it (measured on etcd
3.6.16): a "simple" token lapses after --auth-token-ttl (300 s) without a request and is
lost when the member restarts; from then on every call fails with "invalid auth token",
which aetcd never recovers from. So a call refused that way takes a new token and is
tried once more, within its timeout. A watch created on a stream whose token lapsed is
refused without an error (etcd answers with watch id -1 and aetcd hands that out as a
watch that never sees an event): such a watch takes a new token, restarts the watch
stream (its token is the stream's: the other watches on it end with
StoreUnavailableError, and their callers re-list and re-watch as after any broken
stream) and is created again; a second refusal is a permission error. Leases,
transactions and watches all carry the token (aetcd sends it as `token` metadata on
every call and on the stream).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.watcher
import grpc

from election import _errors as errors

__all__ = ["Client", "ClientError", "RevisionCompactedError"]

logger = logging.getLogger("election._etcd")  # the adapter's logger, as operators filter it

ClientError: Any = aetcd.exceptions.ClientError
"""The root of aetcd's errors (it maps gRPC's to them)."""

RevisionCompactedError: Any = aetcd.exceptions.RevisionCompactedError
"""A watch asked for a revision etcd compacted away (`compacted_revision`: the oldest kept)."""

_AUTH_OFF = "authentication is not enabled"


class Client(aetcd.Client):  # type: ignore[misc]  # aetcd ships no types
    """aetcd's client over TLS when `credentials` are given, with a renewable token.

    `connect` is aetcd 1.0's (client.py) with three changes: the channel is secure when
    TLS is on; a server whose auth is off is used without a token, as etcd's Go client
    does; a connect that fails closes the channel it opened."""

    _is_connecting: bool  # aetcd's own attributes that this class writes
    metadata: tuple[tuple[str, str], ...] | None

    def __init__(
        self,
        *,
        host: str,
        port: int,
        options: Mapping[str, Any],
        credentials: grpc.ChannelCredentials | None,
        username: str | None,
        password: str | None,
    ) -> None:
        super().__init__(
            host=host,
            port=port,
            username=username,
            password=password,
            timeout=None,
            options=dict(options),
        )
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # another task is connecting: wait for it
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        self._is_connecting = True
        try:
            target = f"{self._host}:{self._port}"
            options = list(self._options.items())
            if self._credentials is None:
                self.channel = grpc.aio.insecure_channel(target, options=options)
            else:
                self.channel = grpc.aio.secure_channel(target, self._credentials, options=options)
            try:
                self.auth_stub = aetcd.rpc.AuthStub(self.channel)
                self.metadata = await self._token()
            except BaseException:
                await self.channel.close()
                self._init_channel_attrs()
                raise
            self.kvstub = aetcd.rpc.KVStub(self.channel)
            self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
            self.leasestub = aetcd.rpc.LeaseStub(self.channel)
            self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
            self._watcher = aetcd.watcher.Watcher(
                aetcd.rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata
            )
            self._connected.set()
        finally:
            self._is_connecting = False

    async def _token(self) -> tuple[tuple[str, str], ...] | None:
        """The `token` metadata of a fresh Authenticate (None without a user, or when
        the server's auth is off)."""
        if self._username is None:
            return None
        request = aetcd.rpc.AuthenticateRequest(name=self._username, password=self._password)
        try:
            response = await self.auth_stub.Authenticate(request)
        except grpc.aio.AioRpcError as err:
            if _AUTH_OFF in (err.details() or ""):
                logger.warning(
                    "etcd %s:%s has authentication off: connected without a token",
                    self._host,
                    self._port,
                )
                return None
            raise
        return (("token", str(response.token)),)

    async def reauthenticate(self, stale: Any, *, restart_watches: bool = False) -> None:
        """Take a new token, unless another call already replaced `stale` (the metadata
        the refused call carried). With `restart_watches`, also restart the watch stream
        on the new token (its watches end with an error)."""
        await self.connect()
        if self.metadata == stale:
            self.metadata = await self._token()
        if self._watcher is None:
            return
        self._watcher._metadata = self.metadata  # the next watch stream's token
        if restart_watches:
            await self._watcher._terminate_stream(
                errors.StoreUnavailableError("etcd watch: restarted with a new auth token")
            )

    async def count(self, key: bytes) -> Any:
        """A count of `key` alone: its response header carries the store's revision."""
        await self.connect()
        request = aetcd.rpc.RangeRequest(key=key, count_only=True)
        return await self.kvstub.Range(request, metadata=self.metadata)
