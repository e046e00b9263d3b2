"""The agent's connection to the hub as a state machine: its states, its events, one table.

`agent._client` reports what happens to the connection as events (a sweep starts, a
replica welcomes us, the resync is done, the session ends, a sweep finds no replica or a
refusal no retry cures, stop); `next_state(state, event)` is the pure transition function
and refuses any pair the table does not hold, so that a bug in the loop shows up as an
error instead of a connection that believes two things at once. Within a sweep, which
endpoint to dial next is `agent._sweep.next_step`'s table.

    IDLE --sweep--> DIALING --welcomed--> RESYNCING --resynced--> LIVE
    DIALING --no_replica--> BACKING_OFF --sweep--> DIALING
    DIALING --refused--> REFUSED --sweep--> DIALING    (after refused_retry_interval)
    RESYNCING | LIVE --ended--> DIALING                 (the sweep goes on, or starts anew)
    any state but STOPPED --failed--> BACKING_OFF      (a bug in the loop: logged, rested)
    any state but STOPPED --stop--> STOPPED
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from agent import _errors as errors

__all__ = ["TRANSITIONS", "Event", "IllegalTransition", "Link", "next_state"]


class Link(enum.StrEnum):
    IDLE = "idle"  # made, no sweep yet
    DIALING = "dialing"  # a sweep dials endpoints and follows redirects
    RESYNCING = "resyncing"  # a replica welcomed us: the resync handshake runs
    LIVE = "live"  # resynced: changes flow; the only state in which we are connected
    BACKING_OFF = "backing_off"  # a sweep found no replica to serve us: wait, then sweep
    REFUSED = "refused"  # refused for a reason no retry cures: the long wait, then sweep
    STOPPED = "stopped"  # stop() or cancelled; final


class Event(enum.StrEnum):
    SWEEP = "sweep"  # a sweep of the endpoints starts
    WELCOMED = "welcomed"  # a replica welcomed us
    RESYNCED = "resynced"  # the session's resync is done
    ENDED = "ended"  # the session ended, for any reason
    NO_REPLICA = "no_replica"  # the sweep ended without a session
    REFUSED = "refused"  # ... and a replica refused us for a reason no retry cures
    FAILED = "failed"  # the loop itself raised (a bug): it rests and starts over
    STOP = "stop"


_L, _E = Link, Event
TRANSITIONS: Mapping[Link, Mapping[Event, Link]] = {
    _L.IDLE: {_E.SWEEP: _L.DIALING, _E.FAILED: _L.BACKING_OFF, _E.STOP: _L.STOPPED},
    _L.DIALING: {
        _E.SWEEP: _L.DIALING,  # a session ended and served us: the next sweep starts at once
        _E.WELCOMED: _L.RESYNCING,
        _E.NO_REPLICA: _L.BACKING_OFF,
        _E.REFUSED: _L.REFUSED,
        _E.FAILED: _L.BACKING_OFF,
        _E.STOP: _L.STOPPED,
    },
    _L.RESYNCING: {
        _E.RESYNCED: _L.LIVE,
        _E.ENDED: _L.DIALING,
        _E.FAILED: _L.BACKING_OFF,
        _E.STOP: _L.STOPPED,
    },
    _L.LIVE: {_E.ENDED: _L.DIALING, _E.FAILED: _L.BACKING_OFF, _E.STOP: _L.STOPPED},
    _L.BACKING_OFF: {_E.SWEEP: _L.DIALING, _E.FAILED: _L.BACKING_OFF, _E.STOP: _L.STOPPED},
    _L.REFUSED: {_E.SWEEP: _L.DIALING, _E.FAILED: _L.BACKING_OFF, _E.STOP: _L.STOPPED},
    _L.STOPPED: {},
}


class IllegalTransition(errors.AgentError, RuntimeError):
    """An event the table does not allow in the current state: a bug in the loop."""


def next_state(state: Link, event: Event) -> Link:
    """The state after `event` in `state`; IllegalTransition if the table has no such pair."""
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise IllegalTransition(f"agent link: no transition from {state} on {event}") from None
