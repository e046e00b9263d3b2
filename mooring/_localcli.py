"""Subcommands for the local cluster: up, status, scale, down, and the agent fleet.

`_cli.build_parser` calls `add_parsers`; `_cli.COMMANDS` takes `COMMANDS`.
Each flag reads MOORING_<FLAG> like every other (the environment is applied by _cli).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["COMMANDS", "add_parsers"]

DEFAULT_DIR = Path(".mooring")


def add_parsers(top: Any) -> None:
    """Add `up`, `status`, `scale`, `down` and `fleet run` to the top-level subparsers."""
    p = top.add_parser("up", help="run a local cluster on real etcd + Redis")
    p.add_argument("--replicas", type=int, default=3, help="principal replicas (default 3)")
    p.add_argument(
        "--agents", type=int, default=20, help="agents (default 20; every 4th autonomous)"
    )
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")
    p.add_argument("--detach", action="store_true", help="return once the cluster is up")
    p.add_argument("--etcd-members", type=int, default=1, choices=(1, 3))
    p.add_argument(
        "--agent-processes", action="store_true", help="one `mooring agent run` process per agent"
    )
    p.add_argument(
        "--fleets",
        type=int,
        default=1,
        help="fleet processes sharing the agents (default 1; agents are spread evenly)",
    )
    p.add_argument(
        "--base-port",
        type=int,
        help="replica pN listens on P+N-1, its /metrics on P+100+N-1 (default: free ports)",
    )
    p.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a real Prometheus (Debian's `prometheus`) scraping every process every"
        " second, with Mooring's alert rules; prints its URL",
    )
    p.add_argument("--prometheus-port", type=int, help="its HTTP port (default: a free one)")
    p.add_argument(
        "--alert-for-scale",
        type=float,
        default=1.0,
        help="multiply every alert rule's `for:` by this (e.g. 0.1 to see alerts fire in"
        " seconds; default 1)",
    )
    p.add_argument(
        "--kubernetes",
        action="store_true",
        help="Leases, the hub's Applications and each agent's Argo CD namespace on a real"
        " kube-apiserver (the test bed's) instead of etcd and SQLite",
    )

    p = top.add_parser("status", help="replicas, leader, epoch and agents of a cluster")
    p.add_argument("--json", action="store_true")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")
    p.add_argument(
        "--coordination", help="etcd://HOST:PORT[,...]: read any cluster from its stores instead"
    )
    p.add_argument("--redis", help="redis://HOST:PORT: also read who holds which agent")
    p.add_argument("--store-root", default="/mooring/", help="etcd key prefix of the cluster")

    p = top.add_parser("scale", help="start or stop principal replicas of a local cluster")
    p.add_argument("--replicas", type=int, required=True)
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")

    p = top.add_parser(
        "replica", help="stop, kill or start one principal replica of a local cluster"
    )
    p.add_argument(
        "action",
        choices=("stop", "kill", "start"),
        help="stop: SIGTERM, it hands its agents over; kill: SIGKILL, as a crash; start: again",
    )
    p.add_argument("id", help="the replica's id, e.g. p2 (see `mooring status`)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")

    verbs = {
        "stop": "SIGTERM one process of a local cluster and wait (a replica hands its agents"
        " over first)",
        "kill": "SIGKILL one process of a local cluster, as a crash",
        "pause": "SIGSTOP one process of a local cluster, as a hang (resume lets it go on)",
        "resume": "SIGCONT a paused process of a local cluster",
        "start": "start a stopped or killed process of a local cluster again",
    }
    for verb, text in verbs.items():
        p = top.add_parser(verb, help=text)
        p.add_argument(
            "name",
            help="a replica (p2), etcd member (etcd1), redis, prometheus, fleet, or an agent"
            " with its own process (see `mooring status`)",
        )
        p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")

    p_chaos = top.add_parser(
        "chaos", help="chaos experiments on fresh local clusters, checked against I1-I4"
    )
    sub_chaos = p_chaos.add_subparsers(dest="chaos_command", required=True)
    p = sub_chaos.add_parser(
        "run",
        help="run experiments (default: all) or a seeded campaign; write a report",
        description="Each experiment runs on a fresh local cluster (shared by experiments"
        " that need the same one) under a steady writer; exit 1 if any failed.",
    )
    p.add_argument(
        "--experiment",
        action="append",
        default=[],
        metavar="NAME",
        help="an experiment of chaos/experiments (e.g. kill-leader) or a path; repeatable",
    )
    p.add_argument(
        "--smoke",
        action="store_true",
        help="the three-experiment subset of CI (and any --experiment)",
    )
    p.add_argument("--campaign", type=int, default=0, metavar="N", help="N random faults")
    p.add_argument("--seed", type=int, help="the campaign's seed (default: random, printed)")
    p.add_argument(
        "--dir",
        type=Path,
        default=Path(".mooring-chaos"),
        help="state dir of the clusters it starts (default .mooring-chaos)",
    )
    p.add_argument(
        "--report", type=Path, help="report folder (default: chaos-report-TIME next to --dir)"
    )
    p.add_argument("--agents", type=int, default=8, help="agents per cluster (default 8)")

    p = top.add_parser("down", help="stop a local cluster (idempotent)")
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")

    p_fleet = top.add_parser("fleet", help="many in-process agents (used by `mooring up`)")
    sub = p_fleet.add_subparsers(dest="fleet_command", required=True)
    p = sub.add_parser("run", help="run every agent of a spec file in this process")
    p.add_argument("--spec", type=Path, required=True, help="JSON spec written by `mooring up`")


def cmd_up(args: argparse.Namespace) -> int:
    from mooring import _launcher as launcher

    options = launcher.UpOptions(
        directory=args.dir,
        replicas=args.replicas,
        agents=args.agents,
        etcd_members=args.etcd_members,
        agent_processes=args.agent_processes,
        fleets=args.fleets,
        base_port=args.base_port,
        detach=args.detach,
        kubernetes=args.kubernetes,
        prometheus=args.prometheus,
        prometheus_port=args.prometheus_port,
        alert_for_scale=args.alert_for_scale,
    )
    return launcher.up(options)


def cmd_replica(args: argparse.Namespace) -> int:
    from mooring import _control as control

    return control.control(args.dir, args.action, args.id, kinds=("replica",))


def cmd_control(args: argparse.Namespace) -> int:
    from mooring import _control as control

    return control.control(args.dir, args.command, args.name)


def cmd_chaos(args: argparse.Namespace) -> int:
    from mooring import _chaos as chaos

    options = chaos.ChaosOptions(
        directory=args.dir,
        report=args.report,
        experiments=tuple(args.experiment),
        smoke=args.smoke,
        campaign=args.campaign,
        seed=args.seed,
        agents=args.agents,
    )
    return chaos.run(options)


def cmd_status(args: argparse.Namespace) -> int:
    from mooring import _state as state_
    from mooring import _status as status_

    if args.coordination:
        from mooring import _remote as remote

        status = remote.collect(args.coordination, redis=args.redis, store_root=args.store_root)
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True))
        else:
            print(remote_render(status))
        return 0
    directory = args.dir.resolve()
    status = status_.collect(state_.load(directory))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(status_.render(status))
    if not status["running"]:
        # Say so, and exit 1 (the contract's runtime failure): scripts need not parse the table.
        print(
            f"mooring: the cluster in {directory} is stopped: start it with"
            f" `mooring up --dir {directory}`",
            file=sys.stderr,
        )
        return 1
    return 0


def remote_render(status: dict[str, Any]) -> str:
    lines = [f"leader: {status['leader'] or '-'}   epoch: {status['epoch']}"]
    lines.append(f"{'ID':<8} {'ENDPOINT':<24} {'LIVE':<5} {'EPOCH':<6} AGENTS")
    for r in status["replicas"]:
        live = "yes" if r["live"] else "no"
        lines.append(
            f"{r['id']:<8} {r['endpoint']:<24} {live:<5} {r['applied_epoch']:<6} {r['agents']}"
        )
    lines.append(
        f"agents: {status['agents_total']} registered, {status['agents_connected']} held, "
        f"{status['agents_on_owner']} on their owner"
    )
    return "\n".join(lines)


def cmd_scale(args: argparse.Namespace) -> int:
    from mooring import _launcher as launcher

    return launcher.scale(args.dir, args.replicas)


def cmd_down(args: argparse.Namespace) -> int:
    from mooring import _launcher as launcher

    return launcher.down(args.dir)


def cmd_fleet(args: argparse.Namespace) -> int:
    from mooring import _fleet as fleet

    asyncio.run(fleet.run(args.spec))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": cmd_up,
    "status": cmd_status,
    "scale": cmd_scale,
    "replica": cmd_replica,
    **{verb: cmd_control for verb in ("stop", "kill", "pause", "resume", "start")},
    "down": cmd_down,
    "chaos": cmd_chaos,
    "fleet": cmd_fleet,
}
