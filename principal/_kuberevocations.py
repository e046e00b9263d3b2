"""The Kubernetes hub store's certificate revocation list: one ConfigMap.

The ConfigMap `HUB-revocations` in the hub's own namespace (the hub store URL's
`namespace`, default `default`; the chart's release namespace) holds one data key per
revoked certificate, `sha256-FINGERPRINT` or `serial-SERIAL` (`hub.Revocation.key`),
whose value is the entry as JSON. Whoever runs `mooring pki revoke` creates and patches
it; a replica only reads it (one GET of one named object, so its Role can name it in
`resourceNames`), every `POLL` seconds: there is no watch of a single object by name
without list rights on every ConfigMap of the namespace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from election import errors as cerrors
from election import kubeobjects as kobj
from principal import _hub as hub

__all__ = ["POLL", "KubeRevocations", "configmap_name"]

POLL = 1.0  # seconds between reads of the ConfigMap by a replica
RETRIES = 8  # compare-and-swap attempts before "too much contention"
HUB_LABEL = "mooring.io/hub"


def configmap_name(hub_name: str) -> str:
    return f"{hub_name}-revocations"


def _decoded(value: Any) -> hub.Revocation | None:
    try:
        return hub.Revocation.from_data(json.loads(value))
    except (ValueError, TypeError):
        return None  # written around Mooring: not an entry


class KubeRevocations:
    """Revocations of the hub `hub_name`, in a ConfigMap of `namespace`."""

    def __init__(self, client: kobj.KubeObjects, *, hub_name: str, namespace: str) -> None:
        self.client = client
        self.hub_name = hub_name
        self.namespace = namespace
        self.name = configmap_name(hub_name)

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    async def _get(self) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] | None = await self.client.get(
                kobj.CONFIGMAPS, self.name, namespace=self.namespace
            )
        except cerrors.CoordinationError as err:
            raise hub.StoreError(f"revocation list ({self.where}): {err}") from err
        return found

    @staticmethod
    def _entries(configmap: Mapping[str, Any] | None) -> list[hub.Revocation]:
        data = (configmap or {}).get("data") or {}
        entries = (_decoded(value) for value in data.values())
        return sorted((e for e in entries if e is not None), key=lambda e: e.key)

    async def revoke(self, entry: hub.Revocation) -> tuple[hub.Revocation, bool]:
        said = json.dumps(entry.to_data(), sort_keys=True, separators=(",", ":"))
        for _ in range(RETRIES):
            current = await self._get()
            try:
                if current is None:
                    body: dict[str, Any] = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": self.name,
                            "labels": {
                                HUB_LABEL: self.hub_name,
                                "app.kubernetes.io/managed-by": "mooring",
                            },
                        },
                        "data": {entry.key: said},
                    }
                    await self.client.create(kobj.CONFIGMAPS, body, namespace=self.namespace)
                    return entry, True
                data = current.get("data") or {}
                if entry.key in data:
                    return _decoded(data[entry.key]) or entry, False
                ops: list[dict[str, Any]] = [
                    {"op": "add", "path": "/data", "value": {**data, entry.key: said}}
                ]
                await self.client.patch(
                    kobj.CONFIGMAPS,
                    self.name,
                    kobj.if_unchanged(current, ops),
                    namespace=self.namespace,
                )
                return entry, True
            except cerrors.ConflictError:
                continue  # created or changed meanwhile: read again
            except cerrors.CoordinationError as err:
                raise hub.StoreError(f"revoke ({self.where}): {err}") from err
        raise hub.StoreError(f"revoke ({self.where}): too much contention, try again")

    async def read(self) -> list[hub.Revocation]:
        return self._entries(await self._get())

    async def watch(self) -> AsyncIterator[list[hub.Revocation]]:
        seen: str | None = None  # the resourceVersion last yielded ("" when absent)
        while True:
            current = await self._get()
            version = "" if current is None else str(current["metadata"]["resourceVersion"])
            if version != seen:
                seen = version
                yield self._entries(current)
            await asyncio.sleep(POLL)
