"""How commands reach secured stores: the `--etcd-*` flags and `--redis-password-file`.

An etcd URL carries its TLS files and its user as query options (election/_etcdurl.py:
`etcds://HOST:PORT?ca=FILE&cert=FILE&key=FILE&user=NAME&password-file=FILE`), so one
string names the store wherever it goes (the replica's stores, `mooring status`, the
hub commands). The flags are the same options for people: `apply` adds them to every
etcd URL the command was given (`--coordination`, `--store`), and checks before
anything runs that each file can be read and the user has a password, so a bad value
is a usage error (exit 2) naming the flag. The password itself is never a flag nor in
a URL (both show in `ps`): it comes from `--etcd-password-file`, or from
$MOORING_ETCD_PASSWORD in the environment of the process that opens the store.

Redis takes redis-py's URL (`rediss://USER:PASSWORD@HOST:PORT?ssl_ca_certs=FILE`,
with `ssl_certfile`, `ssl_keyfile`); its password can stay off the command line in
$MOORING_REDIS (the whole URL) or in `--redis-password-file`, which `apply` puts into
the URL held in memory.
"""

from __future__ import annotations

import argparse
import urllib.parse
from collections.abc import Mapping
from pathlib import Path

from election import etcdurl
from mooring import _usage as usage

__all__ = ["add_etcd_flags", "add_redis_flags", "apply"]

ETCD_FLAGS = {
    "ca": "--etcd-ca",
    "cert": "--etcd-cert",
    "key": "--etcd-key",
    "server-name": "--etcd-server-name",
    "user": "--etcd-user",
    "password-file": "--etcd-password-file",
}
"""URL option -> the flag that sets it on every etcd URL of a command."""

URL_ARGS = {"coordination": "--coordination", "store": "--store"}
"""The attributes of parsed arguments that may hold an etcd URL, and their flags."""


def add_etcd_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group(
        "secured etcd", "added to every etcd URL given (or as ?ca=FILE&... in the URL itself)"
    )
    group.add_argument(
        "--etcd-ca",
        metavar="FILE",
        help="PEM CA bundle that etcd's server certificates chain to (etcds:// only;"
        " default: the system's CAs)",
    )
    group.add_argument(
        "--etcd-cert",
        metavar="FILE",
        help="client certificate (PEM) for etcd's --client-cert-auth, with --etcd-key",
    )
    group.add_argument("--etcd-key", metavar="FILE", help="the client certificate's key (PEM)")
    group.add_argument(
        "--etcd-server-name",
        metavar="NAME",
        help="the name every member's certificate must carry (default: the first endpoint's host)",
    )
    group.add_argument("--etcd-user", metavar="USER", help="authenticate to etcd as USER")
    group.add_argument(
        "--etcd-password-file",
        metavar="FILE",
        help=f"that user's password (default: ${etcdurl.PASSWORD_ENV}; never a flag: ps shows"
        " flags)",
    )


def add_redis_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--redis-password-file",
        metavar="FILE",
        help="the password of --redis's user (or of Redis's default user), kept off the"
        " command line ($MOORING_REDIS, the whole URL, does the same)",
    )


def apply(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Add the `--etcd-*` flags to the command's etcd URLs and check what they name;
    put `--redis-password-file`'s password into `--redis`. UsageError when a value is bad.

    A URL that does not parse is left alone: the command reports it in its own words."""
    options = {
        name: str(value)
        for name, flag in ETCD_FLAGS.items()
        if (value := getattr(args, flag[2:].replace("-", "_"), None)) is not None
    }
    applied = False
    for attr, flag in URL_ARGS.items():
        text = getattr(args, attr, None)
        if not isinstance(text, str) or not text.startswith(("etcd://", "etcds://")):
            continue
        try:
            url = etcdurl.parse(text)
        except ValueError:
            continue
        if options:
            url = _with_flags(url, options, flag=flag)
            setattr(args, attr, str(url))
            applied = True
        try:
            etcdurl.load(url, env=env)
        except ValueError as err:
            raise usage.UsageError(f"{_blame(err, options, flag)}: {err}") from err
    if options and not applied:
        given = ", ".join(ETCD_FLAGS[name] for name in options)
        raise usage.UsageError(
            f"{given}: no etcd URL to apply to (give --coordination or --store etcds://...)"
        )
    _apply_redis_password(args)


def _with_flags(url: etcdurl.EtcdURL, options: Mapping[str, str], *, flag: str) -> etcdurl.EtcdURL:
    if not url.tls:
        tls_only = [ETCD_FLAGS[name] for name in ("ca", "cert", "key", "server-name")]
        used = [f for name, f in ETCD_FLAGS.items() if name in options and f in tls_only]
        if used:
            raise usage.UsageError(f"{used[0]} needs TLS: {flag} must be an etcds:// URL")
    try:
        return url.with_options(options)
    except ValueError as err:
        raise usage.UsageError(f"{flag}: {err}") from err


def _blame(err: ValueError, options: Mapping[str, str], flag: str) -> str:
    """The flag to name for an unusable file: the --etcd-* flag that gave it, else `flag`."""
    for name, value in options.items():
        if name != "user" and value in str(err):
            return ETCD_FLAGS[name]
    return flag


def _apply_redis_password(args: argparse.Namespace) -> None:
    path = getattr(args, "redis_password_file", None)
    if path is None:
        return
    redis = getattr(args, "redis", None)
    if not redis:
        raise usage.UsageError("--redis-password-file needs --redis")
    try:
        password = Path(path).read_text().removesuffix("\n").removesuffix("\r")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not text"
        raise usage.UsageError(f"--redis-password-file: cannot read {path}: {reason}") from err
    if not password:
        raise usage.UsageError(f"--redis-password-file: {path} is empty")
    parts = urllib.parse.urlsplit(redis)
    if parts.password is not None:
        raise usage.UsageError("--redis-password-file: --redis already holds a password")
    user = urllib.parse.quote(urllib.parse.unquote(parts.username or ""), safe="")
    host = parts.netloc.rpartition("@")[2]
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
    args.redis = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
