"""The store conformance checks against a real Kubernetes cluster ($KUBECONFIG).

Run with `KUBECONFIG=... pytest -m kubernetes tests/election/test_kube_real.py`;
skipped when KUBECONFIG is unset. Leases go to $MOORING_TEST_NAMESPACE (default
"default") under a unique prefix, and are deleted afterwards. The hang check needs
a backend we can stall, so it runs against the test server only.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest

from election import _kube as kube
from election import _stores as stores
from tests.election.store_harness import StoreHarness
from tests.election.test_store_conformance import (
    test_concurrent_creates_have_exactly_one_winner,
    test_concurrent_updates_of_one_version_have_exactly_one_winner,
    test_create_of_an_existing_name_conflicts,
    test_create_then_get_round_trips_lease_fields_and_extras,
    test_delete_is_compare_and_swap,
    test_fenced_write_also_compares_the_record_itself,
    test_fenced_write_lands_only_while_the_fence_is_unchanged,
    test_get_of_a_missing_record_is_none,
    test_list_by_prefix_returns_only_matching_records_by_name,
    test_update_is_compare_and_swap_with_a_new_version,
    test_update_of_a_deleted_record_conflicts,
    test_update_with_a_stale_version_conflicts_and_changes_nothing,
)

pytestmark = [
    pytest.mark.kubernetes,
    pytest.mark.skipif(not os.environ.get("KUBECONFIG"), reason="KUBECONFIG is not set"),
]

__all__ = [
    "test_concurrent_creates_have_exactly_one_winner",
    "test_concurrent_updates_of_one_version_have_exactly_one_winner",
    "test_create_of_an_existing_name_conflicts",
    "test_create_then_get_round_trips_lease_fields_and_extras",
    "test_delete_is_compare_and_swap",
    "test_fenced_write_also_compares_the_record_itself",
    "test_fenced_write_lands_only_while_the_fence_is_unchanged",
    "test_get_of_a_missing_record_is_none",
    "test_list_by_prefix_returns_only_matching_records_by_name",
    "test_update_is_compare_and_swap_with_a_new_version",
    "test_update_of_a_deleted_record_conflicts",
    "test_update_with_a_stale_version_conflicts_and_changes_nothing",
]


def _cannot_hang(stalled: bool) -> None:
    raise NotImplementedError("a real cluster cannot be made to hang from a test")


@pytest.fixture
async def harness() -> AsyncIterator[StoreHarness]:
    """Overrides the conftest harness: real-cluster stores under a unique prefix."""
    namespace = os.environ.get("MOORING_TEST_NAMESPACE", "default")
    prefix = f"/mooring-test-{uuid.uuid4().hex[:8]}/"

    def opener(timeout: float) -> stores.FencedRecordStore:
        return kube.load_kube_store(namespace=namespace, prefix=prefix, timeout=timeout)

    made = StoreHarness("kubernetes-real", opener=opener, hang=_cannot_hang, timeout=10.0)
    try:
        yield made
    finally:
        cleaner = made.open()
        for record in await cleaner.list():
            await cleaner.delete(record)
        await made.aclose()
