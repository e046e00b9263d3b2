"""The sampler: agents connected per replica, ten times a second, for I3 and the plots.

`python -m chaos.sampler --dir DIR [--hz 10]` scrapes every replica's /metrics
(cluster.json says where; re-read each second, so scaling is followed) and appends
one JSON line per round to RUN/samples.jsonl: {t, wall, replicas: {ID: {open, standin,
owned, epoch, leader} | null}} (null: the replica did not answer). SIGTERM stops it,
and so does the end of its cluster.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import signal
import time
from pathlib import Path
from typing import Any

from chaos import _local as local

__all__ = ["sample"]

FIELDS = {
    "open": "mooring_sessions_open",
    "standin": "mooring_standin_sessions_open",
    "owned": "mooring_agents_owned",
    "epoch": "mooring_shard_epoch",
    "leader": "mooring_leader",
}
SCRAPE_TIMEOUT = 0.08  # a paused replica must not slow the round down


def sample(replicas: dict[str, str], pool: concurrent.futures.ThreadPoolExecutor) -> dict[str, Any]:
    """One round over {replica id: metrics HOST:PORT}."""
    t = time.monotonic()
    got = pool.map(lambda a: local.scrape(a, timeout=SCRAPE_TIMEOUT), replicas.values())
    out: dict[str, Any] = {}
    for rid, samples in zip(replicas, got, strict=True):
        if samples is None:
            out[rid] = None
            continue
        out[rid] = {key: samples.get(name) for key, name in FIELDS.items()}
    return {"t": t, "wall": time.time(), "replicas": out}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.sampler", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the cluster's state dir")
    parser.add_argument("--hz", type=float, default=10.0, help="rounds per second (5-10)")
    parser.add_argument("--out", type=Path, help="default RUN/samples.jsonl")
    args = parser.parse_args()
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    out = args.out or local.run_dir(args.dir) / "samples.jsonl"
    period = 1.0 / args.hz
    replicas: dict[str, str] = {}
    reread = 0.0
    with (
        concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool,
        out.open("a", encoding="utf-8", buffering=1) as f,
    ):
        while not stopping:
            began = time.monotonic()
            if began >= reread:
                if not local.cluster_running(args.dir):
                    break  # the cluster is gone (a run that never stopped us)
                try:
                    state = local.cluster(args.dir)
                    replicas = {r["id"]: r["metrics"] for r in state["replicas"]}
                except (local.CliError, ValueError, KeyError):
                    pass  # mid-rewrite or gone: keep the last list
                reread = began + 1.0
            f.write(json.dumps(sample(replicas, pool), sort_keys=True) + "\n")
            time.sleep(max(0.0, period - (time.monotonic() - began)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
