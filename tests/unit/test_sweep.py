"""The agent's sweep table (agent._sweep.next_step) and its dial/session outcome classes."""

from __future__ import annotations

import grpc
import pytest

from agent import _outcome as outcome
from agent import _sweep as sweep
from agent._outcome import DialFailure, Ended, Redirected, SessionEnd

pytestmark = pytest.mark.unit

A = sweep.Attempt("p1:1")


def step(attempt: sweep.Attempt, result: object, **kw: object) -> sweep.Step:
    return sweep.next_step(attempt, result, max_redirects=3, **kw)  # type: ignore[arg-type]


def test_a_redirect_is_followed_and_its_endpoint_preferred() -> None:
    got = step(A, Redirected("p2:1", epoch=4, owner_id="p2"))
    assert got.then == sweep.Attempt("p2:1", hops=1, via="p1:1", owner_id="p2")
    assert (got.prefer, got.failure, got.cooldown) == ("p2:1", "", sweep.Cooldown.NONE)


def test_too_many_redirects_or_none_named_move_to_the_next_endpoint() -> None:
    deep = sweep.Attempt("p1:1", hops=3)
    assert step(deep, Redirected("p2:1", 4, "p2")) == sweep.Step(
        failure="p1:1: more than 3 redirects"
    )
    assert step(A, Redirected("", 4)) == sweep.Step(failure="p1:1: redirected without an endpoint")


def test_an_unreachable_owner_sends_us_back_to_ask_for_a_stand_in() -> None:
    sent = sweep.Attempt("p2:1", hops=1, via="p1:1", owner_id="p2")
    got = step(sent, sweep.Failed(DialFailure.TIMEOUT, "no welcome"))
    assert got.then == sweep.Attempt("p1:1", hops=1, unreachable="p2")
    assert got.cooldown is sweep.Cooldown.TIMED_OUT and got.suspect
    # Asked once already: give up on this endpoint.
    back = step(got.then, sweep.Failed(DialFailure.UNAVAILABLE, "refused"))
    assert back.then is None and back.cooldown is sweep.Cooldown.FAILED
    # A replica that answered (refused us) is reachable: no stand-in asked for it.
    refused = step(sent, sweep.Failed(DialFailure.REJECTED, "no", answered=True))
    assert refused.then is None and not refused.suspect


def test_a_black_holed_owner_is_not_dialled_the_same_replica_is_asked_to_stand_in() -> None:
    got = step(A, Redirected("p2:1", 4, "p2"), black_holed=True)
    assert got.then == sweep.Attempt("p1:1", hops=1, unreachable="p2")
    assert got.prefer == ""


def test_busy_is_no_failure_of_the_endpoint() -> None:
    got = step(A, sweep.Failed(DialFailure.BUSY, "held elsewhere", answered=True))
    assert got == sweep.Step(failure="p1:1: held elsewhere")


def test_a_session_counts_only_when_it_lasted() -> None:
    short = step(A, Ended(SessionEnd.CLOSED, "closed", lasted=0.2))
    assert short.cooldown is sweep.Cooldown.FAILED and not short.served
    assert "after 0.20s (closed)" in short.failure
    assert step(A, Ended(SessionEnd.GOODBYE, "bye", lasted=30)) == sweep.Step(served=True)
    silent = step(A, Ended(SessionEnd.HEARTBEAT_TIMEOUT, "silent", lasted=30))
    assert silent.served and silent.cooldown is sweep.Cooldown.TIMED_OUT


@pytest.mark.parametrize(
    ("code", "details", "trailer", "label"),
    [
        (grpc.StatusCode.UNAVAILABLE, "held elsewhere", "held", DialFailure.BUSY),
        (grpc.StatusCode.PERMISSION_DENIED, "no", "not_registered", DialFailure.REJECTED),
        (grpc.StatusCode.INVALID_ARGUMENT, "bad", None, DialFailure.PROTOCOL),
        (grpc.StatusCode.UNAVAILABLE, "Ssl handshake failed", None, DialFailure.TLS),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", None, DialFailure.TLS),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "late", None, DialFailure.TIMEOUT),
        (grpc.StatusCode.UNAVAILABLE, "Connection refused", None, DialFailure.UNAVAILABLE),
    ],
)
def test_dial_failures_are_classified_by_code_and_trailer(
    code: grpc.StatusCode, details: str, trailer: str | None, label: DialFailure
) -> None:
    assert outcome.classify(code, details, trailer) is label


def test_only_broken_connections_are_dropped() -> None:
    assert outcome.DROPS_CHANNEL == {
        SessionEnd.TRANSPORT,
        SessionEnd.WRITE_RACE,
        SessionEnd.HEARTBEAT_TIMEOUT,
    }
