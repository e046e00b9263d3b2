"""The memory store's fault switches, which the elector's unit tests lean on."""

from __future__ import annotations

import asyncio

import pytest

from election import _errors as errors
from election import _memory as memory


async def settle() -> None:
    """Let every ready task run until the loop is idle (no wall-clock waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_fail_raises_unavailable_at_once_and_only_on_that_store() -> None:
    store = memory.MemoryStore()
    peer = store.peer()
    created = await store.create("leader", {"holderIdentity": "a"})
    store.fail = True
    with pytest.raises(errors.StoreUnavailableError, match="injected failure"):
        await store.get("leader")
    assert await peer.get("leader") == created
    store.fail = False
    assert await store.get("leader") == created


async def test_hang_without_timeout_blocks_until_cancelled() -> None:
    store = memory.MemoryStore(timeout=None)
    store.hang = True
    call = asyncio.create_task(store.get("leader"))
    await settle()
    assert not call.done()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_hang_released_lets_pending_calls_through() -> None:
    store = memory.MemoryStore(timeout=None)
    store.hang = True
    call = asyncio.create_task(store.create("leader", {"holderIdentity": "a"}))
    await settle()
    assert not call.done()
    store.hang = False
    created = await call
    assert await store.get("leader") == created


async def test_hang_with_timeout_is_unavailable() -> None:
    store = memory.MemoryStore(timeout=0.05)
    store.hang = True
    with pytest.raises(errors.StoreUnavailableError, match="timed out"):
        await store.list()


async def test_data_is_copied_and_must_be_json() -> None:
    store = memory.MemoryStore()
    data = {"members": ["a"]}
    created = await store.create("shardmap", data)
    data["members"].append("b")
    created.data["members"].append("c")
    got = await store.get("shardmap")
    assert got is not None and got.data == {"members": ["a"]}
    with pytest.raises(ValueError):
        await store.create("bad", {"when": object()})
    assert store.backend.entries.keys() == {"shardmap"}


async def test_a_closed_store_is_unavailable() -> None:
    store = memory.MemoryStore()
    await store.close()
    with pytest.raises(errors.StoreUnavailableError):
        await store.get("leader")
