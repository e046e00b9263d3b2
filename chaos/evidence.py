"""Gathering what the invariant checkers judge, from a local cluster and a run dir.

- `history(directory)`: every replica's session history (DIR/history/*.jsonl).
- `snapshot(directory)`: for every agent, the writer's resources as the hub and the
  agent's local store hold them (through `principal.open_hub_store` and
  `agent.AgentStore`, the public store APIs).
- `etcd_versions(endpoints, key, login=)`: every stored version of one etcd key, walking
  back through its revisions with etcd's JSON gateway (the local cluster's etcd does not
  compact, so the whole run is there), logged in as the cluster's etcd user when it has
  one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import agent
import principal
from chaos import _local as local
from chaos import workload

__all__ = ["etcd_versions", "history", "leadership", "login", "snapshot"]

SHARD_MAP_KEY = "election/shardmap"
LEADER_KEY = "election/leader"
STORE_ROOT = "/mooring/"


def history(directory: str | Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted((Path(directory) / "history").glob("*.jsonl")):
        events.extend(local.read_jsonl(path))
    return events


def _rev(obj: Any) -> str | None:
    try:
        return str(obj["spec"]["source"]["targetRevision"])
    except (KeyError, TypeError):
        return None


async def _hub_view(url: str, agents: Sequence[str]) -> dict[str, dict[str, Any]]:
    hub = principal.open_hub_store(url)
    await hub.connect()
    try:
        out: dict[str, dict[str, Any]] = {}
        for name in agents:
            resources, _ = await hub.list_resources(name)
            out[name] = {
                r.name: {"rev": _rev(r.object), "version": r.version}
                for r in resources
                if r.kind == "Application" and r.name.startswith(workload.PREFIX)
            }
        return out
    finally:
        await hub.close()


def _local_view(path: str) -> dict[str, Any]:
    store = agent.AgentStore(path, create=False)
    try:
        return {
            r.name: {"rev": _rev(r.object), "version": r.version}
            for r in store.list()
            if r.kind == "Application" and r.name.startswith(workload.PREFIX)
        }
    finally:
        store.close()


def snapshot(directory: str | Path) -> dict[str, dict[str, Any]]:
    """agent -> {"mode", "hub": {name: {rev, version}}, "local": {...}}."""
    state = local.cluster(directory)
    agents = state["agents"]
    hub = asyncio.run(
        _hub_view(state.get("store") or state["coordination"], [a["name"] for a in agents])
    )
    return {
        a["name"]: {"mode": a["mode"], "hub": hub[a["name"]], "local": _local_view(a["state"])}
        for a in agents
    }


def _post(
    endpoint: str, path: str, body: dict[str, Any], token: str | None = None
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    request = urllib.request.Request(
        f"http://{endpoint}{path}", data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        data: dict[str, Any] = json.loads(resp.read())
        return data


def login(coordination: str) -> tuple[str, str] | None:
    """(user, password) from an etcd URL's `user=` and `password-file=`, or None."""
    options = urllib.parse.parse_qs(urllib.parse.urlsplit(coordination).query)
    if "user" not in options or "password-file" not in options:
        return None
    password = Path(options["password-file"][0]).read_text().strip()
    return options["user"][0], password


def etcd_versions(
    endpoints: Sequence[str], key: str, *, login: tuple[str, str] | None = None
) -> list[tuple[int, dict[str, Any] | None]]:
    """Every version of `key` as (mod revision, JSON value), oldest first. A deletion
    shows as (revision of the delete, None) only when the key was re-created after it.
    With `login`, as that etcd user (a token from the member that is read: etcd's simple
    tokens are each member's own)."""
    encoded = base64.b64encode(key.encode()).decode()
    last_error: Exception | None = None
    for endpoint in endpoints:
        try:
            token = None
            if login is not None:
                user, password = login
                answer = _post(
                    endpoint, "/v3/auth/authenticate", {"name": user, "password": password}
                )
                token = str(answer["token"])
            out: list[tuple[int, dict[str, Any] | None]] = []
            revision = 0  # 0: the newest
            while True:
                body: dict[str, Any] = {"key": encoded}
                if revision:
                    body["revision"] = revision
                got = _post(endpoint, "/v3/kv/range", body, token)
                kvs = got.get("kvs") or []
                if not kvs:
                    break
                kv = kvs[0]
                value = json.loads(base64.b64decode(kv["value"]))
                mod = int(kv["mod_revision"])
                out.append((mod, value))
                create = int(kv["create_revision"])
                if int(kv.get("version", 1)) <= 1:
                    if create <= 1:
                        break
                    revision = create - 1  # an earlier life of the key, if any
                else:
                    revision = mod - 1
            return sorted(out, key=lambda item: item[0])
        except (OSError, ValueError, KeyError, urllib.error.URLError) as err:
            last_error = err
    raise local.CliError(f"no etcd member answered for {key}: {last_error}")


def leadership(
    directory: str | Path,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict[str, Any] | None]]]:
    """(every shard map version, every leader record version) of a local cluster."""
    state = local.cluster(directory)
    endpoints = [m["endpoint"] for m in state["etcd"]]
    user = login(state["coordination"])
    maps = [
        (rev, value)
        for rev, value in etcd_versions(endpoints, STORE_ROOT + SHARD_MAP_KEY, login=user)
        if value
    ]
    leaders = etcd_versions(endpoints, STORE_ROOT + LEADER_KEY, login=user)
    return maps, leaders
