"""`agent run`'s flags table (agent._flags): defaults from AgentSettings, settings -> argv ->
settings gives the same settings back, and exactly one local store is required."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent import _flags as flags
from agent import settings as agent_settings

pytestmark = pytest.mark.unit

BASE = ["--name", "edge-1", "--mode", "managed", "--endpoints", "h:1,h:2", "--tls-dir", "/t"]


class Refused(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise Refused(message)


def parse(argv: list[str]) -> agent_settings.AgentSettings:
    parser = Parser()
    flags.add_to(parser)
    return flags.settings(parser.parse_args(argv))


def test_defaults_are_the_settings_defaults() -> None:
    got = parse([*BASE, "--state", "/s.db"])
    assert got == agent_settings.AgentSettings(
        name="edge-1",
        mode="managed",
        endpoints=("h:1", "h:2"),
        tls_dir=Path("/t"),
        state=Path("/s.db"),
    )


def test_settings_survive_argv_and_back() -> None:
    settings = agent_settings.AgentSettings(
        name="edge-2",
        mode="autonomous",
        endpoints=("a:1",),
        tls_dir=Path("/t"),
        store="kubernetes://?namespace=argocd",
        metrics="127.0.0.1:9",
        drift_check_interval=5.0,
        refused_retry_interval=7.0,
        connect_timeout=2.0,
    )
    assert parse(flags.to_argv(settings)) == settings
    assert flags.effective(settings)["endpoints"] == ["a:1"]


def test_exactly_one_local_store() -> None:
    with pytest.raises(Refused, match="one of the arguments --state --store is required"):
        parse(BASE)
    with pytest.raises(Refused, match="not allowed with argument"):
        parse([*BASE, "--state", "/s.db", "--store", "sqlite:///x"])
