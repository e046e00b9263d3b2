"""Who serves which agent: the seam between sessions and the shard map.

A replica asks `route(agent)` on every hello; `principal._sharding.Sharding` answers
from the published shard map and the registered-agent list.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from proto import pb

__all__ = ["Ownership", "Route", "redirect"]


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

    def successor(self, agent: str, *, standin_for: str = "") -> str:
        """The endpoint `agent`, served here, should try first if this replica stops
        answering ("" when there is none to name)."""
        ...

    async def catch_up(self, epoch: int) -> None:
        """Return once a map of at least `epoch` is applied here (bound it with a timeout)."""
        ...


def redirect(route: Route, *, reason: str) -> pb.Envelope:
    """The envelope that sends an agent where `route` points."""
    return pb.Envelope(
        redirect=pb.Redirect(
            owner_endpoint=route.owner_endpoint,
            owner_replica_id=route.owner_id,
            epoch=route.epoch,
            reason=reason,
        )
    )
