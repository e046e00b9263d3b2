"""Any Kubernetes object as a dict, asynchronously: the client the Kubernetes stores build on.

With `election._kube` (the Lease records) the only module that imports `kubernetes`.
Objects are addressed by a `Kind` (group, version, plural, namespaced); every call runs
the official client in a worker thread bounded by `timeout`, and HTTP statuses map to
`election` errors through `election._kube.HTTP_ERRORS` (404 on a read is None).

`watch` is list+watch as client-go's informers do it: it resumes from a
resourceVersion, asks for bookmarks (so a quiet watch still advances), re-opens the
watch whenever the server ends it, and raises `GoneError` when the server no longer
holds history back to that resourceVersion (410 Gone); the caller relists.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import kubernetes.client
import kubernetes.watch
import tenacity
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from election import _errors as errors
from election import _kube as kube

__all__ = [
    "ARGOCD",
    "CONFIGMAPS",
    "NAMESPACES",
    "GoneError",
    "Kind",
    "KubeObjects",
    "WatchEvent",
    "if_unchanged",
    "parse_url",
    "replace_ops",
]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
WATCH_SECONDS = 10  # the server ends each watch after this; it is re-opened at once
READ_ATTEMPTS = 4


class GoneError(errors.CoordinationError):
    """410 Gone: the server no longer holds history back to the resourceVersion asked for."""


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True


NAMESPACES = Kind("", "v1", "namespaces", namespaced=False)
CONFIGMAPS = Kind("", "v1", "configmaps")
ARGOCD = {  # Argo CD's kinds, by the kind names Mooring syncs (proto.objects.KINDS)
    "Application": Kind("argoproj.io", "v1alpha1", "applications"),
    "AppProject": Kind("argoproj.io", "v1alpha1", "appprojects"),
}
_CORE_NAMES = {"namespaces": "namespace", "configmaps": "namespaced_config_map"}


@dataclasses.dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    object: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


class KubeObjects:
    """Dict-in, dict-out access to objects of any kind; owns (and closes) `api_client`."""

    def __init__(self, api_client: kubernetes.client.ApiClient, *, timeout: float) -> None:
        self.api_client = api_client
        self.timeout = timeout
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._core_api = kubernetes.client.CoreV1Api(api_client)

    @classmethod
    def load(
        cls,
        *,
        kubeconfig: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 5.0,
    ) -> KubeObjects:
        return cls(kube.load_api_client(kubeconfig=kubeconfig, env=env), timeout=timeout)

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)

    async def _read(self, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """`_call` for reads, retried while the server is briefly unavailable (429 "storage
        is (re)initializing" after a restart, 503): reads change nothing, so repeating is
        safe. Writes are never repeated here: a timed-out write may have landed."""
        async for attempt in tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(READ_ATTEMPTS),
            wait=tenacity.wait_exponential(multiplier=0.1, max=1.0),
            retry=tenacity.retry_if_exception_type(errors.StoreUnavailableError),
            reraise=True,
        ):
            with attempt:
                return await self._call(what, fn, *args, **kwargs)
        raise AssertionError("unreachable: tenacity reraises")

    async def _call(self, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """`election._kube.call` with this client's timeout (`missing=` for a 404)."""
        return await kube.call(what, fn, *args, request_timeout=self.timeout, **kwargs)

    def _lister(self, kind: Kind, namespace: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """The list function (which also watches) for `kind`, in `namespace` or all."""
        if not kind.group:
            return self._core("list", kind), ((namespace,) if kind.namespaced else ())
        if namespace:
            return self._custom.list_namespaced_custom_object, (
                kind.group, kind.version, namespace, kind.plural,
            )  # fmt: skip
        return self._custom.list_cluster_custom_object, (kind.group, kind.version, kind.plural)

    def _core(self, verb: str, kind: Kind) -> Callable[..., Any]:
        """CoreV1Api's method for `verb` on a core kind (namespaces, configmaps)."""
        try:
            return getattr(self._core_api, f"{verb}_{_CORE_NAMES[kind.plural]}")  # type: ignore[no-any-return]
        except KeyError:
            raise ValueError(f"core kind {kind.plural!r} is not supported") from None

    # -- one object ------------------------------------------------------------------------

    async def get(self, kind: Kind, name: str, *, namespace: str = "") -> dict[str, Any] | None:
        what = f"get {kind.plural} {namespace}/{name}".replace(" /", " ")
        if not kind.group:
            args = (name, namespace) if kind.namespaced else (name,)
            got = await self._read(
                what, self._core("read", kind), *args, missing=None, _preload_content=False
            )
            return None if got is None else _json(got)
        found = await self._read(  # custom kinds here are all namespaced (Argo CD's)
            what,
            self._custom.get_namespaced_custom_object,
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            missing=None,
        )
        return None if found is None else dict(found)

    async def create(
        self, kind: Kind, body: Mapping[str, Any], *, namespace: str = ""
    ) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name", "")
        what = f"create {kind.plural} {namespace}/{name}".replace(" /", " ")
        if not kind.group:
            args = (namespace, body) if kind.namespaced else (body,)
            return _json(
                await self._call(what, self._core("create", kind), *args, _preload_content=False)
            )
        return dict(
            await self._call(
                what,
                self._custom.create_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                body,
            )
        )

    async def patch(
        self,
        kind: Kind,
        name: str,
        patch: Any,
        *,
        namespace: str = "",
    ) -> dict[str, Any]:
        """A JSON Patch (a list of operations) or a merge patch (a dict); never creates.
        A patch that sets metadata.resourceVersion is a compare-and-swap (409)."""
        what = f"patch {kind.plural} {namespace}/{name}".replace(" /", " ")
        content_type = JSON_PATCH if isinstance(patch, list) else MERGE_PATCH
        if not kind.group:
            args = (name, namespace, patch) if kind.namespaced else (name, patch)
            return _json(
                await self._call(
                    what,
                    self._core("patch", kind),
                    *args,
                    _content_type=content_type,
                    _preload_content=False,
                )
            )
        return dict(
            await self._call(
                what,
                self._custom.patch_namespaced_custom_object,
                kind.group,
                kind.version,
                namespace,
                kind.plural,
                name,
                patch,
                _content_type=content_type,
            )
        )

    async def delete(
        self, kind: Kind, name: str, *, namespace: str, resource_version: str | None = None
    ) -> bool:
        """Delete (with a resourceVersion precondition when given); False when absent."""
        what = f"delete {kind.plural} {namespace}/{name}"
        body: dict[str, Any] = {}
        if resource_version is not None:
            body["preconditions"] = {"resourceVersion": resource_version}
        deleted = await self._call(
            what,
            self._custom.delete_namespaced_custom_object,
            kind.group,
            kind.version,
            namespace,
            kind.plural,
            name,
            body=body,
            missing=False,
        )
        return deleted is not False

    # -- many objects ----------------------------------------------------------------------

    async def list(
        self, kind: Kind, *, namespace: str = "", label_selector: str = ""
    ) -> tuple[list[dict[str, Any]], str]:
        """The objects (of one namespace, or all) and the list's resourceVersion."""
        lister, args = self._lister(kind, namespace)
        got = _json(
            await self._read(
                f"list {kind.plural}",
                lister,
                *args,
                label_selector=label_selector,
                _preload_content=False,
            )
        )
        return list(got.get("items") or []), str(got["metadata"]["resourceVersion"])

    async def watch(
        self,
        kind: Kind,
        *,
        resource_version: str,
        label_selector: str = "",
        namespace: str = "",
    ) -> AsyncIterator[WatchEvent]:
        """Every change after `resource_version` (of one namespace, or all), bookmarks
        included."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[WatchEvent | BaseException] = asyncio.Queue()
        stop = threading.Event()
        lister, args = self._lister(kind, namespace)

        def deliver(item: WatchEvent | BaseException) -> None:
            if stop.is_set():
                return  # nobody listens any more
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            rv = resource_version
            failures = 0  # in a row: a watch that opens and delivers resets it
            try:
                while not stop.is_set():
                    watcher = kubernetes.watch.Watch()  # type: ignore[no-untyped-call]
                    try:
                        for raw in watcher.stream(  # type: ignore[no-untyped-call]
                            lister,
                            *args,
                            resource_version=rv,
                            label_selector=label_selector,
                            allow_watch_bookmarks=True,
                            timeout_seconds=WATCH_SECONDS,
                            _request_timeout=(self.timeout, WATCH_SECONDS + self.timeout),
                        ):
                            failures = 0
                            if stop.is_set():
                                watcher.stop()  # type: ignore[no-untyped-call]
                                break
                            event = _event(raw)
                            if event.resource_version:
                                rv = event.resource_version
                            deliver(event)
                    except ApiException as err:
                        # Briefly unavailable (429 while the watch cache initializes, 5xx):
                        # open the watch again from the same place, a few times.
                        failures += 1
                        passing = (
                            kube.HTTP_ERRORS.get(err.status or 0) is errors.StoreUnavailableError
                        )
                        if not passing or failures >= READ_ATTEMPTS:
                            raise
                        stop.wait(min(1.0, 0.1 * 2**failures))
            except BaseException as err:  # delivered to the awaiting side, never lost
                deliver(err)

        thread = threading.Thread(target=pump, name=f"watch-{kind.plural}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    mapped = _watch_error(item, kind)
                    if mapped is None:
                        raise item
                    raise mapped from item
                yield item
        finally:
            stop.set()


def _json(response: Any) -> dict[str, Any]:
    """The body of a `_preload_content=False` answer, as a dict."""
    return dict(json.loads(response.data))


def _event(raw: Mapping[str, Any]) -> WatchEvent:
    kind = str(raw.get("type", ""))
    obj = raw.get("raw_object") or raw.get("object") or {}
    if kind == "ERROR":
        code = int(obj.get("code", 0)) if isinstance(obj, Mapping) else 0
        message = obj.get("message", "") if isinstance(obj, Mapping) else str(obj)
        raise ApiException(status=code, reason=str(message))
    if not isinstance(obj, dict):
        obj = {}
    return WatchEvent(kind, obj)


def _watch_error(err: BaseException, kind: Kind) -> errors.CoordinationError | None:
    """What a client error that ended a watch is to the caller (`kube.HTTP_ERRORS`, and 410
    is GoneError); None for anything else, which is raised as it is."""
    if isinstance(err, ApiException) and err.status == 410:
        return GoneError(f"kubernetes watch {kind.plural}: HTTP 410 {err.reason or 'Gone'}")
    if isinstance(err, ApiException | urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return kube._mapped(err, f"watch {kind.plural}")
    return None


def parse_url(url: str, *, params: frozenset[str], what: str) -> dict[str, str]:
    """The query of `kubernetes://[?k=v&...]` (only `params` allowed); one-line ValueError."""
    parsed = urllib.parse.urlsplit(url)
    usage = "kubernetes://" + "".join(
        f"[{'?' if i == 0 else '&'}{p}=...]" for i, p in enumerate(sorted(params))
    )
    if parsed.scheme != "kubernetes" or parsed.netloc or parsed.path not in ("", "/"):
        raise ValueError(f"bad {what} URL {url[:80]!r}: expected {usage}")
    query = dict(urllib.parse.parse_qsl(parsed.query))
    unknown = sorted(set(query) - params)
    if unknown:
        raise ValueError(f"bad {what} URL: unknown parameter {unknown[0]!r}; expected {usage}")
    return query


def replace_ops(current: Mapping[str, Any], body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON Patch that makes `current` carry the labels, annotations, finalizers, spec
    (and status, when `body` has one) of `body`, and only if `current` is unchanged: it
    sets `current`'s resourceVersion, which the apiserver compares (409 otherwise)."""
    meta, had = body["metadata"], current.get("metadata", {})
    ops = [_unchanged(current)]
    for key in ("labels", "annotations", "finalizers"):
        if meta.get(key):
            ops.append({"op": "add", "path": f"/metadata/{key}", "value": meta[key]})
        elif had.get(key):
            ops.append({"op": "remove", "path": f"/metadata/{key}"})
    ops.append({"op": "add", "path": "/spec", "value": body["spec"]})
    if "status" in body:
        ops.append({"op": "add", "path": "/status", "value": body["status"]})
    return ops


def _unchanged(current: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON Patch operation that makes a patch a compare-and-swap on `current`."""
    version = current["metadata"]["resourceVersion"]
    return {"op": "add", "path": "/metadata/resourceVersion", "value": version}


def if_unchanged(current: Mapping[str, Any], ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`ops` applied only if `current` is unchanged (409 otherwise)."""
    return [_unchanged(current), *ops]
