"""The resync comparison both ends make: what one side holds against the other's inventory.

At the start of every session one side sends an inventory (key, version, checksums) and
the other answers with what differs: the principal for a managed agent (it owns the
spec), the agent for an autonomous one (it owns everything). The comparison is the
same on both ends and pure, so it lives here, where both may import it, and is tested
without a stream.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from proto import _codec as codec
from proto.v1 import mooring_pb2 as pb

__all__ = ["Comparison", "Held", "compare"]


class Held(Protocol):
    """What one side holds of an object, as far as the comparison reads it."""

    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def checksum(self) -> str: ...
    @property
    def status_checksum(self) -> str: ...


H = TypeVar("H", bound=Held)


@dataclasses.dataclass(slots=True)
class Comparison(Generic[H]):
    send: list[H]  # ours, that the other side lacks or holds otherwise (tombstones it still has)
    same: list[H]  # ours, that the other side holds alike (and tombstones it never had)
    only_theirs: list[tuple[str, pb.InventoryItem]]  # (kind, item) of what we do not hold


def compare(
    ours: Iterable[H],
    theirs: Iterable[pb.InventoryItem],
    *,
    statuses: bool,
    deleted: Callable[[H], bool] = lambda _: False,
) -> Comparison[H]:
    """Sort `ours` against the other side's inventory.

    `statuses`: whether a different status checksum makes an object differ (the side
    that owns the status says so; a managed agent's statuses flow the other way).
    `deleted`: tells a tombstone (a deletion not yet delivered) from a live object; a
    tombstone is sent only while the other side still holds the object. Inventory items
    of a kind this end does not know are ignored.
    """
    held = {(codec.KIND_NAMES.get(i.key.kind, ""), i.key.name): i for i in theirs}
    out: Comparison[H] = Comparison([], [], [])
    for mine in ours:
        item = held.pop((mine.kind, mine.name), None)
        if deleted(mine):
            (out.same if item is None else out.send).append(mine)
        elif (
            item is None
            or item.checksum != mine.checksum
            or (statuses and item.status_checksum != mine.status_checksum)
        ):
            out.send.append(mine)
        else:
            out.same.append(mine)
    out.only_theirs = [(kind, item) for (kind, _), item in held.items() if kind]
    return out
