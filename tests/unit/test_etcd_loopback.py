"""A password sent to etcd in the clear is warned of only when it leaves this machine."""

from __future__ import annotations

import pytest

from election import _etcd as etcd


@pytest.mark.parametrize(
    ("endpoints", "loopback"),
    [
        (["127.0.0.1:2379"], True),
        (["127.0.0.1:2379", "127.0.0.2:2379", "localhost:2379", "[::1]:2379"], True),
        (["127.0.0.1:2379", "10.213.0.2:2379"], False),  # one member elsewhere is enough
        (["etcd.example:2379"], False),  # a name might resolve anywhere
    ],
)
def test_loopback_is_judged_per_endpoint(endpoints: list[str], loopback: bool) -> None:
    assert etcd._loopback(endpoints) is loopback
