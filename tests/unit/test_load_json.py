"""proto.objects.load_json: what the wire may carry as JSON."""

from __future__ import annotations

import pytest

from proto import objects


def test_ordinary_objects_decode() -> None:
    text = '{"spec": {"source": {"repoURL": "https://x", "helm": {"values": "a: [1, {b: 2}]"}}}}'
    assert objects.load_json(text, what="Application a")["spec"]["source"]["repoURL"] == "https://x"
    nested = "[" * objects.MAX_DEPTH + "]" * objects.MAX_DEPTH
    value = objects.load_json(nested, what="x")
    for _ in range(objects.MAX_DEPTH - 1):
        (value,) = value
    assert value == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"\\ud800"', "Application a holds text that is not valid Unicode"),
        ('{"k": ["ok", "\\udc00x"]}', "not valid Unicode"),
        ("[" * 100_000 + "]" * 100_000, "Application a is nested"),
        ("[" * (objects.MAX_DEPTH + 1) + "]" * (objects.MAX_DEPTH + 1), "nested deeper than"),
        ("{", "Application a is not JSON"),
    ],
)
def test_what_cannot_be_encoded_again_or_blows_the_stack_is_refused(
    text: str, message: str
) -> None:
    with pytest.raises(objects.InvalidObjectError, match=message):
        objects.load_json(text, what="Application a")
