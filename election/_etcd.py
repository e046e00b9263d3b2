"""The one module that imports the etcd client (aetcd).

A thin, typed asyncio facade over etcd v3: reads, writes, revision-compared
transactions and prefix watches, each call bounded by a timeout and every
client error mapped to `election._errors`. Swap the client here and nowhere else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aetcd
import aetcd.exceptions
import grpc

from election import _errors as errors

__all__ = ["EtcdKV", "KeyValue", "WatchEvent", "WatchKind", "parse_endpoints"]


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
    """`etcd://h1:p1,h2:p2` (or a bare `h:p,...`) -> ["h1:p1", "h2:p2"]; ValueError when malformed."""
    body = url.removeprefix("etcd://").strip().strip("/")
    endpoints = [part.strip() for part in body.split(",") if part.strip()]
    if not endpoints:
        raise ValueError(f"no etcd endpoints in {url!r}; expected etcd://HOST:PORT[,HOST:PORT...]")
    for endpoint in endpoints:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {endpoint!r}; expected HOST:PORT")
    return endpoints


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=bytes(raw.key),
        value=bytes(raw.value),
        mod_revision=int(raw.mod_revision),
        create_revision=int(raw.create_revision),
        version=int(raw.version),
    )


def _mapped(err: BaseException, what: str) -> errors.CoordinationError:
    if isinstance(err, aetcd.exceptions.RevisionCompactedError):
        return errors.CompactedError(
            f"etcd {what}: {err}", compacted_revision=int(err.compacted_revision)
        )
    if isinstance(err, TimeoutError | asyncio.TimeoutError):
        return errors.StoreUnavailableError(f"etcd {what}: timed out")
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return errors.StoreUnavailableError(f"etcd {what}: {detail}")


class EtcdKV:
    """An etcd v3 connection over one or more endpoints (gRPC round-robin over ready ones)."""

    def __init__(self, endpoints: Sequence[str], *, timeout: float = 2.0) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        # aetcd builds its gRPC target as f"{host}:{port}". Several members become one
        # `ipv4:` target listing every address (names resolved here), so gRPC itself
        # skips a dead member.
        if len(self.endpoints) > 1:
            addresses = _ipv4_addresses(self.endpoints)
            head, _, last_port = ",".join(addresses).rpartition(":")
            host = f"ipv4:{head}"
        else:
            host, _, last_port = self.endpoints[0].rpartition(":")
        options = {
            "grpc.lb_policy_name": "round_robin",
            "grpc.keepalive_time_ms": 5_000,
            "grpc.keepalive_timeout_ms": 2_000,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.initial_reconnect_backoff_ms": 100,
            "grpc.max_reconnect_backoff_ms": 1_000,
        }
        self._client = aetcd.Client(host=host, port=int(last_port), timeout=None, options=options)

    async def __aenter__(self) -> EtcdKV:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        try:
            await asyncio.wait_for(self._client.connect(), self.timeout)
        except Exception as err:
            raise _mapped(err, "connect") from err

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._client.close(), self.timeout)
        except Exception:  # closing must never raise
            pass

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await asyncio.wait_for(coro, self.timeout)
        except errors.CoordinationError:
            raise
        except (aetcd.exceptions.ClientError, grpc.RpcError, TimeoutError, OSError) as err:
            raise _mapped(err, what) from err

    async def get(self, key: bytes) -> KeyValue | None:
        got = await self._call("get", self._client.get(key))
        return None if got is None else _kv(got)

    async def get_prefix(self, prefix: bytes) -> tuple[list[KeyValue], int]:
        """All keys under prefix and the store revision the read was served at."""
        got = await self._call("get_prefix", self._client.get_prefix(prefix))
        return [_kv(raw) for raw in got], int(got.header.revision)

    async def revision(self) -> int:
        got = await self._call("revision", self._client.get_prefix(b"\0", keys_only=True))
        return int(got.header.revision)

    async def put(self, key: bytes, value: bytes) -> int:
        """Unconditional write; returns the new mod_revision."""
        put = await self._call("put", self._client.put(key, value))
        return int(put.header.revision)

    async def delete(self, key: bytes) -> bool:
        deleted = await self._call("delete", self._client.delete(key))
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
            "txn", self._client.transaction(compare=compares, success=ops, failure=[])
        )
        if not ok:
            return None
        for response in responses:
            kind = response.WhichOneof("response")
            if kind is not None:
                return int(getattr(response, kind).header.revision)
        return await self.revision()

    async def create(self, key: bytes, value: bytes) -> int | None:
        """Create key iff absent; returns its mod_revision, or None if it exists."""
        return await self.txn(compare_mod=[(key, 0)], puts=[(key, value)])

    async def update(self, key: bytes, value: bytes, *, mod_revision: int) -> int | None:
        """Compare-and-swap on mod_revision; returns the new mod_revision, or None on conflict."""
        return await self.txn(compare_mod=[(key, mod_revision)], puts=[(key, value)])

    async def delete_if(self, key: bytes, *, mod_revision: int) -> bool:
        return await self.txn(compare_mod=[(key, mod_revision)], deletes=[key]) is not None

    async def watch_prefix(
        self, prefix: bytes, *, start_revision: int | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Yield every change under prefix from start_revision (inclusive) on, in order.

        Raises CompactedError when start_revision is gone and StoreUnavailableError
        when the watch stream breaks; the caller re-lists and re-watches.
        """
        try:
            watch = await asyncio.wait_for(
                self._client.watch_prefix(prefix, start_revision=start_revision), self.timeout
            )
        except Exception as err:
            raise _mapped(err, "watch") from err
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
            raise _mapped(err, "watch") from err
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), self.timeout)
            except Exception:
                pass


def _ipv4_addresses(endpoints: Sequence[str]) -> list[str]:
    """HOST:PORT endpoints as IPv4 ADDRESS:PORT, resolving names; ValueError if one fails."""
    import socket

    out: list[str] = []
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        try:
            infos = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_STREAM)
        except OSError as err:
            raise ValueError(f"cannot resolve etcd endpoint {endpoint!r}: {err}") from None
        out.extend(f"{info[4][0]}:{port}" for info in infos)
    return list(dict.fromkeys(out))
