"""The record store on Kubernetes `coordination.k8s.io/v1` Lease objects.

Each record is one Lease in one namespace (election/_leasecodec.py documents the
encoding: record data as spec fields and annotations, and the Lease's name); calls go
through election/_kubeclient.py (a timeout each, HTTP statuses -> `election._errors`).
A record's version token is the Lease's `metadata.resourceVersion`, and every replace
and delete sends that version back, so the API server does the compare-and-swap (409
Conflict -> `ConflictError`). Updates are JSON Patches that set the resourceVersion,
never PUTs: the Lease API creates on update, so a PUT could resurrect a Lease deleted
meanwhile (found on a real apiserver). A Lease whose name annotation disagrees with
the record asked for is reported as a conflict, never returned as that record.

The store owns its Lease objects: an update writes labels, annotations and spec whole,
so foreign labels or annotations on them do not survive our next write.

Build the `ApiClient` with `Configuration.retries = False` (as `load_kube_store`
does) so urllib3 never repeats a compare-and-swap behind the caller's back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client

from election import _errors as errors
from election import _kubeclient as kubeclient
from election import _leasecodec as leasecodec
from election import _records as records

__all__ = [
    "ANNOTATION_PREFIX",
    "HTTP_ERRORS",
    "KubeLeaseStore",
    "call",
    "lease_name",
    "load_api_client",
    "load_kube_store",
]

# Names other modules know from here, where they were before the encoding and the
# calls moved out.
ANNOTATION_PREFIX = leasecodec.ANNOTATION_PREFIX
NAME_ANNOTATION = leasecodec.NAME_ANNOTATION
lease_name = leasecodec.lease_name
HTTP_ERRORS = kubeclient.HTTP_ERRORS
call = kubeclient.call
load_api_client = kubeclient.load_api_client
_mapped = kubeclient.mapped  # election._kubeobjects maps a watch's errors with it


class KubeLeaseStore:
    """RecordStore over Lease objects in one namespace; owns (and closes) `api_client`."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        *,
        namespace: str,
        prefix: str = "",
        timeout: float = 2.0,
    ) -> None:
        self.api_client = api_client
        self.namespace = namespace
        self.prefix = prefix
        self.timeout = timeout
        self._api = kubernetes.client.CoordinationV1Api(api_client)

    async def _call(
        self,
        what: str,
        fn: Callable[..., Any],
        /,
        *args: Any,
        none_if_missing: bool = False,
        **kwargs: Any,
    ) -> Any:
        missing = None if none_if_missing else kubeclient.RAISE
        return await kubeclient.call(
            what, fn, *args, request_timeout=self.timeout, missing=missing, **kwargs
        )

    def _lease(
        self, full_name: str, data: Mapping[str, Any], *, resource_version: str | None = None
    ) -> Any:
        spec, annotations = leasecodec.encode(data)
        annotations[leasecodec.NAME_ANNOTATION] = full_name
        return kubernetes.client.V1Lease(
            api_version="coordination.k8s.io/v1",
            kind="Lease",
            metadata=kubernetes.client.V1ObjectMeta(
                name=leasecodec.lease_name(full_name),
                namespace=self.namespace,
                labels={leasecodec.MANAGED_BY_LABEL: leasecodec.MANAGED_BY},
                annotations=annotations,
                resource_version=resource_version,
            ),
            spec=kubernetes.client.V1LeaseSpec(**spec),
        )

    def _record(self, lease: Any, *, expect: str | None = None) -> records.Record:
        full_name = (lease.metadata.annotations or {}).get(leasecodec.NAME_ANNOTATION)
        if expect is not None and full_name != expect:
            raise errors.ConflictError(
                f"Lease {lease.metadata.name} holds record {full_name!r}, not {expect!r}"
            )
        return records.Record(
            name=str(full_name).removeprefix(self.prefix),
            data=leasecodec.decode(lease),
            version=str(lease.metadata.resource_version),
        )

    async def get(self, name: str) -> records.Record | None:
        full = self.prefix + name
        lease = await self._call(
            f"get {name!r}",
            self._api.read_namespaced_lease,
            leasecodec.lease_name(full),
            self.namespace,
            none_if_missing=True,
        )
        return None if lease is None else self._record(lease, expect=full)

    async def create(self, name: str, data: Mapping[str, Any]) -> records.Record:
        full = self.prefix + name
        body = self._lease(full, data)
        lease = await self._call(
            f"create {name!r}", self._api.create_namespaced_lease, self.namespace, body
        )
        return self._record(lease, expect=full)

    async def update(self, record: records.Record, data: Mapping[str, Any]) -> records.Record:
        # A JSON Patch, not a replace: Leases allow create-on-update, so a PUT carrying
        # the resourceVersion of a Lease deleted meanwhile would bring it back to life.
        # A patch never creates (404), and the resourceVersion it sets makes the write
        # conditional (409 when it moved). Labels, annotations and spec are written whole.
        full = self.prefix + record.name
        lease = self.api_client.sanitize_for_serialization(  # type: ignore[no-untyped-call]
            self._lease(full, data, resource_version=_version(record))
        )
        patch = [
            {"op": "add", "path": f"/{path}", "value": value}
            for path, value in (
                ("metadata/resourceVersion", lease["metadata"]["resourceVersion"]),
                ("metadata/labels", lease["metadata"]["labels"]),
                ("metadata/annotations", lease["metadata"]["annotations"]),
                ("spec", lease.get("spec", {})),
            )
        ]
        patched = await self._call(
            f"update {record.name!r}",
            self._api.patch_namespaced_lease,
            leasecodec.lease_name(full),
            self.namespace,
            patch,
        )
        return self._record(patched, expect=full)

    async def update_fenced(
        self,
        record: records.Record | None,
        data: Mapping[str, Any],
        *,
        fence: records.Record,
        name: str | None = None,
    ) -> records.Record:
        """Check that `fence` is unchanged, then compare-and-swap `record` (None: create `name`).

        Kubernetes has no multi-object transaction, so this is weaker than etcd's:
        the fence may move between the check and the write. The write itself is
        still a compare-and-swap, so put the fencing token in `data` as well.
        """
        if record is not None and name is not None and name != record.name:
            raise ValueError(f"name {name!r} does not match record {record.name!r}")
        if record is None and name is None:
            raise ValueError("update_fenced needs `name` when creating (record is None)")
        target = record.name if record is not None else str(name)
        if target == fence.name:
            raise ValueError("a record cannot be fenced by itself")
        current = await self.get(fence.name)
        if current is None or current.version != fence.version:
            raise errors.ConflictError(
                f"kubernetes fenced write {target!r}: fence {fence.name!r}@{fence.version} moved"
            )
        if record is None:
            return await self.create(target, data)
        return await self.update(record, data)

    async def delete(self, record: records.Record) -> None:
        full = self.prefix + record.name
        options = kubernetes.client.V1DeleteOptions(
            preconditions=kubernetes.client.V1Preconditions(resource_version=_version(record))
        )
        await self._call(
            f"delete {record.name!r}",
            self._api.delete_namespaced_lease,
            leasecodec.lease_name(full),
            self.namespace,
            body=options,
        )

    async def list(self, prefix: str = "") -> list[records.Record]:
        leases = await self._call(
            "list",
            self._api.list_namespaced_lease,
            self.namespace,
            label_selector=f"{leasecodec.MANAGED_BY_LABEL}={leasecodec.MANAGED_BY}",
        )
        wanted = self.prefix + prefix
        found = [
            self._record(lease)
            for lease in leases.items
            if str(
                (lease.metadata.annotations or {}).get(leasecodec.NAME_ANNOTATION, "")
            ).startswith(wanted)
        ]
        return sorted(found, key=lambda record: record.name)

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)


def _version(record: records.Record) -> str:
    # An empty resourceVersion would make the server skip its compare-and-swap.
    if not record.version:
        raise errors.ConflictError(f"record {record.name!r} has no resourceVersion")
    return record.version


def load_kube_store(
    *,
    namespace: str,
    kubeconfig: str | None = None,
    prefix: str = "",
    timeout: float = 2.0,
    env: Mapping[str, str] | None = None,
) -> KubeLeaseStore:
    """A store from `kubeconfig`, else $KUBECONFIG, else in-cluster config, else ~/.kube/config."""
    return KubeLeaseStore(
        kubeclient.load_api_client(kubeconfig=kubeconfig, env=env),
        namespace=namespace,
        prefix=prefix,
        timeout=timeout,
    )
