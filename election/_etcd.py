"""The etcd adapter: a thin, typed asyncio facade over etcd v3.

Reads, writes, revision-compared transactions and prefix watches, each call bounded by
a timeout and every client error mapped to `election._errors`. The rest of Mooring
talks to etcd through `EtcdKV` only. Its parts:

- election/_etcdurl.py: what an etcd URL names (members, TLS, user) and its files;
- election/_etcddial.py: the gRPC target, channel options and TLS credentials;
- election/_etcdclient.py: the one module that imports the etcd client (aetcd), made
  to dial TLS and to renew the user's token (why, and how watches renew theirs);
- election/_etcderrors.py: failures -> `election._errors`, secured refusals in one line.

A call that etcd refuses for a lapsed token takes a new token and is tried once more
within its timeout; a watch refused that way restarts the watch stream on a new token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

import grpc

from election import _errors as errors
from election import _etcdclient as etcdclient
from election import _etcddial as etcddial
from election import _etcderrors as etcderrors
from election import _etcdurl as etcdurl

__all__ = ["EtcdKV", "KeyValue", "WatchEvent", "WatchKind", "parse_endpoints"]

_ipv4_addresses = etcddial.ipv4_addresses  # the names these had here before
_loopback = etcddial.loopback


@dataclasses.dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    mod_revision: int
    create_revision: int
    version: int


class WatchKind(enum.Enum):
    PUT = "put"
    DELETE = "delete"


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    kind: WatchKind
    key: bytes
    value: bytes
    mod_revision: int


def parse_endpoints(url: str) -> list[str]:
    """`etcd[s]://h1:p1,h2:p2[?...]` (or a bare `h:p,...`) -> ["h1:p1", "h2:p2"];
    ValueError when malformed (election/_etcdurl.py)."""
    return list(etcdurl.parse(url).endpoints)


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=bytes(raw.key),
        value=bytes(raw.value),
        mod_revision=int(raw.mod_revision),
        create_revision=int(raw.create_revision),
        version=int(raw.version),
    )


class EtcdKV:
    """An etcd v3 connection over one or more endpoints (gRPC round-robin over ready ones).

    `url` (an EtcdURL) and `credentials` for a secured etcd: TLS and a user (`open`
    builds both from a URL string)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = 2.0,
        url: etcdurl.EtcdURL | None = None,
        credentials: etcdurl.Credentials | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.url = url or etcdurl.EtcdURL(endpoints=tuple(self.endpoints))
        credentials = credentials or etcdurl.Credentials()
        how = etcddial.dial(self.endpoints, url=self.url, credentials=credentials)
        self._client = etcdclient.Client(
            host=how.host,
            port=how.port,
            options=how.options,
            credentials=how.credentials,
            username=self.url.user,
            password=credentials.password,
        )

    @classmethod
    def open(cls, url: str, *, timeout: float, env: Mapping[str, str]) -> EtcdKV:
        """The connection `url` names (not yet connected); ValueError when it is malformed
        or a file it names cannot be read."""
        parsed = etcdurl.parse(url)
        return cls(
            parsed.endpoints,
            timeout=timeout,
            url=parsed,
            credentials=etcdurl.load(parsed, env=env),
        )

    def _mapped(self, err: BaseException, what: str) -> errors.CoordinationError:
        return etcderrors.mapped(err, what, url=self.url, endpoints=self.endpoints)

    async def __aenter__(self) -> EtcdKV:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            await asyncio.wait_for(self._client.connect(), self.timeout)
        except Exception as err:
            raise self._mapped(err, "connect") from err

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._client.close(), self.timeout)
        except Exception:  # closing must never raise
            pass

    async def _call(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()` within the timeout; once more on a new token if etcd refused ours."""
        try:
            async with asyncio.timeout(self.timeout):
                stale = self._client.metadata
                try:
                    return await call()
                except (etcdclient.ClientError, grpc.RpcError) as err:
                    if not etcderrors.token_rejected(err, url=self.url):
                        raise
                await self._client.reauthenticate(stale)
                return await call()
        except (etcdclient.ClientError, grpc.RpcError, TimeoutError, OSError) as err:
            raise self._mapped(err, what) from err

    async def get(self, key: bytes) -> KeyValue | None:
        got = await self._call("get", lambda: self._client.get(key))
        return None if got is None else _kv(got)

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """All keys under prefix and the store revision the read was served at."""
        got = await self._call("get_prefix", lambda: self._client.get_prefix(prefix))
        return [_kv(raw) for raw in got], int(got.header.revision)

    async def revision(self, key: bytes = b"\0") -> int:
        """The store's revision, as a count of `key` alone serves it (with etcd's auth,
        give a key the user may read)."""
        got = await self._call("revision", lambda: self._client.count(key))
        return int(got.header.revision)

    async def put(self, key: bytes, value: bytes) -> int:
        """Unconditional write; returns the new mod_revision."""
        put = await self._call("put", lambda: self._client.put(key, value))
        return int(put.header.revision)

    async def delete(self, key: bytes) -> bool:
        deleted = await self._call("delete", lambda: self._client.delete(key))
        return bool(deleted)

    async def txn(
        self,
        *,
        compare_mod: Sequence[tuple[bytes, int]] = (),
        puts: Sequence[tuple[bytes, bytes]] = (),
        deletes: Sequence[bytes] = (),
    ) -> int | None:
        """Apply puts/deletes iff every (key, mod_revision) still holds (0 = key absent).

        Returns the new store revision, or None when a comparison failed.
        """
        tx = self._client.transactions
        compares = [tx.mod(key) == rev for key, rev in compare_mod]
        ops = [tx.put(key, value) for key, value in puts] + [tx.delete(key) for key in deletes]
        ok, responses = await self._call(
            "txn",
            lambda: self._client.transaction(compare=compares, success=ops, failure=[]),
        )
        if not ok:
            return None
        for response in responses:
            kind = response.WhichOneof("response")
            if kind is not None:
                return int(getattr(response, kind).header.revision)
        touched = [key for key, _ in compare_mod] + [key for key, _ in puts] + list(deletes)
        return await self.revision(touched[0] if touched else b"\0")

    async def create(self, key: bytes, value: bytes) -> int | None:
        """Create key iff absent; returns its mod_revision, or None if it exists."""
        return await self.txn(compare_mod=[(key, 0)], puts=[(key, value)])

    async def update(self, key: bytes, value: bytes, *, mod_revision: int) -> int | None:
        """Compare-and-swap on mod_revision; returns the new mod_revision, or None on conflict."""
        return await self.txn(compare_mod=[(key, mod_revision)], puts=[(key, value)])

    async def delete_if(self, key: bytes, *, mod_revision: int) -> bool:
        return await self.txn(compare_mod=[(key, mod_revision)], deletes=[key]) is not None

    async def _watch(self, prefix: bytes, start_revision: int | None) -> Any:
        """A created watch; a refused one (id -1) once more on a new token and stream."""

        async def create() -> Any:
            return await self._client.watch_prefix(prefix, start_revision=start_revision)

        async with asyncio.timeout(self.timeout):
            stale = self._client.metadata
            watch = await create()
            if watch.watch_id != -1:
                return watch
            await watch.cancel()
            if self.url.user is not None:
                await self._client.reauthenticate(stale, restart_watches=True)
                watch = await create()
                if watch.watch_id != -1:
                    return watch
                await watch.cancel()
        reason = (
            etcderrors.explained("permission denied", url=self.url, endpoints=self.endpoints)
            if self.url.user
            else None
        )
        raise errors.StoreUnavailableError(
            reason or f"etcd watch {prefix!r}: refused by the server (permission denied?)"
        )

    async def watch_prefix(
        self, prefix: bytes, *, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Yield every change under prefix from start_revision (inclusive) on, in order.

        Raises CompactedError when start_revision is gone and StoreUnavailableError
        when the watch stream breaks; the caller re-lists and re-watches.
        """
        try:
            watch = await self._watch(prefix, start_revision)
        except errors.CoordinationError:
            raise
        except Exception as err:
            raise self._mapped(err, "watch") from err
        try:
            async for raw in watch:
                kind = WatchKind.DELETE if str(raw.kind) == "DELETE" else WatchKind.PUT
                yield WatchEvent(
                    kind=kind,
                    key=bytes(raw.kv.key),
                    value=bytes(raw.kv.value),
                    mod_revision=int(raw.kv.mod_revision),
                )
        except errors.CoordinationError:
            raise
        except Exception as err:
            raise self._mapped(err, "watch") from err
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), self.timeout)
            except Exception:
                pass
