"""The CLI's first impressions: --version, and usage errors as one line with one prefix."""

from __future__ import annotations

import pytest

from mooring import _cli as cli
from proto import codec


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"], env={})
    assert done.value.code == 0
    assert capsys.readouterr().out == f"mooring {codec.RELEASE} (wire protocol 1-1)\n"
    assert codec.RELEASE == "0.1.0"  # the installed package's version, as pyproject says


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        ([], "mooring: the following arguments are required: command"),
        (["bogus"], "mooring: argument command: invalid choice: 'bogus'"),
        (["up", "--replicas", "x"], "mooring: up: argument --replicas: invalid int value: 'x'"),
        (["replica", "pause", "p1"], "mooring: replica: argument action: invalid choice: 'pause'"),
    ],
)
def test_usage_errors_are_one_line_with_one_prefix(
    argv: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv, env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1
    assert "mooring: mooring" not in err
