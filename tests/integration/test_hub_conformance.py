"""One conformance suite for every hub-store backend (`principal.HubStore`).

`backend` opens the store each test runs on: the etcd store on Debian's etcd 3.4 and on
the test bed's etcd 3.6, each under a root of the test's own, and the Kubernetes store
on the test bed's kube-apiserver with Argo CD's CRDs, under a hub name and namespace
prefix of the test's own. A new backend joins by adding a parameter.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

import principal
from mooring import _kubeapi as kubeapi
from mooring import _services as services
from principal import _hub as hub
from proto import objects
from tests import _argocd as argocd

pytestmark = pytest.mark.integration

T = TypeVar("T")
WAIT = 10.0  # seconds any feed may take to deliver a change


@pytest.fixture(params=["etcd", "etcd36", "kubernetes"])
def location(request: pytest.FixtureRequest, prefix: str) -> tuple[str, services.EtcdCluster]:
    """The URL of the test's own hub store, and the etcd under it."""
    if request.param == "kubernetes":
        apiserver: kubeapi.KubeAPIServer = request.getfixturevalue("kube_apiserver")
        name = prefix.strip("/")
        url = f"kubernetes://?kubeconfig={apiserver.kubeconfig}&hub={name}&namespace-prefix={name}-"
        return url, apiserver.etcd  # the apiserver's own etcd (compacted by one test)
    cluster = request.getfixturevalue(request.param)
    return cluster.url, cluster


@contextlib.asynccontextmanager
async def opened(url: str, prefix: str) -> AsyncIterator[hub.HubStore]:
    store = principal.open_hub_store(url, root=f"{prefix}/", timeout=5.0)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def backend(
    location: tuple[str, services.EtcdCluster], prefix: str
) -> AsyncIterator[tuple[hub.HubStore, services.EtcdCluster]]:
    async with opened(location[0], prefix) as store:
        yield store, location[1]


@pytest.fixture
def store(backend: tuple[hub.HubStore, services.EtcdCluster]) -> hub.HubStore:
    return backend[0]


app = argocd.application


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, WAIT)


async def next_change(feed: AsyncIterator[hub.Change]) -> hub.Change:
    return await within(anext(feed))


# --- registry ---------------------------------------------------------------------------


async def test_registration_is_idempotent_and_modes_do_not_change(store: hub.HubStore) -> None:
    assert await store.get_agent("edge-1") is None
    first = await store.register_agent("edge-1", mode="managed")
    assert await store.register_agent("edge-1", mode="managed") == first
    await store.register_agent("edge-0", mode="autonomous")
    with pytest.raises(hub.ModeConflictError, match="registered as managed"):
        await store.register_agent("edge-1", mode="autonomous")
    assert await store.list_agents() == [
        hub.AgentRecord("edge-0", "autonomous"),
        hub.AgentRecord("edge-1", "managed"),
    ]


@pytest.mark.parametrize("name", ["Edge_1", "a/b", "x" * 64])
async def test_invalid_agent_names_are_refused(store: hub.HubStore, name: str) -> None:
    with pytest.raises(hub.StoreError, match="invalid agent name"):
        await store.register_agent(name, mode="managed")
    with pytest.raises(hub.StoreError, match="invalid agent name"):
        await store.apply_desired(name, app("guestbook"))
    assert await store.list_agents() == []


async def test_watch_agents_lists_then_follows_registrations(store: hub.HubStore) -> None:
    await store.register_agent("edge-1", mode="managed")
    feed = store.watch_agents()
    try:
        assert await within(anext(feed)) == {"edge-1"}
        await store.register_agent("edge-2", mode="autonomous")
        assert await within(anext(feed)) == {"edge-1", "edge-2"}
    finally:
        await feed.aclose()


async def test_a_registered_mode_can_be_changed(store: hub.HubStore) -> None:
    assert await store.set_agent_mode("edge-1", mode="autonomous") is None  # not registered
    assert await store.get_agent("edge-1") is None
    await store.register_agent("edge-1", mode="managed")
    changed = await store.set_agent_mode("edge-1", mode="autonomous")
    assert changed == hub.AgentRecord("edge-1", "autonomous")
    assert await store.set_agent_mode("edge-1", mode="autonomous") == changed  # idempotent
    assert await store.get_agent("edge-1") == changed
    assert await store.list_agents() == [changed]
    # This store had confirmed "managed": the change is what counts now.
    with pytest.raises(hub.ModeConflictError, match="registered as autonomous, not managed"):
        await store.register_agent("edge-1", mode="managed")
    assert await store.register_agent("edge-1", mode="autonomous") == changed
    with pytest.raises(hub.StoreError, match="invalid agent name"):
        await store.set_agent_mode("Edge_1", mode="managed")


async def test_a_replica_sees_a_mode_changed_elsewhere_through_its_agent_watch(
    store: hub.HubStore, location: tuple[str, services.EtcdCluster], prefix: str
) -> None:
    async with opened(location[0], prefix) as replica:
        await replica.register_agent("edge-1", mode="managed")  # confirmed, so remembered
        feed = replica.watch_agents()
        try:
            assert await within(anext(feed)) == {"edge-1"}
            await store.set_agent_mode("edge-1", mode="autonomous")  # `mooring agent set-mode`
            assert await within(anext(feed)) == {"edge-1"}
            with pytest.raises(hub.ModeConflictError, match="registered as autonomous"):
                await replica.register_agent("edge-1", mode="managed")
            assert await store.delete_agent("edge-1") == []  # `mooring agent delete`
            assert await within(anext(feed)) == frozenset()
            # Unregistered: its next hello registers it again, in the mode it says.
            assert await replica.register_agent("edge-1", mode="managed") == hub.AgentRecord(
                "edge-1", "managed"
            )
        finally:
            await feed.aclose()
    assert await store.get_agent("edge-1") == hub.AgentRecord("edge-1", "managed")


async def test_an_agent_with_resources_is_deleted_only_with_cascade(store: hub.HubStore) -> None:
    assert await store.delete_agent("edge-1") is None  # not registered
    await store.register_agent("edge-1", mode="managed")
    one, _ = await store.apply_desired("edge-1", app("one"))
    await store.apply_desired("edge-1", app("two"))
    status = {"sync": {"status": "Synced"}}
    await store.put_status("edge-1", "Application", "one", status=status, spec_version=one.version)
    with pytest.raises(hub.AgentInUseError, match="agent edge-1 has 2 resource"):
        await store.delete_agent("edge-1")
    assert await store.get_agent("edge-1") == hub.AgentRecord("edge-1", "managed")
    assert len((await store.list_resources("edge-1"))[0]) == 2  # nothing deleted
    deleted = await store.delete_agent("edge-1", cascade=True)
    assert deleted is not None and sorted(r.name for r in deleted) == ["one", "two"]
    assert await store.get_agent("edge-1") is None
    assert await store.list_agents() == []
    assert (await store.list_resources("edge-1"))[0] == []
    assert await store.list_status("edge-1") == {}
    # The name is free again, in either mode.
    await store.register_agent("edge-1", mode="autonomous")
    assert await store.get_agent("edge-1") == hub.AgentRecord("edge-1", "autonomous")


async def test_cascade_deletes_an_autonomous_agents_mirrors(store: hub.HubStore) -> None:
    await store.register_agent("edge-a", mode="autonomous")
    obj = objects.synced_object(app("guestbook"))
    await store.mirror_upsert("edge-a", "Application", "guestbook", obj=obj, version=1, status=None)
    with pytest.raises(hub.AgentInUseError):
        await store.delete_agent("edge-a")
    deleted = await store.delete_agent("edge-a", cascade=True)
    assert deleted is not None and [(r.name, r.origin) for r in deleted] == [("guestbook", "agent")]
    assert await store.get_resource("edge-a", "Application", "guestbook") is None
    assert await store.get_agent("edge-a") is None


# --- desired state ----------------------------------------------------------------------


async def test_apply_reports_changed_only_when_the_synced_part_changes(
    store: hub.HubStore,
) -> None:
    doc = app("guestbook", finalizers=["resources-finalizer.argocd.argoproj.io"])
    created, changed = await store.apply_desired("edge-1", doc)
    assert changed and created.object == objects.synced_object(doc)
    again, changed = await store.apply_desired("edge-1", doc)
    assert not changed and again.version == created.version
    # A field that does not travel (the namespace) is no change either.
    moved, changed = await store.apply_desired(
        "edge-1", {**doc, "metadata": {**doc["metadata"], "namespace": "argocd"}}
    )
    assert not changed and moved.version == created.version
    updated, changed = await store.apply_desired("edge-1", app("guestbook", path="v2"))
    assert changed and updated.version > created.version
    assert await store.get_resource("edge-1", "Application", "guestbook") == updated
    assert await store.get_agent("edge-1") == hub.AgentRecord("edge-1", "managed")


async def test_invalid_manifests_store_nothing(store: hub.HubStore) -> None:
    for doc, message in [
        (app("Bad_Name"), "invalid Application name"),
        ({"kind": "Application", "metadata": {"name": "x"}}, "has no spec"),
        ({**app("x"), "kind": "Secret"}, "unsupported kind"),
    ]:
        with pytest.raises(hub.StoreError, match=message):
            await store.apply_desired("edge-1", doc)
    resources, _ = await store.list_resources("edge-1")
    assert resources == []


async def test_an_autonomous_agents_objects_cannot_be_changed_from_the_hub(
    store: hub.HubStore,
) -> None:
    await store.register_agent("edge-a", mode="autonomous")
    with pytest.raises(hub.ModeConflictError, match="autonomous"):
        await store.apply_desired("edge-a", app("guestbook"))
    with pytest.raises(hub.ModeConflictError, match="autonomous"):
        await store.delete_desired("edge-a", "Application", "guestbook")


async def test_delete_reports_whether_there_was_something(store: hub.HubStore) -> None:
    await store.apply_desired("edge-1", app("guestbook"))
    assert await store.delete_desired("edge-1", "Application", "guestbook")
    assert not await store.delete_desired("edge-1", "Application", "guestbook")
    assert await store.get_resource("edge-1", "Application", "guestbook") is None


async def test_mirrors_follow_the_agents_versions_and_never_go_back(store: hub.HubStore) -> None:
    await store.register_agent("edge-a", mode="autonomous")
    obj = objects.synced_object(app("guestbook"))
    newer = objects.synced_object(app("guestbook", path="v2"))
    status = {"sync": {"status": "Synced"}}
    assert await store.mirror_upsert(
        "edge-a", "Application", "guestbook", obj=obj, version=2, status=None
    )
    assert not await store.mirror_upsert(
        "edge-a", "Application", "guestbook", obj=obj, version=2, status=None
    )
    assert not await store.mirror_upsert(
        "edge-a", "Application", "guestbook", obj=newer, version=1, status=None
    )
    assert await store.mirror_upsert(
        "edge-a", "Application", "guestbook", obj=obj, version=3, status=status
    )
    got = await store.get_resource("edge-a", "Application", "guestbook")
    assert got is not None and (got.version, got.origin, got.status) == (3, "agent", status)
    assert not await store.mirror_delete("edge-a", "Application", "guestbook", version=2)
    assert await store.mirror_delete("edge-a", "Application", "guestbook", version=4)
    assert await store.get_resource("edge-a", "Application", "guestbook") is None


async def test_status_is_kept_apart_and_idempotent(store: hub.HubStore) -> None:
    created, _ = await store.apply_desired("edge-1", app("guestbook"))
    status = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    args = ("edge-1", "Application", "guestbook")
    assert await store.put_status(*args, status=status, spec_version=created.version)
    assert not await store.put_status(*args, status=status, spec_version=created.version)
    got = await store.list_status("edge-1")
    assert got[("Application", "guestbook")]["status"] == status
    assert got[("Application", "guestbook")]["spec_version"] == created.version


async def test_a_status_for_a_resource_that_does_not_exist_is_not_stored(
    store: hub.HubStore,
) -> None:
    await store.apply_desired("edge-1", app("real"))
    for name in ("ghost", "real"):
        await store.put_status(
            "edge-1", "Application", name, status={"health": {"status": "Healthy"}}, spec_version=1
        )
    assert set(await store.list_status("edge-1")) == {("Application", "real")}


async def test_a_refusal_is_a_status_condition_until_the_next_status(store: hub.HubStore) -> None:
    created, _ = await store.apply_desired("edge-1", app("guestbook"))
    synced = {"sync": {"status": "Synced"}}
    args = ("edge-1", "Application", "guestbook")
    await store.put_status(*args, status=synced, spec_version=created.version)
    await store.record_refusal(*args, message="admission webhook said no")
    got = (await store.list_status("edge-1"))[("Application", "guestbook")]["status"]
    assert got["sync"] == synced["sync"]  # what Argo CD reported stays
    [condition] = got["conditions"]
    assert condition["type"] == hub.REFUSED_CONDITION
    assert condition["message"] == "admission webhook said no"
    await store.record_refusal(*args, message="still no")  # replaced, not appended
    got = (await store.list_status("edge-1"))[("Application", "guestbook")]["status"]
    assert [c["message"] for c in got["conditions"]] == ["still no"]
    await store.put_status(*args, status=synced, spec_version=created.version)
    got = (await store.list_status("edge-1"))[("Application", "guestbook")]["status"]
    assert got == synced  # the next report from the agent replaces it


# --- certificate revocation --------------------------------------------------------------

FINGERPRINT = "ab" * 32


async def test_revocations_are_idempotent_normalised_and_listed_by_key(
    store: hub.HubStore,
) -> None:
    assert await store.list_revocations() == []
    first, added = await store.revoke(serial="0x00:0A:FF", reason="laptop  lost\n today")
    assert added
    assert (first.serial, first.fingerprint, first.reason) == ("aff", "", "laptop lost today")
    assert first.key == "serial-aff" and first.revoked_at.endswith("Z")
    again, added = await store.revoke(serial="aff", reason="another reason")
    assert (again, added) == (first, False)  # the first entry stays as it was
    both, added = await store.revoke(serial="1f", fingerprint=FINGERPRINT.upper(), agent="edge-1")
    assert added and both.key == f"sha256-{FINGERPRINT}"
    assert (both.serial, both.agent) == ("1f", "edge-1")
    only, _ = await store.revoke(fingerprint="cd" * 32)
    assert await store.list_revocations() == [first, both, only]  # by key
    assert [e.key for e in await store.list_revocations()] == [
        "serial-aff",
        f"sha256-{FINGERPRINT}",
        f"sha256-{'cd' * 32}",
    ]


@pytest.mark.parametrize(
    ("serial", "fingerprint", "error"),
    [
        ("", "", "serial or fingerprint"),
        ("xyz", "", "bad serial"),
        ("ab" * 21, "", "bad serial"),
        ("", "ab" * 31, "bad fingerprint"),
    ],
)
async def test_a_revocation_without_a_valid_serial_or_fingerprint_is_refused(
    store: hub.HubStore, serial: str, fingerprint: str, error: str
) -> None:
    with pytest.raises(hub.StoreError, match=error):
        await store.revoke(serial=serial, fingerprint=fingerprint)
    assert await store.list_revocations() == []


async def test_watch_revocations_lists_then_follows_changes(store: hub.HubStore) -> None:
    first, _ = await store.revoke(serial="1")
    feed = store.watch_revocations()
    try:
        assert await within(anext(feed)) == [first]
        second, _ = await store.revoke(fingerprint=FINGERPRINT, reason="leaked")
        assert await within(anext(feed)) == [first, second]
    finally:
        await feed.aclose()


async def test_a_cached_registration_lookup_sees_what_the_store_says(store: hub.HubStore) -> None:
    assert await store.get_agent("edge-1", cached=True) is None
    await store.register_agent("edge-1", mode="autonomous")
    expected = hub.AgentRecord("edge-1", "autonomous")
    assert await store.get_agent("edge-1", cached=True) == expected
    assert await store.get_agent("edge-1") == expected


# --- deliveries and times ---------------------------------------------------------------


async def test_deliveries_record_the_latest_answer_and_not_for_what_is_gone(
    store: hub.HubStore,
) -> None:
    one, _ = await store.apply_desired("edge-1", app("one"))
    two, _ = await store.apply_desired("edge-1", app("two"))
    at = hub.now_rfc3339()
    applied = hub.Delivery(one.checksum, one.version, True, at)
    refused = hub.Delivery(two.checksum, two.version, False, at)
    ghost = hub.Delivery("c" * 64, 1, True, at)
    await store.put_deliveries(
        "edge-1",
        {("Application", "one"): applied, ("Application", "two"): refused,
         ("Application", "ghost"): ghost},
    )  # fmt: skip
    got = await store.list_deliveries("edge-1")
    assert got == {("Application", "one"): applied, ("Application", "two"): refused}
    # After a spec change no answer names the new checksum (the old one may be kept).
    newer, _ = await store.apply_desired("edge-1", app("one", path="v2"))
    kept = (await store.list_deliveries("edge-1")).get(("Application", "one"))
    assert kept is None or kept == applied
    # A later answer replaces it; a deletion's answer forgets it.
    later = hub.Delivery(newer.checksum, newer.version, True, hub.now_rfc3339())
    await store.put_deliveries("edge-1", {("Application", "one"): later})
    assert (await store.list_deliveries("edge-1"))[("Application", "one")] == later
    assert await store.delete_desired("edge-1", "Application", "two")
    await store.put_deliveries("edge-1", {("Application", "two"): None})
    assert set(await store.list_deliveries("edge-1")) == {("Application", "one")}
    await store.delete_agent("edge-1", cascade=True)
    assert await store.list_deliveries("edge-1") == {}


async def test_resources_say_when_they_were_created_and_last_changed(store: hub.HubStore) -> None:
    import datetime

    def moment(text: str) -> datetime.datetime:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))

    before = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    created, _ = await store.apply_desired("edge-1", app("guestbook"))
    await asyncio.sleep(1.1)  # the times are in whole seconds, as Kubernetes keeps them
    updated, _ = await store.apply_desired("edge-1", app("guestbook", path="v2"))
    got = await store.get_resource("edge-1", "Application", "guestbook")
    assert got is not None
    assert before <= moment(got.created_at) < moment(got.updated_at)
    assert got.created_at == created.created_at and got.updated_at == updated.updated_at
    await store.register_agent("edge-a", mode="autonomous")
    obj = objects.synced_object(app("mine"))
    await store.mirror_upsert("edge-a", "Application", "mine", obj=obj, version=1, status=None)
    mirror = await store.get_resource("edge-a", "Application", "mine")
    assert mirror is not None and before <= moment(mirror.created_at) <= moment(mirror.updated_at)


# --- the change feed ----------------------------------------------------------------------


async def test_the_feed_delivers_exactly_the_changes_after_a_cursor_in_order(
    store: hub.HubStore,
) -> None:
    await store.apply_desired("edge-1", app("before"))
    resources, cursor = await store.list_resources("edge-1")
    assert [r.name for r in resources] == ["before"]
    feed = store.watch_resources(after=cursor)
    try:
        one, _ = await store.apply_desired("edge-1", app("one"))
        await store.put_status(
            "edge-1",
            "Application",
            "one",
            status={"sync": {"status": "Synced"}},
            spec_version=one.version,
        )  # status is not a resource change
        two, _ = await store.apply_desired("edge-1", app("one", path="v2"))
        await store.delete_desired("edge-1", "Application", "one")
        seen = [await next_change(feed) for _ in range(3)]
    finally:
        await feed.aclose()
    assert [(c.name, c.deleted) for c in seen] == [("one", False), ("one", False), ("one", True)]
    assert [c.version for c in seen[:2]] == [one.version, two.version]
    assert seen[2].version > two.version  # a delete outranks what it deletes
    assert cursor < seen[0].position < seen[1].position < seen[2].position
    assert all(c.cursor <= c.position for c in seen)  # resuming there repeats, never skips
    assert seen[1].resource == two


async def test_a_feed_resumed_at_a_changes_cursor_may_repeat_but_never_skips(
    store: hub.HubStore,
) -> None:
    start = await store.cursor()
    feed = store.watch_resources(after=start)
    try:
        await store.apply_desired("edge-1", app("a"))
        first = await next_change(feed)
    finally:
        await feed.aclose()
    await store.apply_desired("edge-1", app("b"))
    resumed = store.watch_resources(after=first.cursor)
    try:
        seen = [(await next_change(resumed)).name]
        while seen[-1] != "b":
            seen.append((await next_change(resumed)).name)
    finally:
        await resumed.aclose()
    assert set(seen) <= {"a", "b"}, seen


def lose_history(
    store: hub.HubStore,
    cluster: services.EtcdCluster,
    revision: int,
    request: pytest.FixtureRequest,
) -> None:
    """Compact the store's etcd at `revision`. A kube-apiserver also serves watches from a
    cache of its own; it is restarted, so that cache starts after the compaction."""
    compact(cluster, revision)
    if request.node.callspec.params["location"] == "kubernetes":
        request.getfixturevalue("kube_apiserver").restart()


def compact(cluster: services.EtcdCluster, revision: int) -> None:
    """Compact etcd through its HTTP gateway (no etcd client outside election._etcd)."""
    request = urllib.request.Request(
        f"http://{cluster.endpoints[0]}/v3/kv/compaction",
        data=json.dumps({"revision": str(revision), "physical": True}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


async def test_lost_history_is_an_error_with_where_to_resume(
    backend: tuple[hub.HubStore, services.EtcdCluster], request: pytest.FixtureRequest
) -> None:
    store, cluster = backend
    old = await store.cursor()
    await store.apply_desired("edge-1", app("a"))
    await store.apply_desired("edge-1", app("b"))
    lose_history(store, cluster, await store.cursor(), request)
    with pytest.raises(hub.HistoryLostError) as lost:
        await next_change(store.watch_resources(after=old))
    assert lost.value.resume > old
    # From `resume` the feed is whole again: what it still holds, then what comes.
    feed = store.watch_resources(after=lost.value.resume)
    try:
        await store.apply_desired("edge-1", app("c"))
        seen = [(await next_change(feed)).name]
        while seen[-1] != "c":
            seen.append((await next_change(feed)).name)
    finally:
        await feed.aclose()
    assert "a" not in seen, seen  # compacted away
