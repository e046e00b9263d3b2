"""`principal serve`'s flags table (principal._flags): defaults from the settings, and
settings -> argv -> settings gives the same settings back."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from election import settings as election_settings
from principal import _flags as flags
from principal import admission, session
from principal import settings as principal_settings

pytestmark = pytest.mark.unit

REQUIRED = ["--id", "p1", "--listen", "127.0.0.1:8443", "--coordination", "etcd://h:2379"]


def parse(argv: list[str]) -> principal_settings.PrincipalSettings:
    parser = argparse.ArgumentParser()
    flags.add_to(parser)
    return flags.settings(parser.parse_args(argv))


def test_the_flags_defaults_are_the_settings_defaults() -> None:
    got = parse([*REQUIRED, "--tls-dir", "/tls"])
    want = principal_settings.PrincipalSettings(
        replica_id="p1",
        listen="127.0.0.1:8443",
        advertise="127.0.0.1:8443",
        coordination="etcd://h:2379",
        tls_dir=Path("/tls"),
    )
    assert got == want


def test_settings_survive_argv_and_back() -> None:
    settings = principal_settings.PrincipalSettings(
        replica_id="p2",
        listen="127.0.0.1:0",
        advertise="10.0.0.2:8443",
        coordination="etcd://h:2379",
        store="etcd://other:2379",
        tls_dir=Path("/tls"),
        metrics="127.0.0.1:9100",
        redis="redis://:secret@h:6379",
        history=Path("/h.jsonl"),
        auto_register=True,
        session=session.SessionSettings(
            max_message_bytes=2048,
            heartbeat_interval=1.0,
            heartbeat_timeout=1.0 * flags.HEARTBEAT_TIMEOUT_FACTOR,
        ),
        admission=admission.AdmissionSettings(reconnect_rate=2.5),
        election=election_settings.ElectionSettings(lease_duration=6.0, renew_deadline=5.0),
    )
    argv = flags.to_argv(settings)
    assert "secret" not in " ".join(argv)  # the Redis URL travels in the environment
    assert flags.to_env(settings) == {"MOORING_REDIS": "redis://:secret@h:6379"}
    parsed = parse(argv)
    assert dataclasses.replace(parsed, redis=settings.redis) == settings


def test_only_what_differs_from_the_defaults_is_printed() -> None:
    settings = parse([*REQUIRED, "--tls-dir", "/tls", "--lease-duration", "6"])
    assert flags.to_argv(settings) == [*REQUIRED, "--tls-dir", "/tls", "--lease-duration", "6.0"]


def test_the_effective_settings_hide_secrets_and_name_every_flag() -> None:
    settings = parse([*REQUIRED, "--tls-dir", "/tls", "--redis", "redis://:pw@h:1"])
    effective = flags.effective(settings)
    assert effective["redis"] == "***"
    assert effective["lease_duration"] == 4.0 and effective["heartbeat_timeout"] == 15.0
    assert set(effective) == {f.name[2:].replace("-", "_") for f in flags.FLAGS} | {
        "heartbeat_timeout"
    }


def test_a_bad_heartbeat_interval_names_its_flag() -> None:
    with pytest.raises(ValueError, match="--heartbeat-interval must be a positive"):
        parse([*REQUIRED, "--tls-dir", "/tls", "--heartbeat-interval", "-1"])
