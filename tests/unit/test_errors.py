"""One root exception per package, and one table for how `mooring` ends on each error.

Every exception class a package defines derives from that package's root, so a caller
(the CLI first) tells "one of ours, say it in one line" from "a bug, show the
traceback" by one isinstance check, without importing the module that raised it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from types import ModuleType

import pytest

import agent
import election
import principal
from chaos import _errors as chaos_errors
from mooring import _cli as cli
from mooring import _errors as mooring_errors
from mooring import _usage as usage
from proto import errors as proto_errors
from proto import objects

pytestmark = pytest.mark.unit

ROOTS: dict[str, type[Exception]] = {
    "proto": proto_errors.ProtoError,
    "election": election.CoordinationError,
    "principal": principal.PrincipalError,
    "agent": agent.AgentError,
    "mooring": mooring_errors.MooringError,
    "chaos": chaos_errors.ChaosError,
}

# Exception classes that deliberately stand outside their package's root, each with why.
OUTSIDE = {
    # The elector's internal signal that a term is over: not a store failure, and the
    # renewal loop catches CoordinationError as "renewal failed, try again".
    "election._electing._TermEnded",
}


def _modules(package: str) -> Iterator[ModuleType]:
    root = importlib.import_module(package)
    yield root
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.name.startswith("proto.v1"):  # generated code
            continue
        yield importlib.import_module(info.name)


def _exceptions(package: str) -> Iterator[type[BaseException]]:
    for module in _modules(package):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                yield value


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


# Every module imported once, at collection: the walk's garbage does not land in a test.
FOUND = {package: sorted(_exceptions(package), key=_name) for package in ROOTS}


@pytest.mark.parametrize("package", sorted(ROOTS))
def test_every_exception_derives_from_its_package_root(package: str) -> None:
    root = ROOTS[package]
    assert root in FOUND[package]
    stray = [
        _name(c) for c in FOUND[package] if not issubclass(c, root) and _name(c) not in OUTSIDE
    ]
    assert not stray, f"derive these from {_name(root)}: {stray}"


def test_the_exceptions_left_outside_still_exist() -> None:
    assert OUTSIDE <= {_name(c) for found in FOUND.values() for c in found}


def test_the_roots_load_alone() -> None:
    """The CLI imports the roots up front: their modules import nothing."""
    for root in ROOTS.values():
        module = importlib.import_module(root.__module__)
        assert module.__name__.endswith("._errors"), module.__name__
        names = {v.__name__ for v in vars(module).values() if isinstance(v, ModuleType)}
        assert not names, f"{module.__name__} imports {sorted(names)}"


def _raises(err: BaseException, monkeypatch: pytest.MonkeyPatch, *flags: str) -> int:
    """`mooring [flags] pki init` with a command that raises `err`: the exit code."""

    def command(args: object) -> int:
        raise err

    monkeypatch.setitem(cli.COMMANDS, "pki", command)
    return cli.main([*flags, "pki", "init", "--dir", "/nonexistent"], env={})


@pytest.mark.parametrize(
    ("err", "code", "line"),
    [
        (usage.UsageError("up: bad --replicas"), 2, "mooring: up: bad --replicas\n"),
        (KeyboardInterrupt(), 130, ""),
        (principal.StoreError("etcd get: timed out"), 1, "mooring: error: etcd get: timed out\n"),
        (election.StoreUnavailableError("etcd: down\nmore"), 1, "mooring: error: etcd: down\n"),
        (agent.LocalStoreError("no agent store at x"), 1, "mooring: error: no agent store at x\n"),
        (objects.InvalidObjectError("bad name"), 1, "mooring: error: bad name\n"),
        (ValueError("bad value"), 1, "mooring: error: bad value\n"),
        (RuntimeError(""), 1, "mooring: error: RuntimeError\n"),
        (
            FileNotFoundError(2, "No such file", "x"),
            1,
            "mooring: error: [Errno 2] No such file: 'x'\n",
        ),
    ],
)
def test_each_error_ends_the_cli_with_its_code_and_one_line(
    err: BaseException,
    code: int,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _raises(err, monkeypatch) == code
    assert capsys.readouterr().err == line


def test_anything_else_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError):
        _raises(KeyError("bug"), monkeypatch)


def test_debug_keeps_the_traceback_of_a_failure_not_of_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(principal.StoreError):
        _raises(principal.StoreError("down"), monkeypatch, "--debug")
    assert _raises(usage.UsageError("bad"), monkeypatch, "--debug") == 2
    assert capsys.readouterr().err.endswith("mooring: bad\n")
