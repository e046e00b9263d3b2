"""Taking an agent's session entry (principal/_holds.py RedisHolds.acquire) from a fake
registry, on loop time: the handoff wait polls a live holder every 0.1 s up to its
deadline, and waits once for the moment an unreachable holder's liveness key expires."""

from __future__ import annotations

import asyncio
import time

import pytest

from principal import _holds as holds


class Registry:
    """A session registry whose entry is held by `holder` (alive `alive` seconds more)
    until `free_at` (loop time; None: never). Records when it was asked."""

    ttl = 3.0

    def __init__(self, *, holder: str = "p2", alive: float = 0.0, free_at: float | None) -> None:
        self.holder, self.alive, self.free_at = holder, alive, free_at
        self.asked: list[float] = []

    async def acquire(
        self, agent: str, *, replica: str, epoch: int, session: str
    ) -> tuple[bool, str, int, float]:
        now = asyncio.get_running_loop().time()
        self.asked.append(now)
        if self.free_at is not None and now >= self.free_at:
            return True, replica, 41, 0.0
        return False, self.holder, 0, self.alive


def holder(registry: Registry) -> holds.RedisHolds:
    taking = holds.RedisHolds(registry, replica="p1", handoff_wait=2.0, alive_ttl=60.0)  # type: ignore[arg-type]
    # The liveness beat is a thread's (on the monotonic clock): confirmed just now, the
    # fence is 45 s of real time away.
    taking.confirmed_at = time.monotonic()
    return taking


async def test_a_live_holder_is_asked_every_tenth_of_a_second_until_the_handoff_wait() -> None:
    registry = Registry(free_at=None)
    with pytest.raises(holds.HeldElsewhere, match="still held by replica p2"):
        await holder(registry).acquire("a", session="s", epoch=1)
    assert registry.asked == [round(0.1 * n, 1) for n in range(21)]  # 0.0, 0.1, ... 2.0
    assert asyncio.get_running_loop().time() == 2.0


async def test_a_holder_that_lets_go_in_time_hands_the_entry_over() -> None:
    registry = Registry(free_at=0.25)
    taking = holder(registry)
    assert await taking.acquire("a", session="s", epoch=1) == 41
    assert registry.asked == [0.0, 0.1, 0.2, 0.3]
    assert taking.held == {"a": 41}


async def test_an_unreachable_holder_is_waited_for_once_until_its_liveness_expires() -> None:
    registry = Registry(alive=0.75, free_at=0.75)  # Redis expires its key at 0.75 s
    taking = holder(registry)
    assert await taking.acquire("a", session="s", epoch=1, unreachable="p2") == 41
    assert registry.asked == [0.0, 0.752]  # its expiry and holds.EXPIRY_MARGIN, no polls


async def test_an_unreachable_holder_still_alive_after_its_expiry_is_polled_until_it_lets_go() -> (
    None
):
    # Alive, only cut off from the agent: its liveness key is renewed (0.75 s left at
    # every look), and it lets go at 1.3 s, when its heartbeat timeout ends the session.
    registry = Registry(alive=0.75, free_at=1.3)
    taking = holder(registry)
    assert await taking.acquire("a", session="s", epoch=1, unreachable="p2") == 41
    # One wait for the expiry it announced, then a poll every 0.1 s: taken within 0.1 s
    # of the release, not a whole liveness TTL later.
    assert registry.asked == pytest.approx([0.0, 0.752, 0.852, 0.952, 1.052, 1.152, 1.252, 1.352])
