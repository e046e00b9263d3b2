"""What a session's sync strategy is given, and what it must provide.

A session syncs in one of two ways, one class each: `principal._managed` (the hub owns
the spec and pushes it) and `principal._autonomous` (the agent owns it and the hub
mirrors it). The live session loop (`principal._stream`) knows neither: it hands the
strategy a `Link` (the few things a strategy may do with its session) and routes the
agent's resource events and status updates to it. No mode test lives anywhere else.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol, TypeVar

from principal import _dispatch as dispatch
from principal import _hub as hub
from principal import _metrics as metrics
from principal._session import Session, SessionSettings
from proto import codec, objects, pb

__all__ = ["Link", "Strategy", "key", "resource_kind", "upsert_event"]

T = TypeVar("T")


class Link(Protocol):
    """One session, as its strategy sees it."""

    @property
    def session(self) -> Session: ...
    @property
    def store(self) -> hub.HubStore: ...
    @property
    def dispatcher(self) -> dispatch.Dispatcher: ...
    @property
    def metrics(self) -> metrics.PrincipalMetrics: ...
    @property
    def settings(self) -> SessionSettings: ...

    def send(self, envelope: pb.Envelope) -> None:
        """Queue an envelope for the agent (the session closes itself when it falls too far
        behind)."""
        ...

    def ack(self, seq: int, *, error: str = "") -> None:
        """Answer the agent's envelope `seq`: taken, or refused with a one-line `error`."""
        ...

    async def store_call(self, call: Awaitable[T]) -> T:
        """Await a hub-store call; an unavailable store ends the session (Rejection `store`),
        so the agent retries through a resync and nothing is acknowledged unwritten."""
        ...

    def fields(self, **more: Any) -> dict[str, Any]:
        """Log fields naming the agent, this replica and the session, plus `more`."""
        ...


class Strategy(Protocol):
    """A session's sync, managed or autonomous."""

    async def run(self) -> None:
        """The mode's own task for the whole session: the initial resync, then following
        the hub's changes for this agent. Returns (or raises) only when the session ends."""
        ...

    async def on_event(self, envelope: pb.Envelope) -> None:
        """The agent sent a resource event: take it and ack it, or refuse it in the ack."""
        ...

    async def on_status(self, envelope: pb.Envelope) -> None:
        """The agent sent a status update: take it and ack it, or refuse it in the ack."""
        ...


def key(kind: str, name: str) -> pb.ResourceKey:
    return pb.ResourceKey(kind=codec.kind_from_name(kind), name=name)


def upsert_event(resource: hub.Resource) -> pb.ResourceEvent:
    return pb.ResourceEvent(
        key=key(resource.kind, resource.name),
        operation=pb.OPERATION_UPSERT,
        version=resource.version,
        checksum=resource.checksum,
        object_json=codec.canonical_json(resource.object),
    )


def resource_kind(link: Link, seq: int, resource: pb.ResourceKey, *, what: str) -> str | None:
    """The kind a key from the agent names, once its name is a valid one; None (and the
    envelope refused in its ack) when the key is not one of a resource."""
    kind = codec.KIND_NAMES.get(resource.kind)
    if kind is None or not resource.name:
        link.ack(seq, error=f"{what} without a valid resource key")
        return None
    try:
        objects.validate_name(resource.name, kind=kind)
    except objects.InvalidObjectError as err:
        link.ack(seq, error=str(err))
        return None
    return kind
