"""The light one-consumer queue behind each session's send queue and change feed (on
loop time: a waiting get is waited for without real time passing)."""

from __future__ import annotations

import asyncio

from principal import _queue as queue_


async def test_items_come_out_in_order_and_a_waiting_get_wakes_on_put() -> None:
    q: queue_.LightQueue[int] = queue_.LightQueue()
    q.put_nowait(1)
    q.put_nowait(2)
    assert q.qsize() == 2
    assert [await q.get(), await q.get()] == [1, 2]
    assert q.qsize() == 0

    loop = asyncio.get_running_loop()
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(60)  # loop time: a minute with nothing put
    assert not waiting.done()
    q.put_nowait(3)
    assert await waiting == 3
    assert loop.time() == 60  # woken by the put, at once


async def test_a_cancelled_get_loses_nothing() -> None:
    q: queue_.LightQueue[str] = queue_.LightQueue()
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(60)  # loop time: the get is waiting when it is cancelled
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    q.put_nowait("kept")
    assert await q.get() == "kept"
    assert asyncio.get_running_loop().time() == 60
