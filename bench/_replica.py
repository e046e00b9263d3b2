"""`mooring principal serve` as the benches run it (bench_memory, bench_sync,
bench_kube_sync): replica p1 on loopback, its flags printed from settings as the launcher
prints them (`tests._procs.serve`: `principal.flags.to_argv`)."""

from __future__ import annotations

from typing import Any

from tests import _procs as procs

HOST = "127.0.0.1"


def serve_argv(*, port: int, metrics_port: int, **fields: Any) -> list[str]:
    """`python` arguments for replica p1 serving agents on HOST:`port` and /metrics on
    HOST:`metrics_port`, logging warnings only, agents registering by connecting;
    `fields`: its other PrincipalSettings (coordination, tls_dir, ...)."""
    listen, metrics = f"{HOST}:{port}", f"{HOST}:{metrics_port}"
    settings = procs.replica_settings(
        "p1", listen=listen, metrics=metrics, auto_register=True, **fields
    )
    return ["-m", "mooring", "--log-level", "WARNING", *procs.serve(settings)]
