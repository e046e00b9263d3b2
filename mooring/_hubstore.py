"""The hub store a hub command works on: its flags, the URL they name, the store opened
for one command, and an agent's record that must be there.

A command finds the hub store as `principal serve` names it: `--store`, else
`--coordination`, else the cluster.json of a local cluster's state dir (`--dir`,
$MOORING_DIR, `.mooring`). Used by the agent registry and app commands
(`mooring/_agentcli.py`, `mooring/_appcli.py`) and by `pki revoke|revocations`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mooring import _access as access
from mooring import _usage as usage

if TYPE_CHECKING:
    import principal
    from principal import hub

__all__ = ["add_store_flags", "hub_url", "local_cluster", "registered", "with_store"]


def add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coordination", help="etcd://HOST:PORT[,HOST:PORT] (etcds:// for TLS) of the hub store"
    )
    p.add_argument(
        "--store",
        help="the hub store, as `principal serve --store` takes it (etcd[s]:// or kubernetes://)",
    )
    p.add_argument("--dir", type=Path, help="state dir of a local cluster (`mooring up`)")
    p.add_argument("--store-root", default="/mooring/", help="etcd key prefix of the hub store")
    access.add_etcd_flags(p)


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or ".mooring")  # --dir also reads MOORING_DIR


def local_cluster(args: argparse.Namespace) -> dict[str, Any] | None:
    """The cluster.json of the local cluster in the state dir, or None without one."""
    path = _state_dir(args) / "cluster.json"
    if not path.exists():
        return None
    recorded: dict[str, Any] = json.loads(path.read_text())
    return recorded


def hub_url(args: argparse.Namespace) -> str:
    if getattr(args, "store", None):
        return str(args.store)
    if args.coordination:
        return str(args.coordination)
    recorded = local_cluster(args)
    if recorded is not None:
        return str(recorded.get("store") or recorded["coordination"])
    raise usage.UsageError(
        "no hub store: pass --store (etcd:// or kubernetes://), --coordination etcd://HOST:PORT"
        " or --dir of a running `mooring up`"
    )


async def with_store(
    args: argparse.Namespace, work: Callable[[principal.HubStore], Awaitable[int]]
) -> int:
    import principal

    desired = principal.open_hub_store(hub_url(args), root=args.store_root, timeout=3.0)
    try:
        await desired.connect()
        return await work(desired)
    finally:
        await desired.close()


async def registered(desired: principal.HubStore, name: str) -> hub.AgentRecord:
    """The agent's record; RuntimeError (one line) when it is not registered."""
    record = await desired.get_agent(name)
    if record is None:
        raise RuntimeError(
            f"agent {name} is not registered (`mooring agent list` shows those that are)"
        )
    return record
