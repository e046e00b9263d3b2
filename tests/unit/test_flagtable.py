"""The generic flags table (proto.flagtable) over a small settings dataclass of its own:
nested defaults, secrets in the environment, switches, choices, one-of groups, masking."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from proto import flagtable

pytestmark = pytest.mark.unit


@dataclasses.dataclass(frozen=True)
class Inner:
    period: float = 2.0  # seconds
    limit: int = 10

    def __post_init__(self) -> None:
        if self.period <= 0:
            raise ValueError("period must be positive")


@dataclasses.dataclass(frozen=True)
class Root:
    name: str
    mode: str = "a"
    hosts: tuple[str, ...] = ("h:1",)
    token: str | None = None
    verbose: bool = False
    file: Path | None = None
    url: str | None = None
    inner: Inner = dataclasses.field(default_factory=Inner)


def _hosts(value: str) -> tuple[str, ...]:
    return tuple(value.split(","))


FLAGS = (
    flagtable.Flag("--name", "name", "its name", required=True),
    flagtable.Flag("--mode", "mode", "a or b", choices=("a", "b")),
    flagtable.Flag("--hosts", "hosts", "HOST:PORT[,...]", type=_hosts),
    flagtable.Flag("--token", "token", "a password", secret=True),
    flagtable.Flag("--verbose", "verbose", "say more", switch=True),
    flagtable.Flag("--file", "file", "a file", type=Path, one_of="source"),
    flagtable.Flag("--url", "url", "a URL", one_of="source"),
    flagtable.Flag("--period", "inner.period", "seconds", type=float),
    flagtable.Flag("--limit", "inner.limit", "at most", type=int),
)
TABLE = flagtable.Table(Root, FLAGS)


class Refused(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise Refused(message)


def parser(table: flagtable.Table[Root] = TABLE) -> Parser:
    p = Parser(prog="x")
    table.add_to(p)
    return p


def parse(argv: list[str]) -> Root:
    return TABLE.settings(parser().parse_args(argv))


def test_defaults_come_from_the_dataclasses_nested_ones_too() -> None:
    assert parse(["--name", "n", "--url", "u"]) == Root(name="n", url="u")
    defaults = [TABLE.default(flag) for flag in FLAGS]
    assert defaults == [None, "a", ("h:1",), None, False, None, None, 2.0, 10]


def test_help_shows_the_default_unless_required_unset_or_false() -> None:
    helps = {a.dest: a.help for a in parser()._actions}
    assert helps["name"] == "its name"
    assert helps["mode"] == "a or b (default a)"
    assert helps["limit"] == "at most (default 10)"
    assert helps["period"] == "seconds (default 2.0)"
    assert helps["token"] == "a password" and helps["verbose"] == "say more"
    shown = {
        a.dest: a.help for a in parser(flagtable.Table(Root, FLAGS, float_format="g"))._actions
    }
    assert shown["period"] == "seconds (default 2)" and shown["limit"] == "at most (default 10)"
    assert helps["hosts"] == "HOST:PORT[,...] (default h:1)"  # as --hosts takes it


def test_settings_survive_argv_and_back_the_secret_in_the_environment() -> None:
    settings = Root(
        name="n",
        mode="b",
        hosts=("a:1", "b:2"),
        token="s3cret",
        verbose=True,
        file=Path("/f"),
        inner=Inner(period=0.5),
    )
    argv = TABLE.to_argv(settings)
    assert argv == [
        "--name", "n", "--mode", "b", "--hosts", "a:1,b:2", "--verbose", "--file", "/f",
        "--period", "0.5",
    ]  # fmt: skip
    assert TABLE.to_env(settings) == {"MOORING_TOKEN": "s3cret"}
    assert TABLE.to_env(settings, prefix="X_") == {"X_TOKEN": "s3cret"}
    assert parse(argv) == dataclasses.replace(settings, token=None)


def test_to_argv_leaves_out_defaults_and_what_it_is_told_to() -> None:
    settings = Root(name="n", url="u", inner=Inner(limit=3))
    assert TABLE.to_argv(settings) == ["--name", "n", "--url", "u", "--limit", "3"]
    assert TABLE.to_argv(settings, omit=("--limit",)) == ["--name", "n", "--url", "u"]
    assert TABLE.to_env(settings) == {}


def test_choices_and_the_one_of_group_are_the_parsers() -> None:
    with pytest.raises(Refused, match="invalid choice: 'c'"):
        parse(["--name", "n", "--url", "u", "--mode", "c"])
    with pytest.raises(Refused, match="one of the arguments --file --url is required"):
        parse(["--name", "n"])
    with pytest.raises(Refused, match="not allowed with argument"):
        parse(["--name", "n", "--url", "u", "--file", "/f"])


def test_values_can_be_edited_before_build_and_nested_errors_surface() -> None:
    values = TABLE.values(parser().parse_args(["--name", "n", "--url", "u"]))
    assert values["inner.period"] == 2.0
    values["inner.period"] = 5.0
    assert TABLE.build(values).inner == Inner(period=5.0)
    with pytest.raises(ValueError, match="period must be positive"):
        parse(["--name", "n", "--url", "u", "--period", "-1"])


def test_effective_masks_a_set_secret_and_is_json_ready() -> None:
    settings = Root(name="n", token="s3cret", file=Path("/f"), hosts=("a:1", "b:2"))
    effective = TABLE.effective(settings)
    assert effective == {
        "name": "n",
        "mode": "a",
        "hosts": ["a:1", "b:2"],
        "token": "***",
        "verbose": False,
        "file": "/f",
        "url": None,
        "period": 2.0,
        "limit": 10,
    }
    assert TABLE.effective(Root(name="n", url="u"))["token"] is None


def test_a_table_that_does_not_fit_its_settings_is_refused() -> None:
    with pytest.raises(TypeError, match="Root has no field 'nope'"):
        flagtable.Table(Root, [flagtable.Flag("--nope", "nope", "")])
    with pytest.raises(TypeError, match=r"Root\.name has no nested settings"):
        flagtable.Table(Root, [flagtable.Flag("--x", "name.x", "")])
    with pytest.raises(TypeError, match="a switch's field defaults to False"):
        flagtable.Table(Root, [flagtable.Flag("--mode", "mode", "", switch=True)])
    with pytest.raises(TypeError, match="a one-of flag's field defaults to None"):
        flagtable.Table(Root, [flagtable.Flag("--mode", "mode", "", one_of="g")])
    with pytest.raises(ValueError, match="a switch takes no value"):
        flagtable.Flag("--v", "verbose", "", switch=True, type=int)
    with pytest.raises(ValueError, match="its group 'g' is required"):
        flagtable.Flag("--f", "file", "", one_of="g", required=True)
