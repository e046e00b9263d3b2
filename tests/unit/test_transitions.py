"""The transition tables, pair by pair: the agent's link (agent/_link.py) and a principal
session's state (principal/_session.py). Every allowed pair is written out here a second
time, by hand, so that a change to a table is a change to this test too; every pair not
written here must be refused."""

from __future__ import annotations

import itertools

import pytest

from agent import _link as link
from principal import _session as session_

L, E = link.Link, link.Event

ALLOWED: dict[tuple[link.Link, link.Event], link.Link] = {
    (L.IDLE, E.SWEEP): L.DIALING,
    (L.IDLE, E.FAILED): L.BACKING_OFF,
    (L.IDLE, E.STOP): L.STOPPED,
    (L.DIALING, E.SWEEP): L.DIALING,
    (L.DIALING, E.WELCOMED): L.RESYNCING,
    (L.DIALING, E.NO_REPLICA): L.BACKING_OFF,
    (L.DIALING, E.REFUSED): L.REFUSED,
    (L.DIALING, E.FAILED): L.BACKING_OFF,
    (L.DIALING, E.STOP): L.STOPPED,
    (L.RESYNCING, E.RESYNCED): L.LIVE,
    (L.RESYNCING, E.ENDED): L.DIALING,
    (L.RESYNCING, E.FAILED): L.BACKING_OFF,
    (L.RESYNCING, E.STOP): L.STOPPED,
    (L.LIVE, E.ENDED): L.DIALING,
    (L.LIVE, E.FAILED): L.BACKING_OFF,
    (L.LIVE, E.STOP): L.STOPPED,
    (L.BACKING_OFF, E.SWEEP): L.DIALING,
    (L.BACKING_OFF, E.FAILED): L.BACKING_OFF,
    (L.BACKING_OFF, E.STOP): L.STOPPED,
    (L.REFUSED, E.SWEEP): L.DIALING,
    (L.REFUSED, E.FAILED): L.BACKING_OFF,
    (L.REFUSED, E.STOP): L.STOPPED,
}
PAIRS = list(itertools.product(link.Link, link.Event))


@pytest.mark.parametrize(("state", "event"), [p for p in PAIRS if p in ALLOWED], ids=str)
def test_each_allowed_link_transition_goes_where_the_table_says(
    state: link.Link, event: link.Event
) -> None:
    assert link.next_state(state, event) is ALLOWED[(state, event)]


@pytest.mark.parametrize(("state", "event"), [p for p in PAIRS if p not in ALLOWED], ids=str)
def test_each_other_link_transition_is_refused(state: link.Link, event: link.Event) -> None:
    with pytest.raises(link.IllegalTransition, match=f"from {state} on {event}"):
        link.next_state(state, event)


def test_the_link_table_is_the_one_written_here() -> None:
    table = {(s, e): t for s, row in link.TRANSITIONS.items() for e, t in row.items()}
    assert table == ALLOWED
    assert set(link.TRANSITIONS) == set(link.Link)


def test_only_stopped_is_final_and_every_state_can_stop() -> None:
    for state in link.Link:
        if state is L.STOPPED:
            assert not link.TRANSITIONS[state]
        else:
            assert link.next_state(state, E.STOP) is L.STOPPED


S = session_.State
SESSION_ALLOWED = {(S.OPEN, S.CLOSING), (S.OPEN, S.CLOSED), (S.CLOSING, S.CLOSED)}


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(session_.State, session_.State)), ids=str
)
async def test_each_session_transition_is_allowed_or_refused_as_written(
    source: session_.State, target: session_.State
) -> None:
    session = session_.Session(agent="edge-1", mode="managed", session_id="s1", epoch=1)
    session.state = source
    if (source, target) in SESSION_ALLOWED:
        session._transition(target)
        assert session.state is target
    else:
        with pytest.raises(RuntimeError, match=f"{source.value} -> {target.value}"):
            session._transition(target)
        assert session.state is source


def test_the_session_table_is_the_one_written_here() -> None:
    assert {
        (s, t) for s, targets in session_.TRANSITIONS.items() for t in targets
    } == SESSION_ALLOWED
