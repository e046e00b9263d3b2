"""A record written around Mooring (etcd has no auth in a local cluster) that cannot be
decoded must not stop the change feed, a listing or a later write of that resource."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

import principal
from mooring import _services as services
from principal import _store as store_
from tests import _argocd as argocd

pytestmark = pytest.mark.integration

BAD_VALUES = [b"not json", b'{"object": 1}', b"[]", b'{"checksum": "x"}', b"\xff\xfe"]


@pytest.fixture
async def store(etcd: services.EtcdCluster, prefix: str) -> AsyncIterator[store_.EtcdHubStore]:
    opened = principal.open_hub_store(etcd.url, root=f"{prefix}/", timeout=5.0)
    assert isinstance(opened, store_.EtcdHubStore)
    await opened.connect()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.mark.parametrize("bad", BAD_VALUES)
async def test_an_undecodable_record_is_skipped_and_logged_once(
    store: store_.EtcdHubStore, bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    await store.apply_desired("edge-1", argocd.application("good"))
    _, cursor = await store.list_resources("edge-1")
    feed = store.watch_resources(after=cursor)
    try:
        await store.kv.put(store._app_key("edge-1", "Application", "bad"), bad)
        with caplog.at_level(logging.WARNING, logger="principal._store"):
            later, _ = await store.apply_desired("edge-1", argocd.application("later"))
            change = await asyncio.wait_for(feed.__anext__(), 10)
            assert (change.name, change.version) == ("later", later.version)  # feed goes on
            listed, _ = await store.list_resources("edge-1")
            assert sorted(r.name for r in listed) == ["good", "later"]
            assert await store.get_resource("edge-1", "Application", "bad") is None
        warned = [r for r in caplog.records if "skipping undecodable record" in r.getMessage()]
        assert len(warned) == 1  # once per record and revision, not per read
        assert "/apps/edge-1/Application/bad" in warned[0].getMessage()
        # A write of that resource replaces the corrupt record.
        fixed, changed = await store.apply_desired("edge-1", argocd.application("bad"))
        assert changed
        change = await asyncio.wait_for(feed.__anext__(), 10)
        assert (change.name, change.resource) == ("bad", fixed)
    finally:
        await feed.aclose()
