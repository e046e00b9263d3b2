"""One sweep's decisions, as a pure function: after each dial, what next.

A sweep tries the agent's endpoints in order (the last owner first). From one
endpoint it follows redirects; when the owner a replica redirected it to cannot be
reached, it goes back to that replica and names the owner as unreachable, so the
replica may stand in. `next_step(attempt, outcome)` is that table; `agent._client`
dials, counts, logs and applies the cooldowns the step asks for.
"""

from __future__ import annotations

import dataclasses
import enum

from agent._outcome import DialFailure, Ended, Redirected

__all__ = ["Attempt", "Cooldown", "Failed", "Step", "next_step"]

# A session shorter than this was no session: the endpoint failed us.
MIN_SESSION_SECONDS = 1.0


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One dial of a sweep: where, after how many redirects, and what we tell the replica."""

    target: str
    hops: int = 0
    via: str = ""  # the replica that redirected us here ("" for a swept endpoint)
    owner_id: str = ""  # the owner it named
    unreachable: str = ""  # the owner we say we cannot reach (asks for a stand-in)


@dataclasses.dataclass(frozen=True)
class Failed:
    """A dial that gave no session."""

    reason: DialFailure
    message: str
    answered: bool = False  # a replica itself refused (it is reachable)


class Cooldown(enum.Enum):
    NONE = "none"
    FAILED = "failed"  # the endpoint failed: try it after the others for a while
    TIMED_OUT = "timed_out"  # it did not answer at all: longer, a black hole is likely


@dataclasses.dataclass(frozen=True)
class Step:
    """What to do after a dial. Exactly one of: dial `then`, move to the sweep's next
    endpoint (`failure` says why), or stop sweeping (`served`: a session ran)."""

    then: Attempt | None = None
    failure: str = ""
    served: bool = False
    cooldown: Cooldown = Cooldown.NONE  # for the attempt's target
    prefer: str = ""  # an endpoint to try first from now on (the owner a redirect named)
    suspect: bool = False  # the target did not answer: if it was our last replica, say so


def next_step(
    attempt: Attempt,
    outcome: Failed | Redirected | Ended,
    *,
    max_redirects: int,
    black_holed: bool = False,
) -> Step:
    """The sweep's transition table. `black_holed`: the redirect's endpoint is known not
    to answer (it timed out lately)."""
    target = attempt.target
    if isinstance(outcome, Failed):
        if outcome.answered and outcome.reason is DialFailure.BUSY:
            # Reachable, just not ready for us yet: no cooldown.
            return Step(failure=f"{target}: {outcome.message}")
        cooldown = Cooldown.TIMED_OUT if outcome.reason is DialFailure.TIMEOUT else Cooldown.FAILED
        suspect = not outcome.answered
        if attempt.via and attempt.owner_id and not attempt.unreachable and not outcome.answered:
            # The owner we were sent to is unreachable: back to the replica that sent us.
            back = Attempt(attempt.via, attempt.hops, unreachable=attempt.owner_id)
            return Step(
                then=back,
                failure=f"{target}: {outcome.message}",
                cooldown=cooldown,
                suspect=suspect,
            )
        return Step(failure=f"{target}: {outcome.message}", cooldown=cooldown, suspect=suspect)
    if isinstance(outcome, Redirected):
        if not outcome.endpoint:  # nowhere named: sweep on instead of dialing ""
            return Step(failure=f"{target}: redirected without an endpoint")
        hops = attempt.hops + 1
        if hops > max_redirects:
            return Step(failure=f"{target}: more than {max_redirects} redirects")
        if black_holed and not attempt.unreachable and outcome.owner_id:
            # Ask the same replica to stand in for the owner we know does not answer.
            return Step(then=dataclasses.replace(attempt, hops=hops, unreachable=outcome.owner_id))
        then = Attempt(
            outcome.endpoint,
            hops,
            via=target,
            owner_id=outcome.owner_id,
            unreachable=attempt.unreachable,
        )
        return Step(then=then, prefer=outcome.endpoint)
    if outcome.lasted < MIN_SESSION_SECONDS:
        return Step(
            failure=f"{target}: session ended after {outcome.lasted:.2f}s ({outcome.reason})",
            cooldown=Cooldown.FAILED,
        )
    # A real session ended: reconnect at once. A black hole: dialing it first again would hang.
    return Step(served=True, cooldown=Cooldown.TIMED_OUT if outcome.silent else Cooldown.NONE)
