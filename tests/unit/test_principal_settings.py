"""`principal serve` refuses settings that would publish a wrong identity or address."""

from __future__ import annotations

from pathlib import Path

import pytest

from principal import _settings as settings


def make(**changes: str) -> settings.PrincipalSettings:
    values = {
        "replica_id": "p1",
        "listen": "127.0.0.1:8443",
        "advertise": "127.0.0.1:8443",
        "coordination": "etcd://127.0.0.1:2379",
        **changes,
    }
    return settings.PrincipalSettings(tls_dir=Path("/tls"), **values)


@pytest.mark.parametrize("replica_id", ["hub-mooring-0", "p1", "a" * 63])
def test_replica_ids_are_dns_labels(replica_id: str) -> None:
    assert make(replica_id=replica_id).replica_id == replica_id


@pytest.mark.parametrize("replica_id", ["", "P 9/x", "UPPER", "-p1", "p1-", "a" * 64, "p1.x"])
def test_other_replica_ids_are_refused_with_one_line(replica_id: str) -> None:
    with pytest.raises(ValueError, match=r"^bad --id .*a lowercase DNS label") as err:
        make(replica_id=replica_id)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("advertise", ["127.0.0.1:0", "0.0.0.0:8443", "[::]:8443"])
def test_an_address_agents_cannot_dial_is_never_advertised(advertise: str) -> None:
    with pytest.raises(ValueError, match=r"is not an address agents can dial"):
        make(listen=advertise, advertise=advertise)


def test_listening_on_a_wildcard_is_fine_when_the_advertised_address_is_real() -> None:
    got = make(listen="0.0.0.0:8443", advertise="hub-mooring-0.hub.ns.svc:8443")
    assert got.advertise == "hub-mooring-0.hub.ns.svc:8443"
