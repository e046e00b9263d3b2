"""etcd URLs: which members, over TLS or not, as which user; and the files they name.

    etcd://HOST:PORT[,HOST:PORT...][?user=NAME[&password-file=FILE]]    plaintext
    etcds://HOST:PORT[,HOST:PORT...][?OPTION=VALUE[&...]]                TLS

Options (any order, each at most once; FILE may be relative to the working directory):

    ca=FILE             PEM bundle the members' certificates must chain to (default: the
                        system's CAs)
    cert=FILE, key=FILE a client certificate and its key (etcd's --client-cert-auth)
    server-name=NAME    the name the members' certificates must carry (default: the first
                        endpoint's host; gRPC checks one name for all members)
    user=NAME           authenticate as NAME (etcd's `auth enable`)
    password-file=FILE  that user's password; without it, $MOORING_ETCD_PASSWORD

A URL never holds a password: URLs are on command lines (`ps`) and in logs and status
documents. `mooring`'s `--etcd-*` flags add these options to every etcd URL a command
is given (mooring/_etcdflags.py). Parsing reads no file; `load` reads them.
"""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "OPTIONS",
    "PASSWORD_ENV",
    "Credentials",
    "EtcdURL",
    "load",
    "parse",
    "redacted",
]

PASSWORD_ENV = "MOORING_ETCD_PASSWORD"
"""Where the password of `user=` comes from when the URL names no password file."""

OPTIONS = ("ca", "cert", "key", "server-name", "user", "password-file")
"""The query options, in the order `str(EtcdURL)` writes them."""
_TLS_ONLY = ("ca", "cert", "key", "server-name")
_EXPECTED = "expected etcd://HOST:PORT[,HOST:PORT...] or etcds://HOST:PORT[,...][?ca=FILE&...]"
_USERINFO = re.compile(r"(?<=://)([^/@?]*?):[^/@?]*@")


def redacted(url: str) -> str:
    """`url` with any password in its user info replaced by `***`, for messages."""
    return _USERINFO.sub(lambda m: f"{m[1]}:***@", url)


@dataclasses.dataclass(frozen=True)
class EtcdURL:
    """What an etcd URL names; `str()` gives it back in canonical form."""

    endpoints: tuple[str, ...]  # HOST:PORT of each member
    tls: bool = False  # etcds://
    ca: Path | None = None  # PEM CA bundle that verifies the members (None: the system's)
    cert: Path | None = None  # client certificate (PEM), with `key`
    key: Path | None = None  # its private key (PEM)
    server_name: str | None = None  # the name checked in every member's certificate
    user: str | None = None  # etcd user to authenticate as
    password_file: Path | None = None  # that user's password (None: $MOORING_ETCD_PASSWORD)

    def __post_init__(self) -> None:
        if not self.tls:
            given = [name for name in _TLS_ONLY if self.option(name) is not None]
            if given:
                raise ValueError(f"{given[0]}= is a TLS option: use etcds://")
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both cert=FILE and key=FILE")
        if self.password_file is not None and self.user is None:
            raise ValueError("password-file= needs user=NAME")

    def option(self, name: str) -> str | None:
        """The value of query option `name` (one of OPTIONS), None when not set."""
        value = getattr(self, name.replace("-", "_"))
        return None if value is None else str(value)

    def with_options(self, options: Mapping[str, str]) -> EtcdURL:
        """This URL with `options` (OPTIONS names) set; ValueError when one is set already
        to another value."""
        changes: dict[str, str | Path] = {}
        for name, value in options.items():
            current = self.option(name)
            if current is not None and current != value:
                raise ValueError(f"{name}= is {current} in the URL but {value} in a flag")
            field = name.replace("-", "_")
            changes[field] = value if name in ("server-name", "user") else Path(value)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def __str__(self) -> str:
        query = [
            f"{name}={urllib.parse.quote(value, safe='/')}"
            for name in OPTIONS
            if (value := self.option(name)) is not None
        ]
        scheme = "etcds" if self.tls else "etcd"
        return f"{scheme}://{','.join(self.endpoints)}" + ("?" + "&".join(query) if query else "")


def parse(url: str) -> EtcdURL:
    """An etcd URL (or a bare `HOST:PORT,...`, plaintext); ValueError when malformed.
    Reads no file."""
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "etcd", text
    if scheme.lower() not in ("etcd", "etcds"):
        raise ValueError(f"unknown scheme {scheme}://; {_EXPECTED}")
    body, _, query = rest.partition("?")
    body = body.strip().strip("/")
    if "@" in body:
        raise ValueError(
            "an etcd URL takes no user info (a password in it would show in `ps` and logs):"
            f" give user=NAME (--etcd-user) and --etcd-password-file FILE or {PASSWORD_ENV}"
        )
    endpoints = [part.strip() for part in body.split(",") if part.strip()]
    if not endpoints:
        raise ValueError(f"no etcd endpoints in {redacted(url)!r}; {_EXPECTED}")
    for endpoint in endpoints:
        host, colon, port = endpoint.rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad etcd endpoint {endpoint!r}; expected HOST:PORT")
    options: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        name, equals, value = pair.partition("=")
        value = urllib.parse.unquote(value)
        if name not in OPTIONS:
            raise ValueError(f"unknown etcd URL option {name!r}; expected {', '.join(OPTIONS)}")
        if not equals or not value:
            raise ValueError(f"etcd URL option {name}= needs a value")
        if name in options:
            raise ValueError(f"etcd URL option {name}= is given twice")
        options[name] = value
    plain = EtcdURL(endpoints=tuple(endpoints), tls=scheme.lower() == "etcds")
    return plain.with_options(options)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What an EtcdURL's files (and the password) hold, as gRPC and etcd take them."""

    ca: bytes | None = None
    cert: bytes | None = None
    key: bytes | None = None
    password: str | None = dataclasses.field(default=None, repr=False)


def _read(path: Path, what: str, *, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read etcd {what} {path}: {err.strerror or err}") from err
    if marker not in data:
        raise ValueError(f"etcd {what} {path} is not PEM (no {marker.decode()!r} line)")
    return data


def load(url: EtcdURL, *, env: Mapping[str, str]) -> Credentials:
    """Read the files `url` names, and the password (from its file, else from `env`);
    ValueError naming the file or the variable when one is missing or unreadable."""
    password: str | None = None
    if url.password_file is not None:
        try:
            text = url.password_file.read_text()
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not text"
            raise ValueError(
                f"cannot read etcd password file {url.password_file}: {reason or err}"
            ) from err
        password = text.removesuffix("\n").removesuffix("\r")  # `echo` adds a newline
        if not password:
            raise ValueError(f"etcd password file {url.password_file} is empty")
    elif url.user is not None:
        password = env.get(PASSWORD_ENV) or None
        if password is None:
            raise ValueError(
                f"etcd user {url.user} needs a password: give --etcd-password-file FILE"
                f" (password-file=FILE) or set {PASSWORD_ENV}"
            )
    return Credentials(
        ca=None if url.ca is None else _read(url.ca, "CA file", marker=b"-----BEGIN CERTIFICATE"),
        cert=(
            None
            if url.cert is None
            else _read(url.cert, "client certificate", marker=b"-----BEGIN CERTIFICATE")
        ),
        key=None if url.key is None else _read(url.key, "client key", marker=b"PRIVATE KEY-----"),
        password=password,
    )
