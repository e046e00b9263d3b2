"""Fuzzing the JSON payload helpers both ends run on what arrives (proto.objects and
proto.codec): they answer with a value or their one documented error, never another
exception, and what they accept can always be encoded, checksummed and decoded again."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proto import codec, objects
from tests.fuzz import _budget as budget
from tests.fuzz import _strategies as strat

pytestmark = pytest.mark.fuzz


def _one_line(err: Exception) -> None:
    message = str(err)
    assert message and "\n" not in message and len(message) < 600, message


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend(
                (c, depth + 1) for c in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


@budget.fuzz_settings(2000)
@given(strat.json_texts)
@budget.counted
def test_load_json_gives_a_value_that_encodes_again_or_invalid_object(text: str) -> None:
    try:
        value = objects.load_json(text, what="status of Application a")
    except objects.InvalidObjectError as err:
        _one_line(err)
        assert str(err).startswith("status of Application a ")
        return
    assert _depth(value) <= objects.MAX_DEPTH
    again = codec.canonical_json(value)  # what the principal stores and checksums
    assert again.encode() and len(codec.checksum(value)) == (0 if value is None else 64)


@budget.fuzz_settings(1000)
@given(st.one_of(strat.text, strat.names, strat.almost_names, strat.values))
@example("a" * 253)
@example("a" * 254)
@example("a" * 64)
@budget.counted
def test_names_are_valid_or_invalid_object(name: Any) -> None:
    for check in (objects.validate_name, objects.validate_agent_name):
        try:
            assert check(name) == name
        except objects.InvalidObjectError as err:
            _one_line(err)
            continue
        assert isinstance(name, str) and 0 < len(name) <= 253 and name == name.lower()
        assert name.encode().isascii()


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    """Manifests that get past the first checks often: a supported kind and a name, then
    arbitrary metadata, spec and status (the rest as json_like draws it)."""
    meta = draw(
        st.fixed_dictionaries(
            {"name": strat.names | strat.almost_names},
            optional={
                "labels": st.dictionaries(strat.names | strat.text, strat.names | strat.leaves)
                | strat.values,
                "annotations": st.dictionaries(strat.names | strat.text, strat.text | strat.leaves)
                | strat.values,
                "finalizers": st.lists(strat.names | strat.text) | strat.values,
                "namespace": strat.values,
                "resourceVersion": strat.values,
            },
        )
    )
    doc = {"kind": draw(st.sampled_from([*objects.KINDS, "List"])), "metadata": meta}
    for field in ("spec", "status", "apiVersion"):
        if draw(st.booleans()):
            doc[field] = draw(strat.values | st.just(objects.API_VERSION))
    return doc


@budget.fuzz_settings(1500)
@given(manifests() | strat.values)
@budget.counted
def test_manifests_are_valid_or_invalid_object_and_valid_ones_travel(doc: Any) -> None:
    for need_spec in (True, False):
        try:
            kind, name = objects.validate_manifest(doc, need_spec=need_spec)
        except objects.InvalidObjectError as err:
            _one_line(err)
            continue
        assert kind in objects.KINDS and objects.validate_name(name, kind=kind) == name
        # What travels (the synced part with the status, as an autonomous agent sends
        # it) is what the other end decodes, and it has a checksum.
        wire = {**objects.synced_object(doc), "status": doc.get("status")}
        assert objects.load_json(codec.canonical_json(wire), what="x") == wire or _has_nan(wire)
        assert len(codec.checksum(objects.synced_object(doc))) == 64


def _has_nan(value: Any) -> bool:
    return "NaN" in codec.canonical_json(value)


@budget.fuzz_settings(800)
@given(strat.json_texts)
@budget.counted
def test_synced_object_of_what_arrives_raises_only_what_the_principal_catches(text: str) -> None:
    """The principal takes an autonomous agent's object through load_json, synced_object
    and validate_manifest; it answers AttributeError from synced_object (a non-object) as
    "not a JSON object"."""
    try:
        doc = objects.load_json(text, what="x")
    except objects.InvalidObjectError:
        return
    try:
        synced = objects.synced_object(doc)
    except AttributeError:
        return
    assert set(synced) == {"metadata", "spec"}
    codec.checksum(synced)


@budget.fuzz_settings(700)
@given(strat.json_like(max_leaves=40), st.randoms())
@budget.counted
def test_checksums_ignore_key_order_and_never_raise_on_what_load_json_gives(
    value: Any, rnd: Any
) -> None:
    def shuffled(item: Any) -> Any:
        if isinstance(item, dict):
            pairs = list(item.items())
            rnd.shuffle(pairs)
            return {k: shuffled(v) for k, v in pairs}
        if isinstance(item, list):
            return [shuffled(v) for v in item]
        return item

    try:  # only what the wire can carry
        value = objects.load_json(json.dumps(value, ensure_ascii=False), what="x")
    except (objects.InvalidObjectError, ValueError):  # ValueError: a 4000-digit int
        return
    assert codec.checksum(value) == codec.checksum(shuffled(value))
    assert len(codec.checksum(value)) == (0 if value is None else 64)
