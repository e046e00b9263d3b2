"""etcd's own authentication for a local cluster: its users, their passwords, turning it on.

The passwords live in 0600 files, made once and kept; the requests that add the users and
roles and enable authentication go through the etcd JSON gateway the caller provides.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["EtcdAuth", "Gateway", "enable"]

Gateway = Callable[[str, Mapping[str, Any]], None]
"""POST a JSON body to a path of etcd's JSON gateway (`/v3/...`); HTTPError on refusal."""


@dataclasses.dataclass(frozen=True)
class EtcdAuth:
    """etcd's own authentication, as a local cluster turns it on: a `root` user (only to
    administer) and `user`, allowed to read and write the keys under `prefix` alone.
    The passwords live in 0600 files under `directory`, made once and kept, so a cluster
    restarted on its data dir keeps its users."""

    directory: Path
    user: str = "mooring"
    prefix: str = "/mooring/"

    @property
    def password_file(self) -> Path:
        return self.directory / f"etcd-{self.user}.password"

    @property
    def root_password_file(self) -> Path:
        return self.directory / "etcd-root.password"

    def url(self, base: str) -> str:
        """The etcd URL `base` logging in as this user (its password by file)."""
        options = urllib.parse.urlencode(
            {"user": self.user, "password-file": str(self.password_file)}, safe="/"
        )
        return base + ("&" if "?" in base else "?") + options

    def passwords(self) -> tuple[str, str]:
        """(root's, the user's) passwords, made on the first call."""
        return _secret_file(self.root_password_file), _secret_file(self.password_file)


def enable(auth: EtcdAuth, *, gateway: Gateway) -> None:
    """Turn on etcd's authentication (a no-op when it is on already, as on a restart
    from existing data): users root and `auth.user`, the latter with read-write on
    `auth.prefix` only."""
    probe = {"key": _b64(auth.prefix)}
    try:
        gateway("/v3/kv/range", probe)
    except urllib.error.HTTPError as err:
        if b"user name is empty" in err.read():
            return  # auth is on already
        raise
    root_password, password = auth.passwords()
    user = auth.user
    end = auth.prefix[:-1] + chr(ord(auth.prefix[-1]) + 1)  # the prefix's range end
    grant = {"permType": "READWRITE", "key": _b64(auth.prefix), "range_end": _b64(end)}
    for path, body in (
        ("/v3/auth/user/add", {"name": "root", "password": root_password}),
        ("/v3/auth/role/add", {"name": "root"}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/user/add", {"name": user, "password": password}),
        ("/v3/auth/role/add", {"name": user}),
        ("/v3/auth/role/grant", {"name": user, "perm": grant}),
        ("/v3/auth/user/grant", {"user": user, "role": user}),
        ("/v3/auth/enable", {}),
    ):
        gateway(path, body)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _secret_file(path: Path) -> str:
    """The secret in `path` (0600), or a new random one written there first."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secret + "\n")
        return secret
