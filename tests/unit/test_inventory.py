"""The resync comparison both ends share (proto._inventory)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proto import _inventory as inventory
from proto import pb

pytestmark = pytest.mark.unit


@dataclasses.dataclass(frozen=True)
class Row:
    kind: str
    name: str
    checksum: str
    status_checksum: str = ""
    deleted: bool = False


def _item(
    kind: pb.Kind, name: str, checksum: str, status: str = "", version: int = 1
) -> pb.InventoryItem:
    return pb.InventoryItem(
        key=pb.ResourceKey(kind=kind, name=name),
        version=version,
        checksum=checksum,
        status_checksum=status,
    )


APP, PROJECT = pb.KIND_APPLICATION, pb.KIND_APP_PROJECT


def test_each_object_lands_in_exactly_one_answer() -> None:
    ours = [
        Row("Application", "same", "c1", "s1"),
        Row("Application", "changed", "c2"),
        Row("Application", "new", "c3"),
        Row("AppProject", "same", "c4"),  # the same name as an Application: another object
        Row("Application", "status-only", "c5", "s-new"),
    ]
    theirs = [
        _item(APP, "same", "c1", "s1"),
        _item(APP, "changed", "old"),
        _item(PROJECT, "same", "c4"),
        _item(APP, "status-only", "c5", "s-old"),
        _item(APP, "gone", "c6", version=9),
        _item(pb.KIND_UNSPECIFIED, "nameless-kind", "c7"),  # not ours to judge: ignored
    ]
    by_spec = inventory.compare(ours, theirs, statuses=False)
    assert [r.name for r in by_spec.send] == ["changed", "new"]
    assert [(r.kind, r.name) for r in by_spec.same] == [
        ("Application", "same"),
        ("AppProject", "same"),
        ("Application", "status-only"),
    ]
    assert [(kind, i.key.name, i.version) for kind, i in by_spec.only_theirs] == [
        ("Application", "gone", 9)
    ]
    # The side that owns statuses also sends what differs only in its status.
    with_status = inventory.compare(ours, theirs, statuses=True)
    assert [r.name for r in with_status.send] == ["changed", "new", "status-only"]


def test_a_tombstone_is_sent_only_while_the_other_side_still_holds_the_object() -> None:
    ours = [
        Row("Application", "held", "", deleted=True),
        Row("Application", "gone", "", deleted=True),
    ]
    theirs = [_item(APP, "held", "c1")]
    diff = inventory.compare(ours, theirs, statuses=True, deleted=lambda r: r.deleted)
    assert [r.name for r in diff.send] == ["held"]
    assert [r.name for r in diff.same] == ["gone"]
    assert diff.only_theirs == []


names = st.sampled_from(["a", "b", "c", "d"])
kinds = st.sampled_from([("Application", APP), ("AppProject", PROJECT)])
checksums = st.sampled_from(["x", "y"])


@given(
    ours=st.dictionaries(st.tuples(kinds, names), st.tuples(checksums, st.booleans())),
    theirs=st.dictionaries(st.tuples(kinds, names), checksums),
)
def test_after_the_answer_both_sides_hold_the_same(
    ours: dict[tuple[tuple[str, pb.Kind], str], tuple[str, bool]],
    theirs: dict[tuple[tuple[str, pb.Kind], str], str],
) -> None:
    """Apply the answer to the other side as it would be: sent objects overwrite (sent
    tombstones delete), what only it holds is deleted; it then holds exactly our live set."""
    rows = [Row(k[0], n, c, deleted=d) for (k, n), (c, d) in ours.items()]
    items = [_item(k[1], n, c) for (k, n), c in theirs.items()]
    diff = inventory.compare(rows, items, statuses=False, deleted=lambda r: r.deleted)
    assert len(diff.send) + len(diff.same) == len(rows)
    after = {(k[0], n): c for (k, n), c in theirs.items()}
    for row in diff.send:
        if row.deleted:
            del after[(row.kind, row.name)]
        else:
            after[(row.kind, row.name)] = row.checksum
    for kind, item in diff.only_theirs:
        del after[(kind, item.key.name)]
    assert after == {(r.kind, r.name): r.checksum for r in rows if not r.deleted}
