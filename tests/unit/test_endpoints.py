"""The agent's endpoint set: order, cooldowns, redirects and DNS expansion (loop time faked)."""

from __future__ import annotations

import pytest

from agent import _endpoints as endpoints

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_preferred_first_then_the_rest_and_cooldown() -> None:
    clock = Clock()
    eps = endpoints.EndpointSet(
        ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"], cooldown=2.0, clock=clock
    )
    assert eps.sweep() == ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]
    eps.prefer("10.0.0.3:1")
    assert eps.sweep()[0] == "10.0.0.3:1"
    eps.failed("10.0.0.3:1")
    assert eps.sweep() == ["10.0.0.1:1", "10.0.0.2:1"]
    assert eps.cooling("10.0.0.3:1") and not eps.black_holed("10.0.0.3:1")
    clock.now += 2.0
    assert "10.0.0.3:1" in eps.sweep()


def test_all_cooling_still_offers_the_first_to_return() -> None:
    clock = Clock()
    eps = endpoints.EndpointSet(["10.0.0.1:1", "10.0.0.2:1"], cooldown=5.0, clock=clock)
    eps.failed("10.0.0.1:1")
    clock.now += 1
    eps.failed("10.0.0.2:1", timed_out=True)
    assert eps.sweep() == ["10.0.0.1:1"]
    assert eps.black_holed("10.0.0.2:1")


def test_redirect_target_unknown_before_is_added() -> None:
    eps = endpoints.EndpointSet(["10.0.0.1:1"], clock=Clock())
    eps.prefer("10.0.0.9:7")
    assert eps.sweep() == ["10.0.0.9:7", "10.0.0.1:1"]


def test_empty_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one principal endpoint"):
        endpoints.EndpointSet([])


async def test_dns_names_expand_to_every_address_and_refresh() -> None:
    answers = {"principal.svc": ["10.1.0.1:443", "10.1.0.2:443"]}

    async def resolver(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such name")
        return answers[host]

    clock = Clock()
    eps = endpoints.EndpointSet(
        ["principal.svc:443", "10.9.9.9:443"],
        resolver=resolver,
        clock=clock,
        refresh_interval=30,
        cooldown=60,
    )
    assert eps.refresh_due()
    await eps.refresh()
    assert sorted(eps.sweep()) == ["10.1.0.1:443", "10.1.0.2:443", "10.9.9.9:443"]
    assert eps.server_name("10.1.0.2:443") == "principal.svc"
    assert eps.server_name("10.9.9.9:443") is None
    assert not eps.refresh_due()

    eps.failed("10.1.0.1:443")
    answers["principal.svc"] = ["10.1.0.1:443", "10.1.0.3:443"]  # a pod replaced
    clock.now += 30
    assert eps.refresh_due()
    await eps.refresh()
    assert sorted(e.address for e in eps.endpoints) == [
        "10.1.0.1:443",
        "10.1.0.3:443",
        "10.9.9.9:443",
    ]
    assert eps.cooling("10.1.0.1:443"), "a surviving address keeps its cooldown"

    del answers["principal.svc"]  # DNS outage: keep the last addresses
    await eps.refresh()
    assert sorted(e.address for e in eps.endpoints) == [
        "10.1.0.1:443",
        "10.1.0.3:443",
        "10.9.9.9:443",
    ]


async def test_real_resolver_gives_loopback_for_localhost() -> None:
    found = await endpoints.resolve_all("localhost", 8443)
    assert "127.0.0.1:8443" in found


def test_repeated_timeouts_rest_a_black_hole_longer() -> None:
    clock = Clock()
    eps = endpoints.EndpointSet(
        ["10.0.0.1:1", "10.0.0.2:1"], cooldown=1.0, max_cooldown=8.0, clock=clock
    )
    rests = []
    for _ in range(5):
        eps.failed("10.0.0.1:1", timed_out=True)
        rests.append(eps.endpoints[0].cooldown_until - clock.now)
    assert rests == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert eps.black_holed("10.0.0.1:1")
    eps.failed("10.0.0.1:1")  # a refusal: the host answers again, so a short rest
    assert eps.endpoints[0].cooldown_until - clock.now == 1.0
    eps.succeeded("10.0.0.1:1")
    eps.failed("10.0.0.1:1", timed_out=True)
    assert eps.endpoints[0].cooldown_until - clock.now == 1.0
