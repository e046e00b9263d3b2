"""Open a record store from a `--coordination` URL.

- `etcd://HOST:PORT[,HOST:PORT...]`: `EtcdRecordStore`, keys under `prefix`; `etcds://`
  for TLS, and a user, as election/_etcdurl.py describes (the password from the
  file it names, else $MOORING_ETCD_PASSWORD in `env`);
- `kubernetes` (or `kubernetes://`): `KubeLeaseStore` in `namespace`, Lease names
  derived from `prefix + name` (see `election._kube`), configured from $KUBECONFIG
  or the in-cluster service account;
- `memory://`: a fresh `MemoryStore` (one process only: tests and demos).

Every store returned also offers `update_fenced`, the leader-only write
(`FencedRecordStore`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from election import _etcd as etcd
from election import _etcdrecords as etcdrecords
from election import _etcdurl as etcdurl
from election import _memory as memory
from election import _records as records

__all__ = ["FencedRecordStore", "open_store"]

_EXPECTED = "expected etcd[s]://HOST:PORT[,HOST:PORT...][?...], kubernetes or memory://"


class FencedRecordStore(records.RecordStore, Protocol):
    """A RecordStore that can also write only while a fence record is unchanged."""

    async def update_fenced(
        self,
        record: records.Record | None,
        data: Mapping[str, Any],
        *,
        fence: records.Record,
        name: str | None = None,
    ) -> records.Record: ...


def open_store(
    url: str,
    *,
    prefix: str = "/mooring/",
    timeout: float,
    namespace: str = "default",
    env: Mapping[str, str] | None = None,
) -> FencedRecordStore:
    """The store `url` names, each call bounded by `timeout` seconds; ValueError when malformed.

    Nothing is contacted yet: etcd connects on first use, Kubernetes per request.
    """
    if not timeout > 0:
        raise ValueError(f"store timeout must be positive, not {timeout!r}")
    text = url.strip()
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme in ("etcd", "etcds") and sep:
        kv = etcd.EtcdKV.open(text, timeout=timeout, env=os.environ if env is None else env)
        return etcdrecords.EtcdRecordStore(kv, prefix=prefix)
    if scheme == "kubernetes" and not rest.strip("/"):
        if not namespace:
            raise ValueError("a Kubernetes store needs a namespace")
        from election import _kube as kube  # the Kubernetes client loads only when used

        return kube.load_kube_store(namespace=namespace, prefix=prefix, timeout=timeout, env=env)
    if scheme == "memory" and sep and not rest.strip("/"):
        return memory.MemoryStore(timeout=timeout)
    raise ValueError(f"bad coordination store URL {etcdurl.redacted(url)!r}; {_EXPECTED}")
