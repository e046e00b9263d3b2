"""What a new local cluster starts with: its agents registered on the hub, and sample
Applications (the managed agents' in the hub store, each autonomous agent's in its own
store or Argo CD namespace)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import principal
from agent import store as agent_store
from mooring import _kubeapi as kubeapi
from mooring import _state as state_

__all__ = [
    "register_agents",
    "sample_app",
    "seed",
    "seed_autonomous",
    "seed_autonomous_kube",
    "seed_managed",
]


def sample_app(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://github.com/argoproj/argocd-example-apps.git",
                "path": "guestbook",
                "targetRevision": "HEAD",
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
    }


async def register_agents(store: str, modes: Mapping[str, str], *, concurrency: int = 8) -> None:
    """Register each agent in its mode on the hub, as `mooring agent create` does: replicas
    serve only registered agents (`principal serve` without --auto-register)."""
    desired = principal.open_hub_store(store, timeout=10.0)
    try:
        await desired.connect()
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: str, mode: str) -> None:
            async with gate:
                await desired.register_agent(
                    agent, mode="autonomous" if mode == "autonomous" else "managed"
                )

        await asyncio.gather(*(one(a, m) for a, m in modes.items()))
    finally:
        await desired.close()


async def seed_managed(
    coordination: str,
    agents: Sequence[str],
    *,
    apps: Sequence[str] = ("guestbook",),
    concurrency: int = 8,
) -> None:
    """Give every managed agent the sample Applications named `apps` in the store."""
    desired = principal.open_hub_store(coordination, timeout=10.0)
    try:
        await desired.connect()
        gate = asyncio.Semaphore(concurrency)

        async def one(agent: str) -> None:
            async with gate:
                for app in apps:
                    await desired.apply_desired(agent, sample_app(app))

        await asyncio.gather(*(one(a) for a in agents))
    finally:
        await desired.close()


def seed_autonomous(state_file: Path, *, app: str = "local-guestbook") -> None:
    """Give an autonomous agent's local store one synced, healthy sample Application."""
    local = agent_store.AgentStore(state_file, mode="autonomous")
    try:
        doc = sample_app(app)
        doc["status"] = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
        local.apply_local(doc)
    finally:
        local.close()


def seed_autonomous_kube(kube: kubeapi.KubeAPIServer, namespace: str) -> None:
    """An autonomous agent's own sample Application, created in its Argo CD namespace."""
    doc = sample_app("local-guestbook")
    doc["status"] = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
    status, text = kube.request(
        "POST",
        f"/apis/argoproj.io/v1alpha1/namespaces/{namespace}/applications",
        body=json.dumps(doc).encode(),
    )
    if status != 201:
        raise RuntimeError(f"seeding {namespace}: HTTP {status}: {text[:200]}")


def seed(state: state_.ClusterState, kube: kubeapi.KubeAPIServer | None) -> None:
    """Register every agent of `state` on its hub store and give each its sample
    Applications (`kube`: the --kubernetes cluster's apiserver, else None)."""
    hub_store = state.store or state.coordination
    asyncio.run(register_agents(hub_store, {a.name: a.mode for a in state.agents}))
    asyncio.run(seed_managed(hub_store, [a.name for a in state.agents if a.mode == "managed"]))
    for record in state.agents:
        if record.mode != "autonomous":
            continue
        if kube is not None and record.workload_namespace:
            seed_autonomous_kube(kube, record.workload_namespace)
        else:
            seed_autonomous(Path(record.state))
