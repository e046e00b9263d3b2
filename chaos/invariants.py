"""The invariant checkers (shared/DESIGN.md I1-I4): pure functions over what a run left.

Each takes plain data (JSON lines, store snapshots, etcd revisions) and returns a list
of `Violation`s, empty when the invariant held; the loaders that gather that data from
a local cluster are in `chaos.evidence`. A test for each checker plants a violation and
shows it is caught.

- I1 `single_owner(history, faults)`: no two replicas hold an open session for one agent
  at one instant. Sessions are ordered by their Redis fencing token (the grant order,
  one counter per agent, on one server), then compared on the clock the history was
  written with: CLOCK_MONOTONIC (`t`) on one host, the wall clock (`wall`) across hosts.
  A higher token opened before a lower one had even started is a violation too: the
  fencing order and time disagree.
- I2 `nothing_lost(log, snapshot)`: the final stores hold, for every resource the writer
  touched, what its last acknowledged change said (or a later change whose outcome the
  writer could not know), on both sides, at the same version.
- I3 `converged(samples, heal_t, agents)`: after the last heal every agent was on its
  owner, under one shard-map epoch, within the bound (10 s).
- I4 `fenced_leadership(maps, leaders)`: shard-map epochs strictly increase, and each
  map was written by the holder of the leader record at that etcd revision, under
  that record's fencing token, before that lease ran out.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CONVERGENCE_BOUND",
    "PAUSE_GRACE",
    "Session",
    "Violation",
    "converged",
    "convergence_time",
    "fenced_leadership",
    "nothing_lost",
    "sessions",
    "single_owner",
]

CONVERGENCE_BOUND = 10.0
"""Seconds after a fault heals within which I3 wants every agent on its owner."""
PAUSE_GRACE = 1.0
"""Seconds after SIGCONT within which a paused replica must close what it held."""


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    invariant: str  # I1..I4
    subject: str  # the agent, resource or map revision concerned
    message: str

    def __str__(self) -> str:
        return f"{self.invariant} {self.subject}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- I1
@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    agent: str
    replica: str
    session: str
    token: int
    start: float
    end: float  # math.inf while open at the end of the history
    ended_by: str  # close | crash | replaced | pause | open


def _windows(
    faults: Iterable[Mapping[str, Any]], clock: str
) -> tuple[dict[str, list[float]], dict[str, list[tuple[float, float]]]]:
    kills: dict[str, list[float]] = {}
    pauses: dict[str, list[tuple[float, float]]] = {}
    paused_at: dict[str, float] = {}
    for fault in sorted(faults, key=lambda f: f[clock]):
        target, event = fault.get("target"), fault.get("event")
        if not isinstance(target, str):
            continue
        # A kill counts once it is done (the process is gone), a pause once the kernel
        # shows it stopped, a resume from the moment it is asked: each bound is the one
        # that gives a replica the least benefit of the doubt.
        if event == "kill-done":
            kills.setdefault(target, []).append(fault[clock])
        elif event == "pause-done":
            paused_at[target] = fault[clock]
        elif event == "resume" and target in paused_at:
            pauses.setdefault(target, []).append((paused_at.pop(target), fault[clock]))
    for target, at in paused_at.items():
        pauses.setdefault(target, []).append((at, math.inf))
    return kills, pauses


def sessions(
    history: Iterable[Mapping[str, Any]],
    faults: Iterable[Mapping[str, Any]] = (),
    *,
    clock: str = "t",
) -> list[Session]:
    """Pair every open with its close. An unclosed session ends when its process was
    killed (a fault mark) or replaced (its replica logs from another pid later), else
    never. A session open while its replica was paused, and closed within PAUSE_GRACE
    of the resume, ends at the pause: a stopped process serves nothing, and it fenced
    itself on waking before doing anything else."""
    events = sorted(history, key=lambda e: e[clock])
    kills, pauses = _windows(faults, clock)
    opened: dict[str, Mapping[str, Any]] = {}
    closed: list[tuple[Mapping[str, Any], float]] = []
    for event in events:
        if event.get("ev") == "open":
            opened[event["session"]] = event
        elif event.get("ev") == "close" and event["session"] in opened:
            closed.append((opened.pop(event["session"]), event[clock]))
    out = []
    for start, end in closed:
        begun = start[clock]
        ended_by = "close"
        for pause, resume in pauses.get(start["replica"], []):
            if begun < pause and resume <= end <= resume + PAUSE_GRACE:
                end, ended_by = pause, "pause"
                break
        out.append(_session(start, begun, end, ended_by))
    for start in opened.values():
        begun = start[clock]
        end, ended_by = math.inf, "open"
        crash = [t for t in kills.get(start["replica"], []) if t >= begun]
        if crash:
            end, ended_by = min(crash), "crash"
        later = [
            e[clock]
            for e in events
            if e["replica"] == start["replica"] and e.get("pid") != start.get("pid")
            if e[clock] > begun
        ]
        if later and min(later) < end:
            end, ended_by = min(later), "replaced"
        out.append(_session(start, begun, end, ended_by))
    return out


def _session(start: Mapping[str, Any], begun: float, end: float, ended_by: str) -> Session:
    return Session(
        agent=str(start["agent"]),
        replica=str(start["replica"]),
        session=str(start["session"]),
        token=int(start["token"]),
        start=float(begun),
        end=end,
        ended_by=ended_by,
    )


def single_owner(
    history: Iterable[Mapping[str, Any]],
    faults: Iterable[Mapping[str, Any]] = (),
    *,
    clock: str = "t",
) -> list[Violation]:
    """I1 over a session history (principal `--history` JSON lines of every replica)."""
    by_agent: dict[str, list[Session]] = {}
    for s in sessions(history, faults, clock=clock):
        by_agent.setdefault(s.agent, []).append(s)
    out: list[Violation] = []
    for agent, spans in sorted(by_agent.items()):
        spans.sort(key=lambda s: (s.token, s.start))
        seen: dict[int, Session] = {}
        for s in spans:
            twin = seen.get(s.token)
            if twin is not None and twin.replica != s.replica:
                out.append(
                    Violation(
                        "I1",
                        agent,
                        f"token {s.token} granted to both {twin.replica} and {s.replica}",
                    )
                )
            seen[s.token] = s
        for i, first in enumerate(spans):
            for second in spans[i + 1 :]:
                if second.replica == first.replica or second.token == first.token:
                    continue
                overlap = min(first.end, second.end) - max(first.start, second.start)
                if overlap > 0:
                    out.append(
                        Violation(
                            "I1",
                            agent,
                            f"{first.replica} (token {first.token}) and {second.replica}"
                            f" (token {second.token}) both held it for {overlap * 1000:.1f} ms",
                        )
                    )
                elif second.start < first.start:
                    out.append(
                        Violation(
                            "I1",
                            agent,
                            f"token {second.token} ({second.replica}) opened before token"
                            f" {first.token} ({first.replica}): grant order and time disagree",
                        )
                    )
    return out


# ----------------------------------------------------------------------------- I2
def _expected(ops: Sequence[Mapping[str, Any]]) -> set[str | None]:
    """Revisions the final store may hold after `ops` (in the writer's order): the last
    acknowledged one, and any later one whose outcome is unknown (None: deleted)."""
    allowed: set[str | None] = {None}  # before anything acknowledged: absent
    for op in ops:
        rev = op["rev"] if op["op"] == "apply" else None
        if op["ok"] is True:
            allowed = {rev}
        elif op["ok"] is None:
            allowed = allowed | {rev}
    return allowed


def nothing_lost(
    log: Iterable[Mapping[str, Any]], snapshot: Mapping[str, Mapping[str, Any]]
) -> list[Violation]:
    """I2. `log`: the writer's lines {t, agent, mode, op: apply|delete, name, rev, ok:
    true|false|null}, in the order of `t` (one host's monotonic clock). `snapshot`: agent -> {"mode", "hub": {name: {rev, version}},
    "local": {name: {rev, version}}} of the resources the writer owns."""
    ops: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    modes: dict[str, str] = {}
    for op in sorted(log, key=lambda o: o["t"]):
        ops.setdefault((op["agent"], op["name"]), []).append(op)
        modes[op["agent"]] = op["mode"]
    out: list[Violation] = []
    for (agent, name), history in sorted(ops.items()):
        subject = f"{agent}/{name}"
        state = snapshot.get(agent)
        if state is None:
            out.append(Violation("I2", subject, "no snapshot of this agent's stores"))
            continue
        producer, consumer = ("hub", "local") if modes[agent] == "managed" else ("local", "hub")
        made = state[producer].get(name)
        got = state[consumer].get(name)
        allowed = _expected(history)
        rev = made["rev"] if made else None
        acked = sum(1 for o in history if o["ok"] is True)
        if rev not in allowed:
            out.append(
                Violation(
                    "I2",
                    subject,
                    f"{producer} holds {rev or 'nothing'} after {acked} acknowledged changes;"
                    f" expected {' or '.join(sorted(str(a or 'nothing') for a in allowed))}",
                )
            )
        if (got or {}).get("rev") != rev:
            out.append(
                Violation(
                    "I2",
                    subject,
                    f"{consumer} holds {(got or {}).get('rev') or 'nothing'} but {producer}"
                    f" holds {rev or 'nothing'}",
                )
            )
        elif made and got and made.get("version") != got.get("version"):
            out.append(
                Violation(
                    "I2",
                    subject,
                    f"{consumer} is at version {got.get('version')} of {producer}'s"
                    f" {made.get('version')}: an older change was applied over a newer one",
                )
            )
    return out


# ----------------------------------------------------------------------------- I3
def convergence_time(
    samples: Iterable[Mapping[str, Any]], *, after: float, agents: int
) -> float | None:
    """Seconds from `after` to the first sample from which every agent is on its owner
    under one epoch for good (to the end of the samples); None if never."""
    ordered = [s for s in sorted(samples, key=lambda s: s["t"]) if s["t"] >= after]
    since: float | None = None
    for sample in ordered:
        if _whole(sample, agents):
            if since is None:
                since = sample["t"]
        else:
            since = None
    return None if since is None else since - after


def _whole(sample: Mapping[str, Any], agents: int) -> bool:
    replicas = sample.get("replicas") or {}
    live = [r for r in replicas.values() if r is not None]
    epochs = {r.get("epoch") for r in live}
    on_owner = sum((r.get("open") or 0) - (r.get("standin") or 0) for r in live)
    standins = sum(r.get("standin") or 0 for r in live)
    return len(epochs) == 1 and on_owner == agents and standins == 0


def converged(
    samples: Iterable[Mapping[str, Any]],
    *,
    heal_t: float,
    agents: int,
    bound: float = CONVERGENCE_BOUND,
) -> tuple[float | None, list[Violation]]:
    """I3: (seconds to converge after `heal_t`, violations)."""
    took = convergence_time(samples, after=heal_t, agents=agents)
    if took is None:
        return None, [Violation("I3", "cluster", "never converged after the fault healed")]
    if took > bound:
        return took, [
            Violation("I3", "cluster", f"converged {took:.1f} s after the heal (bound {bound} s)")
        ]
    return took, []


# ----------------------------------------------------------------------------- I4
def _time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def fenced_leadership(
    maps: Sequence[tuple[int, Mapping[str, Any]]],
    leaders: Sequence[tuple[int, Mapping[str, Any] | None]],
) -> list[Violation]:
    """I4. `maps`: every stored version of the shard map as (etcd mod revision, value);
    `leaders`: every version of the leader record as (revision, value or None when
    deleted). Both are in revision order, from the first."""
    out: list[Violation] = []
    previous_epoch = 0
    for rev, data in sorted(maps, key=lambda m: m[0]):
        subject = f"shard map epoch {data.get('epoch')} (revision {rev})"
        epoch = int(data.get("epoch", 0))
        if epoch <= previous_epoch:
            out.append(
                Violation("I4", subject, f"epoch did not increase (previous {previous_epoch})")
            )
        previous_epoch = max(previous_epoch, epoch)
        current = [value for lrev, value in leaders if lrev < rev]
        leader = current[-1] if current else None
        if leader is None:
            out.append(Violation("I4", subject, "written while nobody held the leader record"))
            continue
        holder, token = leader.get("holderIdentity"), leader.get("leaseTransitions")
        if data.get("publishedBy") != holder or data.get("fencingToken") != token:
            out.append(
                Violation(
                    "I4",
                    subject,
                    f"written by {data.get('publishedBy')} under token"
                    f" {data.get('fencingToken')} while {holder} led under token {token}",
                )
            )
            continue
        published, renewed = data.get("publishedAt"), leader.get("renewTime")
        if published and renewed:
            expiry = _time(renewed) + datetime.timedelta(
                seconds=float(leader.get("leaseDurationSeconds", 0))
            )
            if _time(published) > expiry:
                out.append(
                    Violation(
                        "I4",
                        subject,
                        f"published at {published}, after {holder}'s lease ran out at"
                        f" {expiry.isoformat()}",
                    )
                )
    return out
