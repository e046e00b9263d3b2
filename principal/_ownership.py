"""Who serves which agent: the seam between sessions and the shard map.

A replica asks `route(agent)` on every hello. With one replica it always serves;
the HA cluster plugs in an implementation backed by the published shard map.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from proto import pb

__all__ = ["Ownership", "Route", "SingleReplica", "redirect"]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    serve: bool
    epoch: int
    owner_id: str = ""
    owner_endpoint: str = ""


class Ownership(Protocol):
    def route(self, agent: str) -> Route: ...

    def standin(self, agent: str, *, unreachable: str) -> Route:
        """Where an agent that cannot reach `unreachable` (its owner) should be served."""
        ...


class SingleReplica:
    """Ownership of a one-replica principal: every agent is ours, epoch 0."""

    def __init__(self, replica_id: str) -> None:
        self.replica_id = replica_id

    def route(self, agent: str) -> Route:
        return Route(serve=True, epoch=0, owner_id=self.replica_id)

    def standin(self, agent: str, *, unreachable: str) -> Route:
        return self.route(agent)


def redirect(*, owner_id: str, endpoint: str, epoch: int, reason: str) -> pb.Envelope:
    """The envelope that sends an agent to its owner replica."""
    return pb.Envelope(
        redirect=pb.Redirect(
            owner_endpoint=endpoint, owner_replica_id=owner_id, epoch=epoch, reason=reason
        )
    )
