"""A principal session's heartbeat timer (principal/_live.py), on loop time: a heartbeat
every interval, and a silent agent dropped when its silence reaches heartbeat_timeout,
not up to one interval later (which made a half-open owner let go of its agents late)."""

from __future__ import annotations

import asyncio
import types

from principal import _live as live
from principal._session import CloseReason, Session, SessionSettings

SETTINGS = SessionSettings(heartbeat_interval=1.0, heartbeat_timeout=3.0)


def opened() -> tuple[Session, live.Live]:
    session = Session(agent="edge-1", mode="managed", session_id="s1", epoch=1)
    host = types.SimpleNamespace(settings=SETTINGS)
    return session, live.Live(host, session)  # type: ignore[arg-type]


async def drained(session: Session) -> list[object]:
    """What the writer would send: heartbeat envelopes, None for the end of the stream."""
    out: list[object] = []
    while session.outbox.qsize():
        envelope = await session.outbox.get()
        out.append(None if envelope is None else envelope.WhichOneof("body"))
    return out


async def test_a_silent_agent_is_dropped_when_its_silence_reaches_the_timeout() -> None:
    session, link = opened()
    beat = live._Heartbeats(link)
    try:
        # Made at 0.5 s into an interval: the deadline (3.5 s) falls between two beats.
        await asyncio.sleep(0.5)
        session.last_received = asyncio.get_running_loop().time()
        await asyncio.sleep(2.9)  # 3.4 s: silent for 2.9 s
        assert not session.closed
        assert await drained(session) == ["heartbeat"] * 3  # at 1, 2 and 3 s
        await asyncio.sleep(0.2)  # 3.6 s: past 3.5 s, before the beat at 4 s
        assert session.closed
        assert session.close_label is CloseReason.HEARTBEAT_TIMEOUT
        assert session.close_reason == "no message from the agent for 3.0s"
        assert await drained(session) == [None]
    finally:
        beat.cancel()


async def test_a_talking_agent_gets_one_heartbeat_a_second_and_nothing_more() -> None:
    session, link = opened()
    beat = live._Heartbeats(link)
    loop = asyncio.get_running_loop()
    try:
        for _ in range(20):  # the agent says something every 0.5 s for 10 s
            await asyncio.sleep(0.5)
            session.last_received = loop.time()
        assert not session.closed
        assert await drained(session) == ["heartbeat"] * 10
        await asyncio.sleep(3.1)  # then falls silent: dropped 3 s after its last message
        assert session.closed
        assert await drained(session) == ["heartbeat"] * 3 + [None]
    finally:
        beat.cancel()


async def test_a_check_that_raises_keeps_the_timer_going() -> None:
    calls: list[float] = []
    loop = asyncio.get_running_loop()

    class Failing(live.Live):
        __slots__ = ()

        def heartbeat(self, *, beat: bool) -> float | None:
            calls.append(loop.time())
            raise RuntimeError("boom")

    session, _ = opened()
    loop.set_exception_handler(lambda _loop, _context: None)  # the loop would log each
    beat = live._Heartbeats(Failing(types.SimpleNamespace(settings=SETTINGS), session))  # type: ignore[arg-type]
    try:
        await asyncio.sleep(3.5)
    finally:
        beat.cancel()
    # Once a beat, not in a tight loop: the error is the loop's to report.
    assert calls == [1.0, 2.0, 3.0]
