"""What the fuzz targets found, one plain test each, with the smallest input that showed
it. (The session targets keep theirs as `@example`s; these inputs nest too deep for
hypothesis to print.)"""

from __future__ import annotations

from typing import Any

import pytest

from agent import _store as store
from principal import _hub as hub
from proto import objects


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def app(**fields: Any) -> dict[str, Any]:
    return {"kind": "Application", "metadata": {"name": "a"}, "spec": {}, **fields}


def test_a_spec_deeper_than_the_wire_allows_is_refused() -> None:
    """Accepted, its synced object (101 levels) was refused by the agent's load_json at
    every resync, forever."""
    with pytest.raises(objects.InvalidObjectError, match="Application a is nested deeper than 100"):
        objects.validate_manifest(app(spec={"k": _nested(99)}))
    assert objects.validate_manifest(app(spec={"k": _nested(98)})) == ("Application", "a")


def test_a_spec_deeper_than_the_json_encoder_goes_is_refused() -> None:
    """RecursionError from json.dumps, not InvalidObjectError."""
    with pytest.raises(objects.InvalidObjectError, match="nested deeper than"):
        objects.validate_manifest(app(spec={"k": _nested(3000)}))


def test_a_value_too_long_to_show_or_to_write_is_refused() -> None:
    """ValueError or RecursionError from repr() in the error message (an int of more than
    4300 digits, a label nested 3000 deep), ValueError from the agent store's
    canonical_json (such an int in the status)."""
    shown = "'<int too long to show>'"
    with pytest.raises(objects.InvalidObjectError, match=f"unsupported apiVersion {shown}"):
        objects.validate_manifest(app(apiVersion=10**4300))
    with pytest.raises(objects.InvalidObjectError, match="invalid value '<list too long to show>'"):
        objects.validate_manifest(app(metadata={"name": "a", "labels": {"k": _nested(3000)}}))
    with pytest.raises(objects.InvalidObjectError, match="not representable as JSON"):
        objects.validate_manifest(app(status={"n": 10**4300}))


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"s": "\ud800"}, "Application a holds text that is not valid Unicode"),
        ([1], "Application a: status must be a map"),
    ],
)
def test_an_agents_local_status_must_be_a_map_of_valid_text(status: Any, message: str) -> None:
    """A lone surrogate failed the autonomous agent store's checksum (UnicodeEncodeError);
    a list was stored, and the principal refuses anything but a map."""
    agent_store = store.AgentStore(":memory:", mode="autonomous")
    with pytest.raises(store.LocalStoreError, match=message):
        agent_store.apply_local(app(status=status))


@pytest.mark.parametrize("status", [[1, 2], "text", 5, {"conditions": 5}, {"conditions": "ab"}])
def test_a_refusal_is_noted_over_any_stored_status(status: Any) -> None:
    """Statuses that are JSON but no map (older replicas stored them) made the store's
    record_refusal raise TypeError/ValueError, ending the session UNKNOWN."""
    updated = hub.refusal_conditions(status, "the apiserver said no")
    (condition,) = updated["conditions"]
    assert condition["type"] == hub.REFUSED_CONDITION
    assert condition["message"] == "the apiserver said no"
