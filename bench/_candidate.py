"""One leader-election candidate in its own process, for `bench/bench_election.py`.

    python bench/_candidate.py --impl ours|official --store etcd://H:P|kubernetes
        --kubeconfig FILE --name LEASE --id ID --lease-duration S --renew-deadline S
        --retry-period S [--request-timeout S]

Prints `ready <t>` once it starts campaigning and `leading <t>` when it becomes leader,
`<t>` being `time.monotonic()` (CLOCK_MONOTONIC: one clock for every process on the host),
then keeps the lease until it is killed.

- ours: `election.Elector` over `election._stores.open_store(--store)`; with `kubernetes`
  the store is the Kubernetes Lease adapter, configured from --kubeconfig;
- official: `kubernetes.leaderelection.leaderelection.LeaderElection` with a `LeaseLock`,
  its API client configured from the same --kubeconfig (Kubernetes only).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMESPACE = "bench"


def say(what: str) -> None:
    print(f"{what} {time.monotonic():.6f}", flush=True)


async def run_ours(args: argparse.Namespace) -> None:
    from election import _electing as electing
    from election import _settings as settings_
    from election import _stores as stores
    from election import lease

    settings = settings_.ElectionSettings(
        lease_duration=args.lease_duration,
        renew_deadline=args.renew_deadline,
        retry_period=args.retry_period,
        request_timeout=args.request_timeout,
    )
    store = stores.open_store(
        args.store,
        prefix=f"/bench/{args.name}/",
        timeout=settings.request_timeout,
        namespace=NAMESPACE,
        env={"KUBECONFIG": args.kubeconfig} if args.kubeconfig else {},
    )
    elector = electing.Elector(store, replica_id=lease.ReplicaId(args.id), settings=settings)

    async def lead(fence: electing.Fence) -> None:
        say("leading")
        await asyncio.Event().wait()  # hold the lease until killed

    say("ready")
    try:
        await elector.run(lead)
    finally:
        await store.close()


def run_official(args: argparse.Namespace) -> None:
    import kubernetes.config
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock import leaselock

    kubernetes.config.load_kube_config(config_file=args.kubeconfig)  # the default client
    lock = leaselock.LeaseLock(args.name, NAMESPACE, args.id)
    config = electionconfig.Config(
        lock,
        # Whole seconds as int: the client writes str(lease_duration) and reads it back
        # with int(), so 4.0 would fail ("invalid literal for int()").
        lease_duration=_whole(args.lease_duration),
        renew_deadline=_whole(args.renew_deadline),
        retry_period=_whole(args.retry_period),
        onstarted_leading=lambda: say("leading"),
        onstopped_leading=lambda: say("stopped"),
    )
    say("ready")
    while True:  # run() returns when a renewal fails; campaign again, as a supervisor would
        leaderelection.LeaderElection(config).run()


def _whole(value: float) -> float:
    return int(value) if value.is_integer() else value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("ours", "official"), required=True)
    parser.add_argument("--store", required=True, help="etcd://H:P or kubernetes")
    parser.add_argument("--kubeconfig")
    parser.add_argument("--name", required=True, help="the lease to campaign for")
    parser.add_argument("--id", required=True)
    parser.add_argument("--lease-duration", type=float, required=True)
    parser.add_argument("--renew-deadline", type=float, required=True)
    parser.add_argument("--retry-period", type=float, required=True)
    parser.add_argument("--request-timeout", type=float, default=1.0)
    args = parser.parse_args()
    if args.impl == "ours":
        asyncio.run(run_ours(args))
    else:
        run_official(args)


if __name__ == "__main__":
    main()
