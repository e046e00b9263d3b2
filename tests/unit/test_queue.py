"""The light one-consumer queue behind each session's send queue and change feed."""

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

    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    q.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


async def test_a_cancelled_get_loses_nothing() -> None:
    q: queue_.LightQueue[str] = queue_.LightQueue()
    waiting = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    q.put_nowait("kept")
    assert await asyncio.wait_for(q.get(), 1) == "kept"
