"""Ownership under the published shard map, and handoff when it (or the agent list) changes.

owner(agent) = ring(registered agents, map members).owner(agent): every replica
computes the same answer from the same map and agent list. On a new map or a changed
agent list, each replica redirects exactly the sessions it no longer owns (their
entries are released as those sessions end) and then advertises the applied epoch.
A replica whose member record could not be kept alive (the coordination store does not
answer it) closes every session (self-fence), unless its holds are in Redis: there the
session registry alone decides who may serve an agent (I1 rests on its entries and
fencing tokens, never on member records), so while Redis confirms this replica's
liveness it goes on serving under the last map it applied, new sessions included, and a
coordination-store outage costs no agent its session.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from election import cluster, ring, shardmap
from principal import _hub as hub
from principal import _ownership as ownership
from principal import _session as session_

__all__ = ["Sharding"]

logger = logging.getLogger(__name__)

STANDIN_SECONDS = 10.0
"""A stand-in session (its agent could not reach its owner) is sent home after this long."""
STANDIN_MIN = 1.0
"""...or after this long, when its owner has just come back (restarted or rejoined)."""


class Sharding:
    """An `Ownership` backed by the coordinator's shard map and the agent registry."""

    def __init__(
        self,
        *,
        replica_id: str,
        coordinator: cluster.Coordinator,
        desired: hub.HubStore,
        sessions: session_.SessionManager,
        on_handoff: Callable[[int], None] | None = None,
        on_owned: Callable[[int], None] | None = None,
        on_store_error: Callable[[], None] | None = None,
        standbys: bool = True,  # name standbys (only where stand-ins are possible)
        fence_without_membership: bool = True,  # False: holds in Redis fence us instead
    ) -> None:
        self.replica_id = replica_id
        self.coordinator = coordinator
        self.desired = desired
        self.sessions = sessions
        self.on_handoff = on_handoff
        self.on_owned = on_owned
        self.on_store_error = on_store_error
        self.standbys = standbys
        self.fence_without_membership = fence_without_membership
        self._unregistered_since: float | None = None  # serving without a member record
        self.agents: set[str] = set()
        self.map: shardmap.ShardMap | None = None
        self.ring: ring.Ring | None = None
        self.changed = asyncio.Event()
        # per replica: its member record's pid, and when that last changed (or appeared),
        # with whether it was a replica we had seen before (a restart or a rejoin)
        self._member_pid: dict[str, int | None] = {}
        self._member_changed: dict[str, tuple[float, bool]] = {}
        self._members_seen: set[str] = set()
        self._members_noted = False
        self.applied = asyncio.Event()  # set once a first map is applied
        self._next_apply = asyncio.Event()  # set (and replaced) by every apply
        # Rings without one replica, for stand-ins and successors: built once per applied
        # ring and lost replica (a storm of one dead replica's agents builds one).
        self._without: dict[str, ring.Ring] = {}
        self._without_of: ring.Ring | None = None

    # ------------------------------------------------------------------ routing
    def route(self, agent: str) -> ownership.Route:
        current = self.map
        if current is None or self.ring is None:
            return ownership.Route(serve=False, epoch=0)
        if self.fence_without_membership and not self.coordinator.is_registered():
            return ownership.Route(serve=False, epoch=current.epoch)
        if agent in self.ring:
            owner = self.ring.owner(agent)
        else:  # first contact: place it as if registered (it registers when served)
            owner = current.build_ring(self.agents | {agent}).owner(agent)
        return self._route_to(owner, current)

    def _route_to(
        self, owner: str, current: shardmap.ShardMap, *, serving_for: str | None = None
    ) -> ownership.Route:
        """Serve if `owner` is us (recording `serving_for` as the owner), else redirect."""
        if owner == self.replica_id:
            return ownership.Route(serve=True, epoch=current.epoch, owner_id=serving_for or owner)
        return ownership.Route(
            serve=False,
            epoch=current.epoch,
            owner_id=owner,
            owner_endpoint=current.endpoint_of(owner) or "",
        )

    def _ring_without(self, gone: set[str]) -> ring.Ring | None:
        """The registered agents placed on the map's replicas minus `gone` (None if
        none is left), built once per applied ring: a storm of one dead replica's
        agents, and every welcome's standby, share it."""
        current = self.map
        others = tuple(r for r in (current.replica_ids if current else ()) if r not in gone)
        if current is None or not others:
            return None
        if self._without_of is not self.ring:  # the ring object is rebuilt on each change
            self._without, self._without_of = {}, self.ring
        key = ",".join(sorted(gone))
        placed = self._without.get(key)
        if placed is None:
            placed = self._without[key] = ring.Ring(self.agents, others, epsilon=current.epsilon)
        return placed

    def standin(self, agent: str, *, unreachable: str) -> ownership.Route:
        """The owner `agent` would have without `unreachable`: serve, or redirect there."""
        current = self.map
        placed = self._ring_without({unreachable})
        if current is None or placed is None:
            return ownership.Route(serve=False, epoch=current.epoch if current else 0)
        if agent not in placed:  # registered since the last apply, or a first contact
            placed = ring.Ring(self.agents | {agent}, placed.replicas, epsilon=current.epsilon)
        return self._route_to(placed.owner(agent), current, serving_for=unreachable)

    def successor(self, agent: str, *, standin_for: str = "") -> str:
        """The endpoint `agent` should try first if this replica stops answering (the
        standby hint): its owner without us (and without the owner we stand in for).

        "" when standbys are off, or the agent is not in the rings built at the last
        apply (a new registration): building a ring per new agent in a start-up storm
        costs too much, and the apply that follows the registration names it."""
        current = self.map
        if not self.standbys or current is None or self.ring is None or agent not in self.ring:
            return ""
        placed = self._ring_without({self.replica_id, standin_for} - {""})
        if placed is None or agent not in placed:
            return ""
        return current.endpoint_of(placed.owner(agent)) or ""

    async def catch_up(self, epoch: int) -> None:
        """Return once a map of at least `epoch` is applied here."""
        while self.map is None or self.map.epoch < epoch:
            await self._next_apply.wait()

    # ------------------------------------------------------------------ loops
    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_maps(), name=f"sharding:{self.replica_id}:maps")
            group.create_task(self._watch_agents(), name=f"sharding:{self.replica_id}:agents")
            group.create_task(self._apply_loop(), name=f"sharding:{self.replica_id}:apply")
            group.create_task(self._fence_loop(), name=f"sharding:{self.replica_id}:fence")

    async def _watch_maps(self) -> None:
        while True:
            await self.coordinator.map_changed()
            self.changed.set()

    async def _watch_agents(self) -> None:
        """Keep the registered-agent list current: list, then watch; re-list on errors."""
        while True:
            try:
                async for agents in self.desired.watch_agents():
                    self.agents = set(agents)
                    self.changed.set()
            except hub.StoreError as err:
                if self.on_store_error:
                    self.on_store_error()
                logger.warning("agent registry watch broke, re-listing: %s", err)
                await asyncio.sleep(0.5)

    async def _apply_loop(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            await asyncio.sleep(0.05)  # coalesce bursts of registrations
            self._apply()

    def _apply(self) -> None:
        current = self.coordinator.shard_map
        if current is None:
            return
        self.map = current
        self.ring = current.build_ring(self.agents)
        moved = 0
        for agent, session in list(self.sessions.sessions.items()):
            route = self.route(agent)
            if route.serve:
                if session.standin_for:
                    # The map now names us the owner (the owner we stood in for left):
                    # the session is ours from here, not sent back after STANDIN_SECONDS.
                    logger.info(
                        "epoch %d: agent %s is ours now; stand-in for %s ends in place",
                        current.epoch,
                        agent,
                        session.standin_for,
                    )
                    session.standin_for = ""
                # Who would take over may have changed (or been unknown at the welcome).
                session.advise_standby(self.successor(agent, standin_for=session.standin_for))
                continue
            if session.standin_for and route.owner_id == session.standin_for:
                continue  # still standing in for an owner the agent cannot reach: repatriate()
            if not route.owner_endpoint:
                continue  # no owner to name (we are not a member): the fence loop closes it
            moved += 1
            session.close(
                session_.CloseReason.MOVED,
                f"moved to replica {route.owner_id} under epoch {route.epoch}",
                final=ownership.redirect(route, reason="moved"),
            )
        if moved:
            logger.info("epoch %d: handing %d agent(s) over", current.epoch, moved)
            if self.on_handoff:
                self.on_handoff(moved)
        if self.on_owned:
            self.on_owned(self.ring.loads().get(ring.ReplicaId(self.replica_id), 0))
        self.coordinator.set_applied_epoch(current.epoch)
        self.applied.set()
        self._next_apply.set()
        self._next_apply = asyncio.Event()

    def drain(self) -> int:
        """Before leaving: send every session to its owner in the map without us."""
        current = self.map
        others = tuple(r for r in (current.replica_ids if current else ()) if r != self.replica_id)
        if current is None or not others:
            return 0
        without_us = ring.Ring(
            self.agents | set(self.sessions.sessions), others, epsilon=current.epsilon
        )
        drained = 0
        for session in list(self.sessions.sessions.values()):
            route = self._route_to(without_us.owner(session.agent), current)
            session.close(
                session_.CloseReason.LEAVING,
                f"replica leaving: handed to {route.owner_id}",
                final=ownership.redirect(route, reason="replica leaving"),
            )
            drained += 1
        return drained

    def _note_members(self, now: float) -> None:
        """Remember when each replica last (re)started or rejoined: a new pid in its
        member record, or a record again after none; and whether we had seen it before
        (else it only joined: a replica starting beside us is not one coming back)."""
        live = {m.replica_id: m.pid for m in self.coordinator.live_members()}
        first = not self._members_noted  # what we find at our own start is no news
        self._members_noted = self._members_noted or bool(live)
        for rid in set(self._member_pid) - set(live):
            del self._member_pid[rid]
        for rid, pid in live.items():
            if rid not in self._member_pid or self._member_pid[rid] != pid:
                self._member_pid[rid] = pid
                seen_before = rid in self._members_seen
                self._members_seen.add(rid)
                self._member_changed[rid] = (-math.inf if first else now, seen_before)

    def _owner_back(self, session: session_.Session, now: float) -> bool:
        """Whether the owner a stand-in session stands in for can take its agent now: it
        (re)started or rejoined shortly before the stand-in began or since (an agent
        that just saw it fail says it is unreachable while it is already coming back),
        it serves under the current map, and the stand-in is STANDIN_MIN old. A replica
        we had never seen counts only if it joined after the stand-in began: one that
        joined shortly before (a cluster starting) and that the agent cannot reach is
        cut off, not back. An owner that stayed up all along (the agent cannot reach it:
        a partition) is not back: the agent goes home after STANDIN_SECONDS as before."""
        owner = next(
            (m for m in self.coordinator.live_members() if m.replica_id == session.standin_for),
            None,
        )
        current = self.map
        if owner is None or current is None or not owner.serving:
            return False
        if owner.applied_epoch < current.epoch or now - session.opened_at < STANDIN_MIN:
            return False
        renewed = self.coordinator.renewed_at(owner.replica_id)
        if renewed is None or renewed <= session.opened_at:
            return False  # no sign of life since the stand-in began (it may be dead)
        changed, seen_before = self._member_changed.get(owner.replica_id, (-math.inf, False))
        if not seen_before:
            # A replica we first see now only joined (the whole cluster starting, say):
            # back only if that was after the stand-in began, not before it.
            return changed >= session.opened_at
        return changed >= session.opened_at - STANDIN_SECONDS

    def repatriate(self, *, older_than: float) -> int:
        """Send stand-in sessions back to their owner: at once when it has come back
        (see `_owner_back`), else once they are older than `older_than` seconds."""
        now = asyncio.get_running_loop().time()  # the clock of opened_at and renewed_at
        sent = 0
        self._note_members(now)
        for agent, session in list(self.sessions.sessions.items()):
            if not session.standin_for:
                continue
            if now - session.opened_at < older_than and not self._owner_back(session, now):
                continue
            route = self.route(agent)
            if route.serve or not route.owner_endpoint:
                session.standin_for = ""  # we own it now (or nobody can be named)
                continue
            session.close(
                session_.CloseReason.STANDIN_ENDED,
                f"stand-in ends: back to owner {route.owner_id}",
                final=ownership.redirect(route, reason="back to owner"),
            )
            sent += 1
        return sent

    def _note_membership(self) -> None:
        """Say once when our member record lapses and when it is back (holds in Redis:
        we go on serving meanwhile)."""
        registered = self.coordinator.is_registered()
        if not registered and self._unregistered_since is None:
            self._unregistered_since = asyncio.get_running_loop().time()
            epoch = self.map.epoch if self.map is not None else 0
            logger.warning(
                "member record not renewed (coordination store unreachable?): serving %d"
                " session(s) on under epoch %d while Redis confirms our holds",
                len(self.sessions.sessions),
                epoch,
            )
        elif registered and self._unregistered_since is not None:
            lasted = asyncio.get_running_loop().time() - self._unregistered_since
            self._unregistered_since = None
            logger.info("member record renewed again after %.1fs", lasted)

    async def _fence_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            # Stand-ins go home as soon as their owner is back, the rest after 10 s.
            self.repatriate(older_than=STANDIN_SECONDS)
            if not self.fence_without_membership:
                self._note_membership()
                continue
            if self.sessions.sessions and not self.coordinator.is_registered():
                logger.warning(
                    "member record lost: closing %d session(s) (self-fence)",
                    len(self.sessions.sessions),
                )
                for session in list(self.sessions.sessions.values()):
                    session.close(
                        session_.CloseReason.SELF_FENCE,
                        "self-fence: this replica's member record was lost",
                    )
