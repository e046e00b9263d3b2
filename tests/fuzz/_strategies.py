"""Hypothesis strategies shared by the fuzz targets: JSON-like values and texts that
are hard on decoders, resource keys and bodies, and whole wire envelopes."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from proto import objects, pb

# Text that is hard on decoders: lone surrogates, NUL, non-characters, combining and
# right-to-left marks, astral characters, newlines and quotes.
HARD_CHARS = st.sampled_from(
    ["\ud800", "\udfff", "\x00", "\ufffe", "\uffff", "\u0301", "\u202e", "\U0001f600", "\n", '"']
)
characters = st.characters(exclude_categories=()) | HARD_CHARS  # surrogates included
text = st.text(characters, max_size=16)
names = st.sampled_from(["app-1", "proj-1", "a", "a.b", "x" * 253, "x" * 254]) | st.text(
    "ab9-.", min_size=1, max_size=8
)  # mostly valid DNS names: the validators' interesting cases lie just past them
almost_names = names.map(lambda n: n + "-") | names.map(str.upper) | text
numbers = (
    st.integers(min_value=-(10**40), max_value=10**40)
    | st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1])
    | st.integers(4295, 4305).map(lambda digits: 10**digits)  # about Python's str() limit
    | st.floats()  # NaN and infinities included: not JSON, but Python's json writes them
)
leaves = st.none() | st.booleans() | numbers | text | names


def json_like(*, max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Values of maps (with text keys), lists and leaves, as json.loads would give."""
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=5) | st.dictionaries(text | names, inner, max_size=5)
        ),
        max_leaves=max_leaves,
    )


class _Short:
    """A deeply nested value whose repr stays short (hypothesis prints failing examples,
    and its printer recurses as deep as the value goes)."""

    depth = 0

    def __repr__(self) -> str:
        return f"<{self.depth} levels of nested maps and lists>"


class NestedList(_Short, list):  # type: ignore[type-arg]
    pass


class NestedMap(_Short, dict):  # type: ignore[type-arg]
    pass


@st.composite
def deep(draw: st.DrawFn) -> Any:
    """A value nested about MAX_DEPTH levels, or far more (past the json module's stack)."""
    depth = draw(st.integers(objects.MAX_DEPTH - 3, objects.MAX_DEPTH + 3) | st.integers(1, 2000))
    shape = draw(st.sampled_from(["maps", "lists", "both"]))
    value: Any = draw(leaves)
    for level in range(depth - 1):
        maps = shape == "maps" or (shape == "both" and level % 2)
        value = {"k": value} if maps else [value]
    top = NestedMap(k=value) if shape == "maps" else NestedList([value])
    top.depth = depth
    return top


values = json_like() | deep()


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):  # a 4000-digit int, or deeper than json's stack
        return "[]"


@st.composite
def mutated(draw: st.DrawFn, source: st.SearchStrategy[str]) -> str:
    """`source` with a few characters deleted, replaced or inserted (often no longer JSON)."""
    chars = list(draw(source))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(chars)))
        op = draw(st.sampled_from(["delete", "replace", "insert"]))
        new = draw(characters | st.sampled_from(list('{}[],:"\\0.e-')))
        if op == "delete" and at < len(chars):
            del chars[at]
        elif op == "replace" and at < len(chars):
            chars[at] = new
        else:
            chars.insert(at, new)
    return "".join(chars)


json_texts = (
    values.map(_dumps)
    | mutated(values.map(_dumps))
    | st.integers(0, 6000).map(lambda n: "1" * n or "0")  # past Python's 4300-digit limit
    | st.sampled_from(["NaN", "-Infinity", "1e99999", "-0", '"\\ud800"', '{"a":1,"a":2}', ""])
    | st.integers(0, 5000).map(lambda n: "[" * n + "]" * n)
    | st.integers(0, 5000).map(lambda n: '{"a":' * n + "1" + "}" * n)
    | text
)

# ------------------------------------------------------------------------ the wire
kinds = st.sampled_from([pb.KIND_UNSPECIFIED, pb.KIND_APPLICATION, pb.KIND_APP_PROJECT]) | (
    st.integers(-(2**31), 2**31 - 1)  # open enums: any int32 is on the wire
)
uint64 = st.sampled_from([0, 1, 2, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
uint32 = st.sampled_from([0, 1, 2, 2**32 - 1]) | st.integers(0, 2**32 - 1)


def _valid_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


# Protobuf strings must be valid UTF-8: a lone surrogate cannot even be serialized.
wire_text = text.filter(_valid_text)
wire_names = (names | almost_names).filter(_valid_text)
wire_keys = st.builds(pb.ResourceKey, kind=kinds, name=wire_names)
wire_json = json_texts.filter(_valid_text)
inventory = st.lists(
    st.builds(pb.InventoryItem, key=wire_keys, version=uint64, checksum=wire_text), max_size=3
)
hellos = st.builds(
    pb.Hello,
    agent_name=wire_text,
    mode=st.integers(-2, 3),
    agent_version=wire_text,
    min_protocol=uint32,
    max_protocol=uint32,
    inventory=inventory,
    known_epoch=uint64,
    redirect_hops=uint32,
    unreachable_owner=wire_text,
)
events = st.builds(
    pb.ResourceEvent,
    key=wire_keys,
    operation=st.integers(-1, 3),
    version=uint64,
    checksum=wire_text,
    object_json=wire_json,
)
statuses = st.builds(
    pb.StatusUpdate, key=wire_keys, version=uint64, status_json=wire_json, status_checksum=wire_text
)
acks = st.builds(pb.Ack, seq=uint64 | st.integers(0, 8), ok=st.booleans(), error=wire_text)


def _envelope(seq: int, field: str, body: Any) -> pb.Envelope:
    envelope = pb.Envelope(seq=seq)
    getattr(envelope, field).CopyFrom(body)
    return envelope


BODIES: dict[str, st.SearchStrategy[Any]] = {
    "hello": hellos,
    "welcome": st.builds(pb.Welcome, replica_id=wire_text, epoch=uint64),
    "redirect": st.builds(pb.Redirect, owner_endpoint=wire_text, epoch=uint64),
    "event": events,
    "status": statuses,
    "ack": acks,
    "resync_request": st.builds(pb.ResyncRequest, inventory=inventory),
    "resync_done": st.builds(pb.ResyncDone, sent=uint64),
    "heartbeat": st.builds(pb.Heartbeat, sent_unix_ms=uint64, standby_endpoint=wire_text),
    "goodbye": st.builds(pb.Goodbye, reason=wire_text),
}
envelopes = st.one_of(
    [st.builds(_envelope, uint64, st.just(field), body) for field, body in BODIES.items()]
    + [st.builds(pb.Envelope, seq=uint64)]  # no body at all
)

# ------------------------------------------------------- what an agent sends in a session
# Mostly well-formed, on a few resources, so that sequences revisit the same objects; the
# rest is what the strategies above draw.
RESOURCES = ("app-1", "app-2", "proj-1")
session_keys = st.builds(
    pb.ResourceKey,
    kind=st.sampled_from([pb.KIND_APPLICATION, pb.KIND_APP_PROJECT]) | kinds,
    name=st.sampled_from(RESOURCES) | wire_names,
)
small_json = json_like(max_leaves=6)
label_maps = st.dictionaries(names | text, names | text | leaves, max_size=3)
object_docs = st.fixed_dictionaries(
    {"spec": st.dictionaries(names, small_json, max_size=3) | small_json},
    optional={
        "metadata": st.fixed_dictionaries(
            {},
            optional={
                "labels": label_maps,
                "annotations": label_maps,
                "finalizers": st.lists(names, max_size=2) | small_json,
                "name": names,
            },
        ),
        "status": st.dictionaries(names, small_json, max_size=3) | small_json,
    },
)
# _dumps escapes every non-ASCII character, so lone surrogates become "\ud800" escapes
# (valid UTF-8 on the wire, refused by load_json).
object_jsons = object_docs.map(_dumps) | deep().map(_dumps) | wire_json
status_jsons = (
    st.dictionaries(names, small_json, max_size=3).map(_dumps)
    | small_json.map(_dumps)
    | st.just("")
    | wire_json
)
session_events = st.builds(
    pb.ResourceEvent,
    key=session_keys,
    operation=st.sampled_from([pb.OPERATION_UPSERT, pb.OPERATION_DELETE]) | st.integers(-1, 3),
    version=st.integers(0, 5) | uint64,
    checksum=wire_text,
    object_json=object_jsons,
)
session_statuses = st.builds(
    pb.StatusUpdate,
    key=session_keys,
    version=st.integers(0, 5) | uint64,
    status_json=status_jsons,
    status_checksum=wire_text,
)
session_acks = st.builds(pb.Ack, seq=st.integers(0, 8) | uint64, ok=st.booleans(), error=wire_text)
SESSION_BODIES: dict[str, st.SearchStrategy[Any]] = {
    "event": session_events,
    "status": session_statuses,
    "ack": session_acks,
    "heartbeat": BODIES["heartbeat"],
    "resync_done": BODIES["resync_done"],
}
session_seqs = st.integers(0, 20) | uint64
agent_messages = st.one_of(
    *[st.builds(_envelope, session_seqs, st.just(f), b) for f, b in SESSION_BODIES.items()],
    st.builds(_envelope, session_seqs, st.just("event"), session_events),
    st.builds(_envelope, session_seqs, st.just("status"), session_statuses),
)
# Now and then something that mostly ends the session: a goodbye, a second hello, a body
# only the principal sends, no body at all, or bytes that are no envelope.
enders = st.one_of(
    st.builds(_envelope, session_seqs, st.just("goodbye"), BODIES["goodbye"]),
    envelopes,
    st.binary(min_size=1, max_size=40),
)


@st.composite
def sessions(draw: st.DrawFn, *, limit: int) -> list[pb.Envelope | bytes]:
    """What an agent sends after its hello: envelopes and, as bytes, what is no envelope
    (including payloads within a few bytes of `limit`); messages may follow an ender."""
    messages: list[pb.Envelope | bytes] = []
    for _ in range(draw(st.integers(0, 8))):
        choice = draw(st.integers(0, 19))
        if choice < 16:
            messages.append(draw(agent_messages))
        elif choice < 19:
            messages.append(draw(enders))
        else:
            messages.append(draw(near_limit(limit)))
    return messages


@st.composite
def near_limit(draw: st.DrawFn, limit: int) -> pb.Envelope:
    """A status update whose encoding is within a few bytes of `limit` (either side)."""
    envelope = pb.Envelope(
        seq=draw(session_seqs),
        status=pb.StatusUpdate(key=pb.ResourceKey(kind=pb.KIND_APPLICATION, name="app-1")),
    )
    target = limit + draw(st.integers(-4, 4))
    padding = max(0, target - envelope.ByteSize() - 4)
    envelope.status.status_json = '{"p":"' + "x" * max(0, padding - 8) + '"}'
    while envelope.ByteSize() < target:  # the length prefix grows with the text
        envelope.status.status_json = envelope.status.status_json[:-2] + 'x"}'
    return envelope
