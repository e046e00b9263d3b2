"""A command's flags as one table over its settings dataclass: parse, default, print.

Each `Flag` names the settings field it sets, a dotted path into nested settings
("session.max_message_bytes": the field `max_message_bytes` of the dataclass that is the
root's `session` field's default). Its CLI default is that field's default, so the flags
and the dataclasses cannot disagree. A `Table` adds its flags to a parser, builds the
settings from the parsed flags, and gives them back: as a command line (`to_argv`, what a
launcher runs, secret fields left out), as environment variables (`to_env`, the secret
fields only) and as the values in force (`effective`, secrets masked, for cluster.json).
What one command derives or checks beyond its fields stays in that command's module:
it edits `values(namespace)` and calls `build`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

__all__ = ["ENV_PREFIX", "MASK", "Flag", "Table"]

ENV_PREFIX = "MOORING_"
"""A secret flag travels as ENV_PREFIX + its dest in capitals: --redis -> MOORING_REDIS."""

MASK = "***"
"""What `effective` shows for a secret that is set."""

S = TypeVar("S")


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str  # "--lease-duration"
    field: str  # "election.lease_duration": where in the settings, dotted into nested ones
    help: str
    _: dataclasses.KW_ONLY
    type: Callable[[str], Any] = str  # parses the flag's text; a tuple value prints comma-joined
    required: bool = False
    choices: tuple[str, ...] | None = None
    secret: bool = False  # never on a command line: `to_env` gives it
    switch: bool = False  # store_true: present when the field is True (its default is False)
    one_of: str | None = None  # a group name: exactly one flag of the group is given

    def __post_init__(self) -> None:
        if self.switch and (self.required or self.choices or self.one_of or self.type is not str):
            raise ValueError(f"{self.name}: a switch takes no value, choices, group or requirement")
        if self.one_of is not None and self.required:
            raise ValueError(f"{self.name}: its group {self.one_of!r} is required, not the flag")

    @property
    def dest(self) -> str:
        """Its argparse dest and its key in `effective`: --lease-duration -> lease_duration."""
        return self.name[2:].replace("-", "_")


def _field_default(cls: type[Any], name: str) -> Any:
    """The dataclass default of `cls.name` (None for a required field); KeyError if none."""
    spec = {f.name: f for f in dataclasses.fields(cls)}[name]
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return None


def _nested(cls: type[Any], name: str) -> type[Any]:
    """The dataclass of the nested settings in `cls.name`: its default's class."""
    default = _field_default(cls, name)
    if not dataclasses.is_dataclass(default) or isinstance(default, type):
        raise TypeError(f"{cls.__name__}.{name} has no nested settings as its default")
    return type(default)


def _build(cls: type[Any], values: Mapping[str, Any]) -> Any:
    """`cls(**values)`, the dotted paths' nested settings built first (in the order they
    first appear, so their own ValueErrors come in flag order)."""
    kwargs: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in values.items():
        head, dot, rest = path.partition(".")
        if dot:
            nested.setdefault(head, {})[rest] = value
        else:
            kwargs[head] = value
    for head, inner in nested.items():
        kwargs[head] = _build(_nested(cls, head), inner)
    return cls(**kwargs)


def _printed(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


class Table(Generic[S]):
    """The flags over the settings dataclass `root`. `float_format` is the format spec of
    a float default shown in help ("g": 60.0 shows as "60")."""

    def __init__(self, root: type[S], flags: Iterable[Flag], *, float_format: str = "") -> None:
        self.root = root
        self.flags = tuple(flags)
        self._float_format = float_format
        self._defaults: dict[str, Any] = {}
        for flag in self.flags:
            owner: type[Any] = root
            *parents, leaf = flag.field.split(".")
            for parent in parents:
                owner = _nested(owner, parent)
            try:
                default = _field_default(owner, leaf)
            except KeyError:
                raise TypeError(f"{flag.name}: {owner.__name__} has no field {leaf!r}") from None
            if flag.switch and default is not False:
                raise TypeError(f"{flag.name}: a switch's field defaults to False")
            if flag.one_of is not None and default is not None:
                raise TypeError(f"{flag.name}: a one-of flag's field defaults to None")
            self._defaults[flag.field] = default

    def default(self, flag: Flag) -> Any:
        """The dataclass default of the flag's field (None for a required one)."""
        return self._defaults[flag.field]

    def _shown(self, flag: Flag) -> str:
        default = self.default(flag)
        if flag.required or default is None or default is False or default == "":
            return ""
        if isinstance(default, float):
            return f" (default {default:{self._float_format}})"
        return f" (default {_printed(default)})"

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add every flag to `parser`, each with its field's default, shown in its help;
        the flags of one `one_of` group in a required mutually exclusive group."""
        groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
        for flag in self.flags:
            if flag.switch:
                parser.add_argument(flag.name, action="store_true", help=flag.help)
                continue
            target: argparse._ActionsContainer = parser
            if flag.one_of is not None:
                if flag.one_of not in groups:
                    groups[flag.one_of] = parser.add_mutually_exclusive_group(required=True)
                target = groups[flag.one_of]
            target.add_argument(
                flag.name,
                type=flag.type,
                default=self.default(flag),
                required=flag.required,
                choices=flag.choices,
                help=flag.help + self._shown(flag),
            )

    def values(self, namespace: argparse.Namespace) -> dict[str, Any]:
        """The parsed flags by their fields' dotted paths, to edit before `build`."""
        return {flag.field: getattr(namespace, flag.dest) for flag in self.flags}

    def build(self, values: Mapping[str, Any]) -> S:
        """The settings of `values` (dotted path -> value; fields not named keep their
        defaults); the dataclasses' ValueError when one is bad."""
        return cast(S, _build(self.root, values))

    def settings(self, namespace: argparse.Namespace) -> S:
        """The settings the parsed flags give; ValueError naming the flag when one is bad."""
        return self.build(self.values(namespace))

    def value(self, settings: S, flag: Flag) -> Any:
        """The flag's field in `settings`."""
        value: Any = settings
        for part in flag.field.split("."):
            value = getattr(value, part)
        return value

    def to_argv(self, settings: S, *, omit: Collection[str] = ()) -> list[str]:
        """The flags for `settings`: the required ones and every one whose value is not its
        default, but for secret ones (see `to_env`) and those named in `omit`."""
        argv: list[str] = []
        for flag in self.flags:
            value = self.value(settings, flag)
            if flag.secret or flag.name in omit:
                continue
            if not flag.required and value == self.default(flag):
                continue
            argv += [flag.name] if flag.switch else [flag.name, _printed(value)]
        return argv

    def to_env(self, settings: S, *, prefix: str = ENV_PREFIX) -> dict[str, str]:
        """The secret settings that are set, as the environment variables the command reads
        (`prefix` + the flag's dest in capitals)."""
        env: dict[str, str] = {}
        for flag in self.flags:
            value = self.value(settings, flag)
            if flag.secret and value is not None:
                env[prefix + flag.dest.upper()] = _printed(value)
        return env

    def effective(self, settings: S) -> dict[str, Any]:
        """Every flag's value in force by its dest, JSON-ready: secrets that are set
        masked, paths as text, tuples as lists."""
        out: dict[str, Any] = {}
        for flag in self.flags:
            value = self.value(settings, flag)
            if flag.secret and value is not None:
                value = MASK
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[flag.dest] = value
        return out
