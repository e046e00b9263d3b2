"""The etcd hub store's keys: where each record lives under the root, how values are
written, and which names may become keys. No etcd calls.

Key layout (all under a configurable root, default `/mooring/`):

    agents/<agent>                     {"mode": "managed"|"autonomous"}
    apps/<agent>/<Kind>/<name>         one resource of one agent:
        managed:    {"object": {"metadata", "spec"}, "checksum", "origin": "principal",
                     "created_at", "updated_at"}; version = the key's etcd mod_revision
        autonomous: {"object", "checksum", "status", "status_checksum",
                     "origin": "agent", "agent_version", "created_at", "updated_at"};
                     version = agent_version
    status/<agent>/<Kind>/<name>       managed agents' reported status:
                    {"status", "status_checksum", "spec_version"}
    delivered/<agent>/<Kind>/<name>    the agent's last answer about the resource:
                    {"checksum", "version", "ok", "at"} (`hub.Delivery`)
    revoked/<key>                      one revoked certificate (`hub.Revocation`, keyed
                    sha256-<fingerprint> or serial-<serial>): {"serial", "fingerprint",
                    "reason", "agent", "revoked_at"}

Status of managed resources lives apart from their spec so that an agent's status
report never wakes the watch that pushes spec changes back to the same agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from principal import _hub as hub
from proto import codec, objects

__all__ = ["TXN_DELETES", "Keys", "agent_name", "dumps", "kind_and_name"]

TXN_DELETES = 100  # keys deleted per transaction (etcd's default --max-txn-ops is 128)


class Keys:
    """The keys of one hub store under `root` (a trailing `/` is added if missing)."""

    def __init__(self, root: str = "/mooring/") -> None:
        if not root.endswith("/"):
            root += "/"
        self.root = root
        self.apps_prefix = f"{root}apps/".encode()
        self.agents_prefix = f"{root}agents/".encode()
        self.revoked_prefix = f"{root}revoked/".encode()

    def agent(self, agent: str) -> bytes:
        return self.agents_prefix + agent.encode()

    def agent_of(self, key: bytes) -> str:
        """The agent name of a key under `agents_prefix`."""
        return key[len(self.agents_prefix) :].decode()

    def app(self, agent: str, kind: str, name: str) -> bytes:
        return f"{self.root}apps/{agent}/{kind}/{name}".encode()

    def status(self, agent: str, kind: str, name: str) -> bytes:
        return f"{self.root}status/{agent}/{kind}/{name}".encode()

    def delivered(self, agent: str, kind: str, name: str) -> bytes:
        return f"{self.root}delivered/{agent}/{kind}/{name}".encode()

    def revoked(self, entry: str) -> bytes:
        return self.revoked_prefix + entry.encode()

    def apps_of(self, agent: str) -> bytes:
        """The prefix of an agent's resources."""
        return f"{self.root}apps/{agent}/".encode()

    def status_of(self, agent: str) -> bytes:
        """The prefix of the status an agent reported."""
        return f"{self.root}status/{agent}/".encode()

    def delivered_of(self, agent: str) -> bytes:
        """The prefix of an agent's answers about its resources."""
        return f"{self.root}delivered/{agent}/".encode()

    def parse_app(self, key: bytes) -> tuple[str, str, str] | None:
        """(agent, kind, name) of a key under `apps_prefix`; None for any other shape."""
        rest = key[len(self.apps_prefix) :].decode()
        parts = rest.split("/")
        return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def dumps(value: Any) -> bytes:
    """A record's value as it is written (canonical JSON)."""
    return codec.canonical_json(value).encode()


def agent_name(name: str) -> str:
    """`name` if it may name an agent (and a key), else StoreError."""
    try:
        return objects.validate_agent_name(name)
    except objects.InvalidObjectError as err:
        raise hub.StoreError(str(err)) from err


def kind_and_name(doc: Mapping[str, Any]) -> tuple[str, str]:
    """The kind and name of a manifest, else StoreError."""
    try:
        return objects.validate_manifest(doc)
    except objects.InvalidObjectError as err:
        raise hub.StoreError(str(err)) from err
