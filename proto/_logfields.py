"""Structured log fields: their names, in one place, and how a call site attaches them.

    from proto import _logfields as logfields

    logger.info(
        "agent %s: applied %s %s (version %d)", agent, kind, name, version,
        extra=logfields.of(agent=agent, kind=kind, name=name, version=version),
    )

`of` puts the fields under one LogRecord attribute (`ATTR`), so they can never clash with
LogRecord's own attributes (`name`, `message`, ...). `mooring._logging` writes them as
top-level keys of each JSON line (`--log-format json`) and as `key=value` pairs after a
text line. The message keeps its own wording: the fields repeat what it names, for
machines. A field given as None is left out. The keyword names are the field names.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AGENT",
    "ATTR",
    "DELETE",
    "ENDPOINT",
    "EPOCH",
    "ERROR",
    "FENCING_TOKEN",
    "KIND",
    "MODE",
    "NAME",
    "OPERATION",
    "PEER",
    "REASON",
    "REPLICA",
    "SESSION",
    "TASK",
    "UPSERT",
    "VERSION",
    "fields_of",
    "of",
]

AGENT = "agent"  # the agent's name
REPLICA = "replica"  # a principal replica's id
SESSION = "session"  # a session's id (hex), as the Welcome names it
EPOCH = "epoch"  # the shard map's epoch
REASON = "reason"  # a short machine reason: a metric label (`held`, `superseded`, ...)
KIND = "kind"  # Application | AppProject
NAME = "name"  # the resource's name
VERSION = "version"  # the resource's version (the principal's, or the autonomous agent's)
OPERATION = "operation"  # upsert | delete
MODE = "mode"  # managed | autonomous
FENCING_TOKEN = "fencing_token"  # a session entry's (or a lease's) fencing token
PEER = "peer"  # the gRPC peer address of a stream
ENDPOINT = "endpoint"  # HOST:PORT an agent dials
ERROR = "error"  # the error text, one line
TASK = "task"  # a replica's supervised task (principal/_server.py POLICIES)

ATTR = "mooring_fields"  # the LogRecord attribute holding the fields (a dict)

UPSERT = "upsert"  # values of OPERATION
DELETE = "delete"


def of(
    *,
    agent: str | None = None,
    replica: str | None = None,
    session: str | None = None,
    epoch: int | None = None,
    reason: str | None = None,
    kind: str | None = None,
    name: str | None = None,
    version: int | None = None,
    operation: str | None = None,
    mode: str | None = None,
    fencing_token: int | None = None,
    peer: str | None = None,
    endpoint: str | None = None,
    error: str | None = None,
    task: str | None = None,
) -> dict[str, Any]:
    """The `extra=` mapping of a log call carrying these fields (None ones left out)."""
    given = {
        AGENT: agent,
        REPLICA: replica,
        SESSION: session,
        EPOCH: epoch,
        REASON: reason,
        KIND: kind,
        NAME: name,
        VERSION: version,
        OPERATION: operation,
        MODE: mode,
        FENCING_TOKEN: fencing_token,
        PEER: peer,
        ENDPOINT: endpoint,
        ERROR: error,
        TASK: task,
    }
    return {ATTR: {key: value for key, value in given.items() if value is not None}}


def fields_of(record: Any) -> dict[str, Any]:
    """The fields a LogRecord carries through `of` (empty when none)."""
    found = getattr(record, ATTR, None)
    return dict(found) if isinstance(found, dict) else {}
