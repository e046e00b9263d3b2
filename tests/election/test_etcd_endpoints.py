"""Several etcd members given by name: every member is used, so one dying is survived."""

from __future__ import annotations

import re

import pytest

from election import _errors as errors
from election import _etcd as etcd
from tests import _poll as poll

pytestmark = pytest.mark.integration


def test_names_resolve_to_every_member_address() -> None:
    assert etcd._ipv4_addresses(["localhost:2379", "127.0.0.1:2380"]) == [
        "127.0.0.1:2379",
        "127.0.0.1:2380",
    ]
    expected = re.escape("cannot resolve etcd endpoint 'no-such-host.invalid:1'")
    with pytest.raises(ValueError, match=expected):
        etcd._ipv4_addresses(["no-such-host.invalid:1"])


async def test_named_members_survive_the_loss_of_one(etcd3) -> None:
    named = [f"localhost:{m.client_port}" for m in etcd3.members]
    async with etcd.EtcdKV(named, timeout=3.0) as kv:
        await kv.put(b"/named/a", b"1")
        etcd3.kill_member(len(named) - 1)  # the last name: once the only one used
        for value in (b"2", b"3", b"4"):
            await poll.eventually(  # a call in flight to the dying member times out: retry
                lambda value=value: kv.put(b"/named/a", value),
                until=poll.answered,
                retrying=(errors.StoreUnavailableError,),
                timeout=15,
                interval=0,
                what=f"the put of {value!r}",
            )
        got = await kv.get(b"/named/a")
        assert got is not None and got.value == b"4"
