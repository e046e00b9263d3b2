"""Writing the Kubernetes hub store: desired objects, an autonomous agent's mirrors, and
what agents report back (status, refusal conditions, deliveries as annotations).

Every write compares the object's resourceVersion and reads it again on a conflict, up
to RETRIES times. The mode check and a write are two calls (the Kubernetes API has no
multi-object transaction): an agent registered as autonomous between them can get one
hub-written object, which its agent refuses and the next resync reports. Deleting a
desired object also lifts the hub copy's finalizers: no Argo CD controller acts on the
hub, and the cascade they ask for runs on the workload cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from election import errors as cerrors
from election import kubeobjects as kobj
from principal import _hub as hub
from principal import _kubeagents as kubeagents
from principal import _kubemapping as kubemap
from principal import _kubereads as kubereads
from proto import codec, objects

__all__ = ["DELIVERY_WRITES", "KubeWrites"]

KINDS = kubemap.KINDS
RETRIES = kubemap.RETRIES
DELIVERY_WRITES = 8  # objects whose delivery annotation is written at once


class KubeWrites:
    """Writes to the Argo CD objects in the namespaces of `agents`, through `client`;
    `reads` reads the current objects (and hears which mirror deletions are ours)."""

    def __init__(
        self,
        client: kobj.KubeObjects,
        *,
        agents: kubeagents.KubeAgents,
        reads: kubereads.KubeReads,
    ) -> None:
        self.client = client
        self.agents = agents
        self.reads = reads

    async def _write(
        self,
        agent: str,
        kind: str,
        name: str,
        body: dict[str, Any],
        current: Mapping[str, Any] | None,
    ) -> dict[str, Any] | None:
        """Create (current None) or replace the synced part of `current` by a patch that
        compares its resourceVersion; None when the compare failed (read again)."""
        namespace = self.agents.namespace(agent)
        try:
            if current is None:
                created = await self.client.create(KINDS[kind], body, namespace=namespace)
                created.setdefault("kind", kind)
                return created
            ops = kobj.replace_ops(current, body)
            patched = await self.client.patch(KINDS[kind], name, ops, namespace=namespace)
            patched.setdefault("kind", kind)
            return patched
        except cerrors.ConflictError:
            return None
        except cerrors.CoordinationError as err:
            raise hub.StoreError(f"{kind} {name} for agent {agent}: {err}") from err

    # --- desired state ----------------------------------------------------------------------
    async def apply_desired(self, agent: str, doc: Mapping[str, Any]) -> tuple[hub.Resource, bool]:
        try:
            objects.validate_agent_name(agent)
            kind, name = objects.validate_manifest(doc)
        except objects.InvalidObjectError as err:
            raise hub.StoreError(str(err)) from err
        mode = await self.agents.mode(agent)
        if mode == "autonomous":
            raise hub.ModeConflictError(
                f"agent {agent} is autonomous: {kind} {name} is owned by the agent and "
                "cannot be changed from the principal; change it on the agent"
            )
        if mode is None:
            await self.agents.register_agent(agent, mode="managed")
        synced = objects.synced_object(doc)
        digest = codec.checksum(synced)
        for _ in range(RETRIES):
            current = await self.reads.get(agent, kind, name)
            extra: dict[str, str] = {kubemap.UPDATED_AT: hub.now_rfc3339()}
            if current is not None:
                resource = kubemap.resource(agent, current)
                if resource.origin == "agent":
                    raise hub.ModeConflictError(
                        f"{kind} {name} of agent {agent} is the agent's own"
                    )
                if resource.checksum == digest:
                    return resource, False
                if kubemap.STATUS_SPEC_VERSION in kubemap.annotations_of(current):
                    extra[kubemap.STATUS_SPEC_VERSION] = kubemap.annotations_of(current)[
                        kubemap.STATUS_SPEC_VERSION
                    ]
            body = kubemap.body(self.agents.namespace(agent), kind, name, synced, extra)
            written = await self._write(agent, kind, name, body, current)
            if written is not None:
                return kubemap.resource(agent, written), True
        raise hub.StoreError(f"{kind} {name} for agent {agent}: too much contention, try again")

    async def delete_desired(self, agent: str, kind: str, name: str) -> bool:
        if await self.agents.mode(agent) == "autonomous":
            raise hub.ModeConflictError(
                f"agent {agent} is autonomous: {kind} {name} cannot be deleted from the principal"
            )
        return await self.delete_lifting_finalizers(agent, kind, name)

    async def delete_lifting_finalizers(self, agent: str, kind: str, name: str) -> bool:
        current = await self.reads.get(agent, kind, name)
        if current is None or current.get("metadata", {}).get("deletionTimestamp"):
            return False  # gone, or already being deleted (finalizers pending)
        namespace = self.agents.namespace(agent)
        deleted = bool(
            await kubemap.call(self.client.delete(KINDS[kind], name, namespace=namespace))
        )
        if deleted and current.get("metadata", {}).get("finalizers"):
            # No Argo CD controller acts on the hub's copies: their finalizers (Argo CD's
            # cascade) belong on the workload cluster, where the agent deletes the object
            # and Argo CD runs them. On the hub they would hold the object forever.
            with contextlib.suppress(cerrors.CoordinationError):
                await self.client.patch(
                    KINDS[kind], name, [{"op": "remove", "path": "/metadata/finalizers"}],
                    namespace=namespace,
                )  # fmt: skip
        return deleted

    # --- an autonomous agent's mirrors ------------------------------------------------------
    async def mirror_upsert(
        self,
        agent: str,
        kind: str,
        name: str,
        *,
        obj: Mapping[str, Any],
        version: int,
        status: Mapping[str, Any] | None,
    ) -> hub.MirrorWrite:
        digest, status_digest = codec.checksum(obj), codec.checksum(status)
        for _ in range(RETRIES):
            current = await self.reads.get(agent, kind, name)
            if current is not None:
                resource = kubemap.resource(agent, current)
                if resource.origin == "agent" and (
                    resource.version > version
                    or (resource.checksum == digest and resource.status_checksum == status_digest)
                ):
                    return ""
            body = kubemap.body(
                self.agents.namespace(agent),
                kind,
                name,
                obj,
                {
                    kubemap.ORIGIN: "agent",
                    kubemap.AGENT_VERSION: str(version),
                    kubemap.AGENT_CHECKSUM: digest,
                    kubemap.UPDATED_AT: hub.now_rfc3339(),
                },
            )
            if status is not None:
                body["status"] = dict(status)
            if await self._write(agent, kind, name, body, current) is not None:
                return "created" if current is None else "updated"
        raise hub.StoreError(f"mirror {kind} {name} of agent {agent}: too much contention")

    async def mirror_delete(self, agent: str, kind: str, name: str, *, version: int) -> bool:
        current = await self.reads.get(agent, kind, name)
        if current is None:
            return False
        if kubemap.resource(agent, current).version > version:
            return False
        self.reads.expect_deletion(self.agents.namespace(agent), kind, name)
        try:
            return await self.client.delete(
                KINDS[kind],
                name,
                namespace=self.agents.namespace(agent),
                resource_version=current["metadata"]["resourceVersion"],
            )
        except cerrors.ConflictError:
            return False  # changed meanwhile: the agent's next event decides
        except cerrors.CoordinationError as err:
            raise hub.StoreError(f"mirror delete {kind} {name} of agent {agent}: {err}") from err

    # --- what agents report back --------------------------------------------------------------
    async def put_status(
        self, agent: str, kind: str, name: str, *, status: Mapping[str, Any], spec_version: int
    ) -> bool:
        digest = codec.checksum(status)

        def ops(current: Mapping[str, Any]) -> list[dict[str, Any]] | None:
            if codec.checksum(current.get("status")) == digest:
                return None
            annotations = {
                **kubemap.annotations_of(current),
                kubemap.STATUS_SPEC_VERSION: str(spec_version),
            }
            return [
                {"op": "add", "path": "/status", "value": dict(status)},
                {"op": "add", "path": "/metadata/annotations", "value": annotations},
            ]

        return await self._patch_status(agent, kind, name, ops, what="status")

    async def record_refusal(self, agent: str, kind: str, name: str, *, message: str) -> None:
        if kind != "Application":
            return  # an AppProject's status has no conditions

        def ops(current: Mapping[str, Any]) -> list[dict[str, Any]]:
            status = hub.refusal_conditions(current.get("status"), message)
            return [{"op": "add", "path": "/status", "value": status}]

        await self._patch_status(agent, kind, name, ops, what="condition")

    async def put_deliveries(
        self, agent: str, deliveries: Mapping[tuple[str, str], hub.Delivery | None]
    ) -> None:
        gate = asyncio.Semaphore(DELIVERY_WRITES)

        async def one(kind: str, name: str, delivery: hub.Delivery) -> None:
            said = json.dumps(delivery.to_data(), sort_keys=True, separators=(",", ":"))

            def ops(current: Mapping[str, Any]) -> list[dict[str, Any]] | None:
                annotations = kubemap.annotations_of(current)
                if annotations.get(kubemap.DELIVERED) == said:
                    return None
                annotations = {**annotations, kubemap.DELIVERED: said}
                return [{"op": "add", "path": "/metadata/annotations", "value": annotations}]

            async with gate:
                await self._patch_status(agent, kind, name, ops, what="delivery")

        # A deletion's answer needs no write: the object is gone with its annotations.
        await asyncio.gather(*(one(k, n, d) for (k, n), d in deliveries.items() if d is not None))

    async def _patch_status(
        self,
        agent: str,
        kind: str,
        name: str,
        ops: Callable[[Mapping[str, Any]], list[dict[str, Any]] | None],
        *,
        what: str,
    ) -> bool:
        """Patch the object with `ops(current)` (None: nothing to do) if it is unchanged
        meanwhile, reading it again on a conflict; False when it is gone or nothing to do."""
        where = f"{what} of {kind} {name} for agent {agent}"
        for _ in range(RETRIES):
            current = await self.reads.get(agent, kind, name)
            planned = None if current is None else ops(current)
            if current is None or planned is None:
                return False  # deleted meanwhile, or already so
            patch = kobj.if_unchanged(current, planned)
            try:
                await self.client.patch(
                    KINDS[kind], name, patch, namespace=self.agents.namespace(agent)
                )
                return True
            except cerrors.ConflictError:
                continue
            except cerrors.CoordinationError as err:
                raise hub.StoreError(f"{where}: {err}") from err
        raise hub.StoreError(f"{where}: too much contention")
