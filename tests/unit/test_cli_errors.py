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


SERVE = ["principal", "serve", "--id", "p1", "--listen", "127.0.0.1:8443", "--tls-dir", "/tls"]
SERVE += ["--coordination", "etcd://127.0.0.1:2379"]  # nothing is contacted: values fail first


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--listen", "nonsense"], "bad --listen 'nonsense': expected HOST:PORT"),
        (["--lease-duration", "0"], "--lease-duration must be a positive number of seconds, got 0"),
        (["--coordination", "foo://x"], "bad --coordination 'foo://x': expected etcd://"),
        (["--coordination", "etcd://x"], "bad --coordination 'etcd://x': bad etcd endpoint 'x'"),
        (["--store", "etcd://"], "bad --store 'etcd://': no etcd endpoints"),
        (
            ["--heartbeat-interval", "-1"],
            "--heartbeat-interval must be a positive number of seconds, got -1",
        ),
        (
            ["--renew-deadline", "5"],
            "--lease-duration (4.0s) must be greater than --renew-deadline",
        ),
        (
            ["--request-timeout", "2"],
            "--request-timeout (2.0s) must be at most half of --renew-dea",
        ),
        (["--max-message-bytes", "5"], "--max-message-bytes must be at least 1024"),
        (["--session-ttl", "0"], "--session-ttl must be a positive number of seconds, got 0"),
        (["--metrics", "9090"], "bad --metrics '9090': expected HOST:PORT"),
    ],
)
def test_principal_serve_values_are_usage_errors_naming_the_flag(
    flags: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*SERVE, *flags], env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mooring: principal serve: {line}") and err.count("\n") == 1, err


def test_a_value_from_the_environment_is_judged_the_same(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(SERVE, env={"MOORING_RETRY_PERIOD": "-0.5"}) == 2
    err = capsys.readouterr().err
    assert (
        err
        == "mooring: principal serve: --retry-period must be a positive number of seconds, got -0.5\n"
    )


AGENT = ["agent", "run", "--name", "a1", "--mode", "managed", "--tls-dir", "/tls"]
AGENT += ["--state", "/nonexistent/a1.db", "--endpoints", "127.0.0.1:8443"]


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--endpoints", "nonsense"], "bad --endpoints entry 'nonsense': expected HOST:PORT"),
        (
            ["--drift-check-interval", "-1"],
            "--drift-check-interval must be a positive number of seconds, got -1",
        ),
        (
            ["--refused-retry-interval", "nan"],
            "--refused-retry-interval must be a positive number of seconds, got nan",
        ),
        (["--metrics", "nonsense"], "bad --metrics 'nonsense': expected HOST:PORT"),
    ],
)
def test_agent_run_values_are_usage_errors_naming_the_flag(
    flags: list[str], line: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*AGENT, *flags], env={}) == 2
    assert capsys.readouterr().err == f"mooring: agent run: {line}\n"
