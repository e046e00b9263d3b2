"""The hub store on etcd (`principal._hub.HubStore`): agent registry, desired state,
status, mirrors. The embedded default of `mooring up`.

`EtcdHubStore` puts together its parts, each over one `election.etcd.EtcdKV`:
principal/_etcdkeys.py (the key layout, documented there, and how values are written),
_etcdagents.py (the registry), _etcdresources.py (desired resources, mirrors, the
change feed), _etcdreports.py (status and deliveries), _etcdrevocations.py.

Cursors are etcd revisions; a managed resource's version is its key's mod_revision,
a delete's version the revision of the delete.

The etcd layer's errors (`election.errors`: etcd's own are mapped there) become
`StoreError` here, once, as they leave a method of the store (`_mapped`, `_store_error`),
so callers catch the hub store's errors only. The parts let them through.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, ParamSpec, TypeVar

from election import errors as cerrors
from election import etcd
from principal import _etcdagents as etcdagents
from principal import _etcdkeys as etcdkeys
from principal import _etcdreports as etcdreports
from principal import _etcdresources as etcdresources
from principal import _etcdrevocations as etcdrevocations
from principal import _hub as hub

__all__ = ["EtcdHubStore"]

P = ParamSpec("P")
T = TypeVar("T")


def _store_error(err: cerrors.CoordinationError, what: str = "") -> hub.StoreError:
    """The StoreError that an error of the etcd layer is to a caller of the hub store."""
    return hub.StoreError(f"{what}: {err}" if what else str(err))


def _mapped(
    what: str = "",
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """A method of the store whose etcd-layer errors leave it as `_store_error(err, what)`."""

    def decorate(
        method: Callable[P, Coroutine[Any, Any, T]],
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(method)
        async def mapped(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return await method(*args, **kwargs)
            except cerrors.CoordinationError as err:
                raise _store_error(err, what) from err

        return mapped

    return decorate


async def _mapped_feed(feed: AsyncGenerator[T, None], what: str) -> AsyncIterator[T]:
    """`feed`, whose etcd-layer errors leave it as `_store_error(err, what)`."""
    try:
        async with contextlib.aclosing(feed):
            async for item in feed:
                yield item
    except cerrors.CoordinationError as err:
        raise _store_error(err, what) from err


class EtcdHubStore:
    """Mooring's keys on etcd, as a `HubStore`."""

    def __init__(self, kv: etcd.EtcdKV, *, root: str = "/mooring/") -> None:
        self.kv = kv
        self.keys = etcdkeys.Keys(root)
        self.root = self.keys.root
        self.resources = etcdresources.EtcdResources(kv, self.keys)
        self.agents = etcdagents.EtcdAgents(kv, self.keys, resources=self.resources)
        self.reports = etcdreports.EtcdReports(kv, self.keys)
        self.revocations = etcdrevocations.EtcdRevocations(kv, self.keys)

    @_mapped()
    async def connect(self) -> None:
        await self.kv.connect()  # with an etcd user: authenticates

    async def close(self) -> None:
        await self.kv.close()

    def _app_key(self, agent: str, kind: str, name: str) -> bytes:
        return self.keys.app(agent, kind, name)  # tests write around Mooring with it

    # --- registry ---------------------------------------------------------------
    @_mapped()
    async def get_agent(self, name: str, *, cached: bool = False) -> hub.AgentRecord | None:
        return await self.agents.get_agent(name, cached=cached)

    @_mapped()
    async def list_agents(self) -> list[hub.AgentRecord]:
        return await self.agents.list_agents()

    @_mapped()
    async def register_agent(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord:
        """Register name with mode; idempotent; ModeConflictError if known with another mode."""
        return await self.agents.register_agent(name, mode=mode)

    @_mapped()
    async def set_agent_mode(self, name: str, *, mode: hub.Mode) -> hub.AgentRecord | None:
        return await self.agents.set_agent_mode(name, mode=mode)

    @_mapped()
    async def delete_agent(self, name: str, *, cascade: bool = False) -> list[hub.Resource] | None:
        return await self.agents.delete_agent(name, cascade=cascade)

    def watch_agents(self) -> AsyncIterator[frozenset[str]]:
        return _mapped_feed(self.agents.watch_agents(), "agent registry watch on etcd")

    # --- resources --------------------------------------------------------------
    @_mapped()
    async def list_resources(self, agent: str) -> tuple[list[hub.Resource], hub.Cursor]:
        """The agent's resources and the store revision they were read at."""
        return await self.resources.list_resources(agent)

    @_mapped()
    async def get_resource(self, agent: str, kind: str, name: str) -> hub.Resource | None:
        return await self.resources.get_resource(agent, kind, name)

    @_mapped()
    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[hub.Resource, bool]:
        """Write a managed agent's desired resource from a manifest; (resource, changed)."""
        return await self.resources.apply_desired(agent, doc)

    @_mapped()
    async def delete_desired(self, agent: str, kind: str, name: str) -> bool:
        return await self.resources.delete_desired(agent, kind, name)

    @_mapped()
    async def mirror_upsert(
        self,
        agent: str,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        status: Mapping[str, Any] | None,
    ) -> hub.MirrorWrite:
        """Mirror an autonomous agent's resource ("created", "updated", or "": not newer)."""
        return await self.resources.mirror_upsert(
            agent, kind, name, obj=obj, version=version, status=status
        )

    @_mapped()
    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        return await self.resources.mirror_delete(agent, kind, name, version=version)

    # --- status of managed resources ----------------------------------------------
    @_mapped()
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        return await self.reports.put_status(
            agent, kind, name, status=status, spec_version=spec_version
        )

    @_mapped()
    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        await self.reports.record_refusal(agent, kind, name, message=message)

    @_mapped()
    async def list_status(self, agent: str) -> dict[tuple[str, str], dict[str, Any]]:
        return await self.reports.list_status(agent)

    # --- what agents acknowledged ---------------------------------------------------
    @_mapped()
    async def put_deliveries(
        self, agent: str, deliveries: Mapping[tuple[str, str], hub.Delivery | None]
    ) -> None:
        await self.reports.put_deliveries(agent, deliveries)

    @_mapped()
    async def list_deliveries(self, agent: str) -> dict[tuple[str, str], hub.Delivery]:
        return await self.reports.list_deliveries(agent)

    # --- certificate revocation ---------------------------------------------------------
    @_mapped()
    async def revoke(
        self, *, serial: str = "", fingerprint: str = "", reason: str = "", agent: str = ""
    ) -> tuple[hub.Revocation, bool]:
        entry = hub.new_revocation(
            serial=serial, fingerprint=fingerprint, reason=reason, agent=agent
        )
        return await self.revocations.revoke(entry)

    @_mapped("revocation list on etcd")
    async def list_revocations(self) -> list[hub.Revocation]:
        return await self.revocations.list_revocations()

    def watch_revocations(self) -> AsyncIterator[list[hub.Revocation]]:
        feed = self.revocations.watch_revocations()
        return _mapped_feed(feed, "revocation list watch on etcd")

    # --- the change feed ----------------------------------------------------------------
    @_mapped("etcd revision")
    async def cursor(self) -> hub.Cursor:
        # A key under the root: an etcd user may be allowed no other (etcd's auth).
        return hub.Cursor(await self.kv.revision(self.keys.agents_prefix))

    async def watch_resources(self, *, after: hub.Cursor) -> AsyncIterator[hub.Change]:
        feed = self.resources.watch_resources(after=after)
        try:
            async with contextlib.aclosing(feed):
                async for change in feed:
                    yield change
        except cerrors.CompactedError as err:
            raise hub.HistoryLostError(
                f"etcd compacted the changes after revision {after}: {err}",
                resume=hub.Cursor(err.compacted_revision - 1),
            ) from err
        except cerrors.CoordinationError as err:
            raise _store_error(err, "resource watch on etcd") from err
