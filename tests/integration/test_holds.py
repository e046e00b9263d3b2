"""Session entries on a real Redis: who may take an agent's entry, and when."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mooring import _services as services
from principal import _holds as holds
from principal import _registry as registry

ALIVE_TTL = 1.0


@pytest.fixture
async def pair(
    redis_server: services.RedisServer,
) -> AsyncIterator[tuple[holds.RedisHolds, holds.RedisHolds]]:
    """Live replicas a and b on one registry prefix (each beating on its own thread)."""
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    made = [
        holds.RedisHolds(
            registry.SessionRegistry(redis_server.url, prefix=prefix),
            replica=name,
            handoff_wait=2.0,
            alive_ttl=ALIVE_TTL,
        )
        for name in ("a", "b")
    ]
    for one in made:
        await one.start()
    try:
        yield made[0], made[1]
    finally:
        for one in made:
            await one.close()


async def test_a_dead_holders_entry_is_taken_when_its_liveness_expires(
    pair: tuple[holds.RedisHolds, holds.RedisHolds],
) -> None:
    _, b = pair
    # Replica "dead" beat once, took the entry, and died: what a SIGKILL leaves in Redis.
    a = registry.SessionRegistry(b.registry.url, prefix=b.registry.prefix)
    a.beat_blocking("dead", ttl=ALIVE_TTL)
    _, _, token_a, _ = await a.acquire("x", replica="dead", epoch=1, session="s1")
    ok, holder, _, alive = await b.registry.acquire("x", replica="b", epoch=1, session="probe")
    assert (ok, holder) == (False, "dead")
    assert 0 < alive <= ALIVE_TTL
    expires = time.monotonic() + alive
    asked = 0
    real_acquire = b.registry.acquire

    async def counted(*args: Any, **kwargs: Any) -> tuple[bool, str, int, float]:
        nonlocal asked
        asked += 1
        return await real_acquire(*args, **kwargs)

    b.registry.acquire = counted  # type: ignore[method-assign]
    token_b = await b.acquire("x", session="s2", epoch=1, unreachable="dead")
    taken = time.monotonic()
    assert asked == 2, f"asked Redis {asked} times: one refusal, then one take at expiry"

    assert token_b > token_a
    # Not before a's liveness key is gone (I1), and at once after it: one wait, no polling.
    assert taken >= expires - 0.01
    assert taken - expires < 0.05, f"took the entry {taken - expires:.3f}s after expiry"
    assert (await b.registry.entries())["x"].replica == "b"
    # The dead replica's stale token can neither renew nor release b's entry.
    assert await a.renew_many({"x": token_a}, replica="dead") == {"x": False}
    assert not await a.release("x", replica="dead", token=token_a)
    await a.close()


async def test_a_busy_event_loop_does_not_let_liveness_lapse(
    pair: tuple[holds.RedisHolds, holds.RedisHolds],
) -> None:
    a, b = pair
    lost: list[str] = []
    running = asyncio.create_task(a.run(lambda agent, token: lost.append(agent)))
    try:
        await a.acquire("w", session="s1", epoch=1)
        await asyncio.sleep(0.1)
        time.sleep(3 * ALIVE_TTL)  # noqa: ASYNC251 - the loop is stuck, on purpose
        assert not a.is_fenced()
        await asyncio.sleep(0.1)  # the watchdog runs now: nothing to fence
        assert lost == []
        ok, holder, _, alive = await b.registry.acquire("w", replica="b", epoch=1, session="s2")
        assert (ok, holder) == (False, "a") and alive > 0
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_replica_that_cannot_reach_redis_is_fenced_from_the_start() -> None:
    port = services.free_port()  # nothing listens there
    lone = holds.RedisHolds(
        registry.SessionRegistry(f"redis://127.0.0.1:{port}", prefix="t:"),
        replica="lone",
        alive_ttl=ALIVE_TTL,
    )
    await lone.start()
    try:
        assert lone.is_fenced()
        with pytest.raises(registry.RegistryError, match="liveness is unconfirmed"):
            await lone.acquire("v", session="s1", epoch=1)
        await asyncio.sleep(2 * lone.beat_every)
        assert lone.errors >= 1  # the beat thread keeps trying, and says so
    finally:
        await lone.close()


async def test_a_live_holder_is_never_overtaken_even_when_called_unreachable(
    pair: tuple[holds.RedisHolds, holds.RedisHolds],
) -> None:
    a, b = pair
    await a.acquire("y", session="s1", epoch=1)
    beating = asyncio.create_task(a.run(lambda agent, token: None))
    try:
        started = time.monotonic()
        with pytest.raises(holds.HeldElsewhere, match="still held by replica a"):
            await b.acquire("y", session="s2", epoch=1, unreachable="a")
        assert time.monotonic() - started >= b.handoff_wait - 0.05
        assert (await b.registry.entries())["y"].replica == "a"
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def test_a_live_holder_that_lets_go_hands_over_within_a_poll(
    pair: tuple[holds.RedisHolds, holds.RedisHolds],
) -> None:
    a, b = pair
    token_a = await a.acquire("z", session="s1", epoch=1)
    beating = asyncio.create_task(a.run(lambda agent, token: None))
    try:

        async def release_soon() -> float:
            await asyncio.sleep(0.3)
            # The moment the release is asked for: b's poll may be answered and
            # resumed before this coroutine sees the release's own reply.
            asked = time.monotonic()
            await a.release("z", token=token_a)
            return asked

        releasing = asyncio.create_task(release_soon())
        await b.acquire("z", session="s2", epoch=1)
        taken = time.monotonic()
        asked = await releasing
        assert 0 <= taken - asked <= holds.POLL_SECONDS + 0.05
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def test_a_redis_call_in_flight_never_swallows_a_cancellation(
    redis_server: services.RedisServer,
) -> None:
    """redis-py 8.1 can swallow a cancel that lands mid-command; ours must not."""
    reg = registry.SessionRegistry(redis_server.url, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    reg.beat_blocking("r", ttl=60)
    await reg.acquire("c", replica="r", epoch=1, session="s")
    try:
        for i in range(40):
            calls = 0

            async def renewing() -> None:
                nonlocal calls
                while True:
                    calls += 1
                    await reg.renew_many({"c": 1}, replica="r")

            task = asyncio.create_task(renewing())
            await asyncio.sleep(0.001 * (i % 7))
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=1.0)
            assert done, f"round {i}: a renew loop ignored its cancellation ({calls} calls)"
            assert task.cancelled()
    finally:
        await reg.close()


async def test_a_replica_without_its_liveness_key_takes_nothing(
    redis_server: services.RedisServer,
) -> None:
    reg = registry.SessionRegistry(redis_server.url, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    try:
        with pytest.raises(registry.RegistryError, match="no liveness key"):
            await reg.acquire("q", replica="fenced", epoch=1, session="s")
        assert "q" not in await reg.entries()
    finally:
        await reg.close()


async def test_a_cancelled_acquire_gives_back_what_redis_gave_it(
    redis_server: services.RedisServer,
) -> None:
    prefix = f"t-{uuid.uuid4().hex[:8]}:"
    reg = registry.SessionRegistry(redis_server.url, prefix=prefix)
    other = registry.SessionRegistry(redis_server.url, prefix=prefix)
    try:
        reg.beat_blocking("a", ttl=60)
        other.beat_blocking("b", ttl=60)
        # Redis holds every command for 0.3 s: the acquire is in flight when cancelled.
        await reg.client.execute_command("CLIENT", "PAUSE", "300", "ALL")
        taking = asyncio.create_task(reg.acquire("p", replica="a", epoch=1, session="s"))
        await asyncio.sleep(0.05)
        taking.cancel()
        await asyncio.gather(taking, return_exceptions=True)
        assert taking.cancelled()
        await asyncio.sleep(0.6)  # the pause ends, the script runs, its take is given back
        assert "p" not in await other.entries()
        ok, _, _, _ = await other.acquire("p", replica="b", epoch=1, session="s2")
        assert ok, "the abandoned take still locks the agent out"
    finally:
        await reg.close()
        await other.close()


async def test_tokens_keep_growing_across_a_redis_restart(tmp_path: Any) -> None:
    """Found by the chaos suite: a Redis restarted without persistence forgot every token
    counter, so the next session's token was 1 again and a history ordered by fencing
    token no longer said who was granted an agent after whom."""
    server = services.RedisServer(tmp_path / "redis").start()
    try:
        reg = registry.SessionRegistry(server.url, prefix="restart:")
        reg.beat_blocking("a", ttl=30.0)
        tokens = []
        for n in range(3):
            ok, _, token, _ = await reg.acquire("x", replica="a", epoch=1, session=f"s{n}")
            assert ok
            tokens.append(token)
            assert await reg.release("x", replica="a", token=token)
        await reg.close()
        server.kill()
        server.start()  # same port, empty: no RDB, no AOF
        reg = registry.SessionRegistry(server.url, prefix="restart:")
        reg.beat_blocking("a", ttl=30.0)
        ok, _, after, _ = await reg.acquire("x", replica="a", epoch=1, session="s9")
        assert ok
        assert tokens == sorted(tokens) and len(set(tokens)) == 3
        assert after > tokens[-1], (tokens, after)
        # Seeded from Redis's clock in ms: a token is an exact integer, not a rounded float.
        assert abs(after - time.time() * 1000) < 60_000
        await reg.close()
    finally:
        server.stop()
