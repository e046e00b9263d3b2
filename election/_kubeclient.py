"""Calling the official Kubernetes client: its configuration, each call bounded by a
timeout, and every failure mapped to `election._errors` through one table.

The official client is synchronous: each call runs in a worker thread with
`_request_timeout`, and the awaiting caller is bounded by the same timeout. The
`ApiClient` is built with `Configuration.retries = False` (`load_api_client`) so urllib3
never repeats a compare-and-swap behind the caller's back.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes.client
import kubernetes.config
import kubernetes.config.incluster_config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from election import _errors as errors

__all__ = ["HTTP_ERRORS", "RAISE", "call", "load_api_client", "mapped"]

# What an HTTP status means to a caller; statuses not listed are CoordinationError
# (not retryable: bad request, forbidden, invalid object, ...).
HTTP_ERRORS: Mapping[int, type[errors.CoordinationError]] = {
    0: errors.StoreUnavailableError,  # no HTTP status: the client failed before an answer
    404: errors.ConflictError,  # a write found the object gone (get turns 404 into None)
    408: errors.StoreUnavailableError,
    409: errors.ConflictError,  # AlreadyExists on create, stale resourceVersion on replace
    429: errors.StoreUnavailableError,
    500: errors.StoreUnavailableError,
    502: errors.StoreUnavailableError,
    503: errors.StoreUnavailableError,
    504: errors.StoreUnavailableError,
}

RAISE = object()
"""`call(missing=RAISE)`: a 404 is an error like any other status."""


async def call(
    what: str,
    fn: Callable[..., Any],
    /,
    *args: Any,
    request_timeout: float,
    missing: object = RAISE,
    **kwargs: Any,
) -> Any:
    """Run a blocking call of the official client in a worker thread, bounded by
    `request_timeout` seconds (on the wire and for the awaiting caller); map its errors
    through HTTP_ERRORS. A 404 returns `missing` unless that is RAISE."""
    bound = functools.partial(fn, *args, _request_timeout=request_timeout, **kwargs)
    try:
        async with asyncio.timeout(request_timeout):
            return await asyncio.to_thread(bound)
    except ApiException as err:
        if err.status == 404 and missing is not RAISE:
            return missing
        raise mapped(err, what) from err
    except (urllib3.exceptions.HTTPError, OSError, TimeoutError) as err:
        raise mapped(err, what) from err


def mapped(err: BaseException, what: str) -> errors.CoordinationError:
    """The error that a failure of the client in `what` is to a caller (HTTP_ERRORS)."""
    if isinstance(err, ApiException):
        status = int(err.status or 0)
        kind = HTTP_ERRORS.get(status, errors.CoordinationError)
        return kind(f"kubernetes {what}: HTTP {status} {_reason(err)}")
    if isinstance(err, TimeoutError):
        return errors.StoreUnavailableError(f"kubernetes {what}: timed out")
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return errors.StoreUnavailableError(f"kubernetes {what}: {detail}")


def _reason(err: ApiException) -> str:
    """The Status object's message when the server sent one, else the HTTP reason."""
    try:
        status = json.loads(err.body or "")
        return str(status.get("message") or err.reason or "").strip()
    except (ValueError, AttributeError):
        return str(err.reason or "").strip()


def load_api_client(
    *, kubeconfig: str | None = None, env: Mapping[str, str] | None = None
) -> kubernetes.client.ApiClient:
    """An API client from `kubeconfig`, else $KUBECONFIG, else in-cluster config, else
    ~/.kube/config; without urllib3 retries (a compare-and-swap is never repeated)."""
    env = os.environ if env is None else env
    configuration = kubernetes.client.Configuration()
    try:
        path = kubeconfig or env.get("KUBECONFIG")
        if path:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=path, client_configuration=configuration, persist_config=False
            )
        elif env.get("KUBERNETES_SERVICE_HOST"):
            incluster = kubernetes.config.incluster_config
            loader = incluster.InClusterConfigLoader(  # type: ignore[no-untyped-call]
                token_filename=incluster.SERVICE_TOKEN_FILENAME,
                cert_filename=incluster.SERVICE_CERT_FILENAME,
                environ=env,
            )
            loader.load_and_set(configuration)  # type: ignore[no-untyped-call]
        else:
            kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=os.path.expanduser("~/.kube/config"),
                client_configuration=configuration,
                persist_config=False,
            )
    except (kubernetes.config.ConfigException, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise errors.CoordinationError(f"no usable Kubernetes configuration: {detail}") from err
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)
