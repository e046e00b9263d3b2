"""The CLI on the hub store: the agent registry (`mooring agent create|list|get|delete|
set-mode`) and `mooring app apply|list|delete` on the hub.

Both find the hub store as `principal serve` names it: `--store`, else `--coordination`,
else the cluster.json of a local cluster's state dir (`--dir`, $MOORING_DIR, `.mooring`).

The registry is the hub store's agent records (`principal.HubStore`). An agent also
registers itself, in the mode its hello says, the first time it connects; `agent create`
registers it before that, so `app apply` can be refused for a name nobody registered (a
typo), and `--issue-cert` gives it its certificate in the same step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mooring import _usage as usage
from proto import objects

if TYPE_CHECKING:
    import principal
    from principal import _hub as hub

__all__ = [
    "add_agent_parsers",
    "add_store_flags",
    "agent_name",
    "app_on_hub",
    "cmd_registry",
    "emit",
    "hub_url",
    "print_table",
    "sync_and_health",
    "with_store",
]

MODES = ("managed", "autonomous")


# ----------------------------------------------------------------------------- parsers
def agent_name(text: str) -> str:
    """argparse type: an agent name (a DNS-1123 label), or a one-line usage error."""
    try:
        return objects.validate_agent_name(text)
    except objects.InvalidObjectError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_store_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coordination", help="etcd://HOST:PORT[,HOST:PORT] of the hub store")
    p.add_argument(
        "--store",
        help="the hub store, as `principal serve --store` takes it (etcd:// or kubernetes://)",
    )
    p.add_argument("--dir", type=Path, help="state dir of a local cluster (`mooring up`)")
    p.add_argument("--store-root", default="/mooring/", help="etcd key prefix of the hub store")


def add_agent_parsers(p_ag: Any) -> None:
    """`agent create|list|get|delete|set-mode` beside `agent run`."""
    p = p_ag.add_parser("create", help="register an agent on the hub")
    p.add_argument("name", metavar="NAME", type=agent_name, help="the agent's name")
    p.add_argument(
        "--mode", choices=MODES, default="managed", help="managed (default) or autonomous"
    )
    p.add_argument(
        "--issue-cert",
        action="store_true",
        help="also issue its client certificate with the CA (PKI_DIR/agents/NAME/)",
    )
    p.add_argument(
        "--pki-dir",
        type=Path,
        help="the CA folder of `mooring pki init` (default: a local cluster's DIR/pki)",
    )
    p.add_argument("--days", type=int, default=365, help="days the certificate is valid")
    add_store_flags(p)

    p = p_ag.add_parser("list", help="the agents registered on the hub")
    p.add_argument(
        "-o", "--output", choices=("wide", "json", "yaml"), help="wide also counts resources"
    )
    add_store_flags(p)

    p = p_ag.add_parser("get", help="one registered agent and its resources on the hub")
    p.add_argument("name", metavar="NAME", type=agent_name, help="the agent's name")
    p.add_argument(
        "-o", "--output", choices=("json", "yaml"), help="json or yaml (default: a table)"
    )
    add_store_flags(p)

    p = p_ag.add_parser(
        "delete",
        help="unregister an agent (a running agent registers again when it next connects:"
        " stop it first)",
    )
    p.add_argument("name", metavar="NAME", type=agent_name, help="the agent's name")
    p.add_argument(
        "--cascade",
        action="store_true",
        help="also delete its Applications and AppProjects on the hub (refused without,"
        " while it has any)",
    )
    add_store_flags(p)

    p = p_ag.add_parser(
        "set-mode",
        help="change a registered agent's mode (the agent must be restarted with the new --mode)",
    )
    p.add_argument("name", metavar="NAME", type=agent_name, help="the agent's name")
    p.add_argument("mode", metavar="MODE", choices=MODES, help="managed or autonomous")
    p.add_argument(
        "--force",
        action="store_true",
        help="change it although it has resources on the hub (they are kept as they are)",
    )
    add_store_flags(p)


# ----------------------------------------------------------------------------- store, output
def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.dir or ".mooring")  # --dir also reads MOORING_DIR


def _cluster(args: argparse.Namespace) -> dict[str, Any] | None:
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
    recorded = _cluster(args)
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


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns).rstrip())


def emit(data: Any, fmt: str) -> None:
    """`data` as JSON or YAML on stdout."""
    if fmt == "yaml":
        import yaml

        print(yaml.safe_dump(data, sort_keys=True, default_flow_style=False), end="")
    else:
        print(json.dumps(data, indent=2, sort_keys=True))


def sync_and_health(status: Any) -> tuple[str, str]:
    """(SYNC, HEALTH) of a reported Argo CD status; "-" for what it does not say."""
    if not isinstance(status, Mapping):
        return "-", "-"

    def said(part: str) -> str:
        got = status.get(part)
        return str((got.get("status") if isinstance(got, Mapping) else None) or "-")

    return said("sync"), said("health")


def _shown(resources: Sequence[hub.Resource], *, limit: int = 5) -> str:
    names = [f"{r.kind} {r.name}" for r in resources[:limit]]
    more = len(resources) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


# ----------------------------------------------------------------------------- agent registry
def cmd_registry(args: argparse.Namespace) -> int:
    import asyncio

    # A CA that cannot be used fails before anything is registered.
    pki_dir = _pki_dir(args) if args.agent_command == "create" and args.issue_cert else None

    async def work(desired: principal.HubStore) -> int:
        if args.agent_command == "create":
            return await _create(args, desired, pki_dir)
        command = {"list": _list_agents, "get": _get_agent, "delete": _delete_agent}.get(
            args.agent_command, _set_mode
        )
        return await command(args, desired)

    return asyncio.run(with_store(args, work))


def _pki_dir(args: argparse.Namespace) -> Path:
    from principal import _pki as pki

    if args.pki_dir is not None:
        directory = Path(args.pki_dir)
    else:
        recorded = _cluster(args)
        if recorded is None or not recorded.get("pki"):
            raise usage.UsageError(
                "agent create: --issue-cert needs --pki-dir (the CA folder of `mooring pki init`)"
                " or --dir of a local cluster"
            )
        directory = Path(recorded["pki"])
    pki.load_ca(directory)  # PkiError (one line) when there is no usable CA
    return directory


async def _create(
    args: argparse.Namespace, desired: principal.HubStore, pki_dir: Path | None = None
) -> int:
    import principal

    name, mode = args.name, args.mode
    existing = await desired.get_agent(name)
    if existing is not None and existing.mode != mode:
        raise principal.ModeConflictError(
            f"agent {name} is registered as {existing.mode}, not {mode}:"
            f" `mooring agent set-mode {name} {mode}` changes it"
        )
    await desired.register_agent(name, mode=mode)
    print(f"agent {name} {'unchanged' if existing is not None else 'created'} ({mode})")
    if pki_dir is not None:
        from principal import _pki as pki

        folder = pki_dir / pki.AGENTS_DIR / name
        if (folder / pki.TLS_CERT).exists():
            print(f"certificate kept in {folder} (already issued)")
        else:
            folder = pki.issue_agent(pki_dir, name=name, days=args.days)
            print(f"certificate written to {folder} (tls.crt, tls.key, ca.crt: its --tls-dir)")
    return 0


async def _list_agents(args: argparse.Namespace, desired: principal.HubStore) -> int:
    agents = await desired.list_agents()
    rows: list[dict[str, Any]] = [{"name": a.name, "mode": a.mode} for a in agents]
    if args.output in ("wide", "json", "yaml"):
        for row in rows:
            row["resources"] = len((await desired.list_resources(row["name"]))[0])
    if args.output in ("json", "yaml"):
        emit({"items": rows}, args.output)
        return 0
    if not rows:
        print("no agents registered", file=sys.stderr)
        return 0
    print_table(rows, ("name", "mode", "resources") if args.output == "wide" else ("name", "mode"))
    return 0


async def _registered(desired: principal.HubStore, name: str) -> hub.AgentRecord:
    record = await desired.get_agent(name)
    if record is None:
        raise RuntimeError(
            f"agent {name} is not registered (`mooring agent list` shows those that are)"
        )
    return record


async def _get_agent(args: argparse.Namespace, desired: principal.HubStore) -> int:
    record = await _registered(desired, args.name)
    resources, _ = await desired.list_resources(record.name)
    if args.output:
        items = [{"kind": r.kind, "name": r.name, "origin": r.origin} for r in resources]
        emit({"name": record.name, "mode": record.mode, "resources": items}, args.output)
        return 0
    print_table(
        [{"name": record.name, "mode": record.mode, "resources": len(resources)}],
        ("name", "mode", "resources"),
    )
    return 0


async def _delete_agent(args: argparse.Namespace, desired: principal.HubStore) -> int:
    record = await _registered(desired, args.name)
    resources, _ = await desired.list_resources(record.name)
    if resources and not args.cascade:
        raise RuntimeError(
            f"agent {record.name} still has {len(resources)} resource(s) on the hub"
            f" ({_shown(resources)}): delete them with `mooring app delete`, or pass --cascade"
        )
    deleted = await desired.delete_agent(record.name, cascade=args.cascade)
    for resource in deleted or []:
        print(f"{resource.kind} {resource.name} deleted")
    print(
        f"agent {record.name} deleted" if deleted is not None else f"agent {record.name} not found"
    )
    return 0 if deleted is not None else 1


async def _set_mode(args: argparse.Namespace, desired: principal.HubStore) -> int:
    name, mode = args.name, args.mode
    record = await _registered(desired, name)
    if record.mode == mode:
        print(f"agent {name} unchanged ({mode})")
        return 0
    resources, _ = await desired.list_resources(name)
    if resources and not args.force:
        if record.mode == "managed":
            kept, where = "the hub's desired state", "`mooring app delete`"
        else:
            kept, where = "mirrors of its own", "on the agent"
        raise RuntimeError(
            f"agent {name} has {len(resources)} resource(s) on the hub ({kept}), which a mode"
            f" change keeps as they are: delete them first ({where}), or pass --force"
        )
    if await desired.set_agent_mode(name, mode=mode) is None:
        raise RuntimeError(f"agent {name} is not registered (deleted meanwhile)")
    print(f"agent {name} mode changed: {record.mode} -> {mode}")
    print(
        f"note: restart agent {name} with --mode {mode}, and a new --state file (a SQLite"
        " store keeps the mode it was made for). Until its session ends it runs as"
        f" {record.mode}; then every connect with --mode {record.mode} is refused"
        " (mode_conflict)",
        file=sys.stderr,
    )
    return 0


# ----------------------------------------------------------------------------- app on the hub
async def app_on_hub(args: argparse.Namespace, desired: principal.HubStore) -> int:
    if args.app_command == "apply":
        return await _apply(args, desired)
    if args.app_command == "delete":
        return await _delete_apps(args, desired)
    return await _list_apps(args, desired)


async def _apply(args: argparse.Namespace, desired: principal.HubStore) -> int:
    from mooring import _manifests as manifests

    agent = objects.validate_agent_name(args.agent)
    docs = manifests.valid(args.file, need_spec=True)  # every one checked before any is written
    if await desired.get_agent(agent) is None:
        if not args.create_agent:
            raise RuntimeError(
                f"agent {agent} is not registered: `mooring agent create {agent}` registers it"
                " (or pass --create-agent)"
            )
        await desired.register_agent(agent, mode="managed")
        print(f"agent {agent} created (managed)")
    for doc in docs:
        kind, name = objects.validate_manifest(doc)
        existed = await desired.get_resource(agent, kind, name) is not None
        resource, changed = await desired.apply_desired(agent, doc)
        said = "unchanged" if not changed else "configured" if existed else "created"
        print(f"{resource.kind} {resource.name} {said} for agent {agent}")
    return 0


async def _delete_apps(args: argparse.Namespace, desired: principal.HubStore) -> int:
    from mooring import _manifests as manifests

    agent = objects.validate_agent_name(args.agent)
    missing = 0
    for kind, name in manifests.delete_targets(args):
        deleted = await desired.delete_desired(agent, kind, name)
        missing += not deleted
        print(f"{kind} {name} {'deleted' if deleted else 'not found'} for agent {agent}")
    return 1 if missing else 0


async def _list_apps(args: argparse.Namespace, desired: principal.HubStore) -> int:
    """Every registered agent's resources (or --agent's): AGENT KIND NAME MODE SYNC HEALTH."""
    output = "json" if args.json and not args.output else args.output
    if args.agent is not None:
        agent = objects.validate_agent_name(args.agent)
        record = await desired.get_agent(agent)
        agents = [(agent, record.mode if record else None)]
    else:
        agents = [(a.name, a.mode) for a in await desired.list_agents()]
    rows = []
    for agent, mode in agents:
        resources, _ = await desired.list_resources(agent)
        statuses = await desired.list_status(agent)
        for r in resources:
            mirror = r.origin == "agent"
            status = r.status if mirror else (statuses.get((r.kind, r.name)) or {}).get("status")
            sync, health = sync_and_health(status)
            rows.append(
                {
                    "agent": agent,
                    "mode": mode or "-",
                    "kind": r.kind,
                    "name": f"{agent}-{r.name}" if mirror else r.name,
                    "agent_name": r.name,
                    "version": r.version,
                    "checksum": r.checksum[:12],
                    "origin": r.origin,
                    "sync": sync,
                    "health": health,
                    "status": "/".join(x for x in (sync, health) if x != "-") or "-",
                    "spec": r.object.get("spec"),
                    "status_object": status,
                }
            )
    if output in ("json", "yaml"):
        data: dict[str, Any] = {"items": rows}
        if args.agent is not None:
            data.update(agent=agents[0][0], mode=agents[0][1])
        emit(data, output)
        return 0
    if not rows:
        where = f" for agent {agents[0][0]}" if args.agent is not None else ""
        unknown = args.agent is not None and agents[0][1] is None
        print(
            f"no resources found{where}" + (" (it is not registered)" if unknown else ""),
            file=sys.stderr,
        )
        return 0
    columns = ["agent", "kind", "name", "mode", "sync", "health"]
    if output == "wide":
        columns += ["version", "checksum", "origin"]
    print_table(rows, columns)
    return 0
