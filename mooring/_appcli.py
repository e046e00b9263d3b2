"""Argo CD objects on the hub: `mooring app apply|list|get|delete` against the hub store.

`apply` writes an agent's desired Applications and AppProjects (every manifest checked
before any is written); `list` and `get` show each resource with whether its agent has
its current spec (`delivered`), the SYNC and HEALTH its agent reports, and, with `-o
json|yaml`, the whole object as Argo CD's CRD has it plus Mooring's view of it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mooring import _hubstore as hubstore
from mooring import _output as output
from proto import objects

if TYPE_CHECKING:
    import principal
    from principal import hub

__all__ = ["LIST_COLUMNS", "WIDE_COLUMNS", "app_on_hub", "delivered"]


async def app_on_hub(args: argparse.Namespace, desired: principal.HubStore) -> int:
    if args.app_command == "apply":
        return await _apply(args, desired)
    if args.app_command == "delete":
        return await _delete_apps(args, desired)
    if args.app_command == "get":
        return await _get_app(args, desired)
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


def delivered(resource: hub.Resource, answer: hub.Delivery | None) -> dict[str, Any]:
    """Whether the agent has the resource's current spec: yes (it applied it), refused,
    pending (since the spec was written), or "-" for an autonomous agent's own object."""
    if resource.origin == "agent":
        return {"state": "-"}
    if answer is not None and answer.checksum == resource.checksum:
        return {"state": "yes" if answer.ok else "refused", "at": answer.at}
    out: dict[str, Any] = {"state": "pending", "since": resource.updated_at}
    if answer is not None:
        out["last_answer"] = {"checksum": answer.checksum, "ok": answer.ok, "at": answer.at}
    return out


async def _rows(
    desired: principal.HubStore, agents: Sequence[tuple[str, str | None]]
) -> list[dict[str, Any]]:
    """One row per resource of each (agent, mode): what `app list` and `app get` show."""
    rows = []
    for agent, mode in agents:
        resources, _ = await desired.list_resources(agent)
        statuses = await desired.list_status(agent)
        answers = await desired.list_deliveries(agent)
        for r in resources:
            mirror = r.origin == "agent"
            status = r.status if mirror else (statuses.get((r.kind, r.name)) or {}).get("status")
            sync, health = output.sync_and_health(status)
            delivery = delivered(r, answers.get((r.kind, r.name)))
            state = delivery["state"]
            if state == "pending" and r.updated_at:
                state = f"pending {output.age(r.updated_at)}"
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
                    "delivered": state,
                    "delivery": delivery,
                    "sync": sync,
                    "health": health,
                    "status": "/".join(x for x in (sync, health) if x != "-") or "-",
                    "age": output.age(r.created_at) if r.created_at else "-",
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                    "spec": r.object.get("spec"),
                    "status_object": status,
                    "object": r.object,
                }
            )
    return rows


LIST_COLUMNS = ("agent", "kind", "name", "mode", "delivered", "sync", "health", "age")
WIDE_COLUMNS = ("version", "checksum", "origin")


async def _list_apps(args: argparse.Namespace, desired: principal.HubStore) -> int:
    """Every registered agent's resources (or --agent's), as LIST_COLUMNS."""
    fmt = args.output
    if args.agent is not None:
        agent = objects.validate_agent_name(args.agent)
        record = await desired.get_agent(agent)
        agents: list[tuple[str, str | None]] = [(agent, record.mode if record else None)]
    else:
        agents = [(a.name, a.mode) for a in await desired.list_agents()]
    rows = await _rows(desired, agents)
    if fmt in ("json", "yaml"):
        # Times as they are, not how long ago (which changes between two reads).
        shown = ("object", "age", "delivered")
        items = [{k: v for k, v in row.items() if k not in shown} for row in rows]
        data: dict[str, Any] = {"items": items}
        if args.agent is not None:
            data.update(agent=agents[0][0], mode=agents[0][1])
        output.emit(data, fmt)
        return 0
    if not rows:
        where = f" for agent {agents[0][0]}" if args.agent is not None else ""
        unknown = args.agent is not None and agents[0][1] is None
        print(
            f"no resources found{where}" + (" (it is not registered)" if unknown else ""),
            file=sys.stderr,
        )
        return 0
    output.print_table(rows, LIST_COLUMNS + (WIDE_COLUMNS if fmt == "wide" else ()))
    return 0


async def _get_app(args: argparse.Namespace, desired: principal.HubStore) -> int:
    """One resource of one agent: a LIST_COLUMNS row, or the whole object with -o."""
    agent = objects.validate_agent_name(args.agent)
    record = await hubstore.registered(desired, agent)
    name = objects.validate_name(args.name, kind=args.kind)
    # An autonomous agent's objects are shown on the hub as AGENT-NAME; take either.
    wanted = {name, name.removeprefix(f"{agent}-")}
    found = [
        row
        for row in await _rows(desired, [(agent, record.mode)])
        if row["kind"] == args.kind and row["agent_name"] in wanted
    ]
    if not found:
        raise RuntimeError(
            f"{args.kind} {name} not found for agent {agent}"
            f" (`mooring app list --agent {agent}` shows what it has)"
        )
    row = found[0]
    if args.output in ("json", "yaml"):
        output.emit(_document(row), args.output)
        return 0
    columns = LIST_COLUMNS + (WIDE_COLUMNS if args.output == "wide" else ())
    output.print_table([row], columns)
    return 0


def _document(row: Mapping[str, Any]) -> dict[str, Any]:
    """The object as Argo CD's CRD has it, with Mooring's view under metadata.annotations
    `mooring.io/...` keys and the delivery answer beside it."""
    obj = row["object"]
    metadata = dict(obj.get("metadata") or {})
    metadata["name"] = row["agent_name"]
    if row["created_at"]:
        metadata["creationTimestamp"] = row["created_at"]
    doc: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": row["kind"],
        "metadata": metadata,
        "spec": obj.get("spec") or {},
    }
    if row["status_object"] is not None:
        doc["status"] = row["status_object"]
    doc["mooring"] = {
        "agent": row["agent"],
        "mode": row["mode"],
        "origin": row["origin"],
        "version": row["version"],
        "checksum": row["checksum"],
        "updatedAt": row["updated_at"],
        "delivered": row["delivery"],
    }
    return doc
