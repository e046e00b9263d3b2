"""The agent registry on the hub: `mooring agent create|list|get|delete|set-mode`.

The registry is the hub store's agent records (`principal.HubStore`). Replicas serve only
registered agents (others are refused, `not_registered`), unless they run with
`principal serve --auto-register`: then an agent registers itself, in the mode its hello
says, the first time it connects. `agent create` registers it (so `app apply` can also
be refused for a name nobody registered, a typo), and `--issue-cert` gives it its
certificate in the same step.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mooring import _hubstore as hubstore
from mooring import _output as output
from mooring import _usage as usage
from proto import objects

if TYPE_CHECKING:
    import principal
    from principal import hub

__all__ = ["MODES", "add_agent_parsers", "agent_name", "cmd_registry"]

MODES = ("managed", "autonomous")


def agent_name(text: str) -> str:
    """argparse type: an agent name (a DNS-1123 label), or a one-line usage error."""
    try:
        return objects.validate_agent_name(text)
    except objects.InvalidObjectError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


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
    hubstore.add_store_flags(p)

    p = p_ag.add_parser("list", help="the agents registered on the hub")
    p.add_argument(
        "-o", "--output", choices=("wide", "json", "yaml"), help="wide also counts resources"
    )
    hubstore.add_store_flags(p)

    p = p_ag.add_parser("get", help="one registered agent and its resources on the hub")
    p.add_argument("name", metavar="NAME", type=agent_name, help="the agent's name")
    p.add_argument(
        "-o", "--output", choices=("json", "yaml"), help="json or yaml (default: a table)"
    )
    hubstore.add_store_flags(p)

    p = p_ag.add_parser(
        "delete",
        help="unregister an agent (its next connect is refused, or with `principal serve"
        " --auto-register` registers it again: stop it first)",
    )
    p.add_argument("name", metavar="NAME", type=agent_name, help="the agent's name")
    p.add_argument(
        "--cascade",
        action="store_true",
        help="also delete its Applications and AppProjects on the hub (refused without,"
        " while it has any)",
    )
    hubstore.add_store_flags(p)

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
    hubstore.add_store_flags(p)


def _shown(resources: Sequence[hub.Resource], *, limit: int = 5) -> str:
    names = [f"{r.kind} {r.name}" for r in resources[:limit]]
    more = len(resources) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


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

    return asyncio.run(hubstore.with_store(args, work))


def _pki_dir(args: argparse.Namespace) -> Path:
    from principal import pki

    if args.pki_dir is not None:
        directory = Path(args.pki_dir)
    else:
        recorded = hubstore.local_cluster(args)
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
        from principal import pki

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
        output.emit({"items": rows}, args.output)
        return 0
    if not rows:
        print("no agents registered", file=sys.stderr)
        return 0
    output.print_table(
        rows, ("name", "mode", "resources") if args.output == "wide" else ("name", "mode")
    )
    return 0


async def _get_agent(args: argparse.Namespace, desired: principal.HubStore) -> int:
    record = await hubstore.registered(desired, args.name)
    resources, _ = await desired.list_resources(record.name)
    if args.output:
        items = [{"kind": r.kind, "name": r.name, "origin": r.origin} for r in resources]
        output.emit({"name": record.name, "mode": record.mode, "resources": items}, args.output)
        return 0
    output.print_table(
        [{"name": record.name, "mode": record.mode, "resources": len(resources)}],
        ("name", "mode", "resources"),
    )
    return 0


async def _delete_agent(args: argparse.Namespace, desired: principal.HubStore) -> int:
    record = await hubstore.registered(desired, args.name)
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
    record = await hubstore.registered(desired, name)
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
