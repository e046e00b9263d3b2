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

from mooring import _access as access
from mooring._usage import UsageError

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
    p.add_argument(
        "--wait",
        type=float,
        nargs="?",
        const=60.0,
        metavar="SECONDS",
        help="with --detach: return once every agent is on its owner, exit 1 after SECONDS"
        " (default 60)",
    )
    p.add_argument(
        "--etcd-members", type=int, default=1, choices=(1, 3), help="etcd members (default 1)"
    )
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
    p.add_argument("--json", action="store_true", help="the status document as JSON")
    p.add_argument(
        "-w",
        "--watch",
        type=float,
        nargs="?",
        const=2.0,
        metavar="SECONDS",
        help="show it again every SECONDS (default 2) until Ctrl-C",
    )
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")
    p.add_argument(
        "--coordination",
        help="etcd[s]://HOST:PORT[,...]: read any cluster from its stores instead",
    )
    p.add_argument(
        "--redis",
        help="redis[s]://HOST:PORT (as principal serve takes it): also read who holds which agent",
    )
    p.add_argument("--store-root", default="/mooring/", help="etcd key prefix of the cluster")
    access.add_redis_flags(p)
    access.add_etcd_flags(p)

    p = top.add_parser("scale", help="start or stop principal replicas of a local cluster")
    p.add_argument("--replicas", type=int, required=True, help="how many replicas to run")
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

    p = top.add_parser("logs", help="print (or follow) the log of one process of a local cluster")
    p.add_argument(
        "name",
        help="a replica (p2), etcd member, redis, prometheus, fleet, or an agent (a fleet's"
        " agent: the fleet log's lines that name it)",
    )
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state dir (default .mooring)")
    p.add_argument("--tail", type=int, default=-1, metavar="N", help="only the last N lines")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is written")
    p.add_argument("--path", action="store_true", help="print the log file's path only")

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


def _private() -> None:
    from mooring import _state as state_

    state_.private()  # what the cluster writes is for this user only


def cmd_up(args: argparse.Namespace) -> int:
    from mooring import _launcher as launcher

    _private()
    try:
        options = _up_options(args)
    except ValueError as err:  # a bad flag value: a usage error naming it
        raise UsageError(f"up: {err}") from err
    return launcher.up(options)


def _up_options(args: argparse.Namespace) -> Any:
    from mooring import _launcher as launcher

    return launcher.UpOptions(
        directory=args.dir,
        replicas=args.replicas,
        agents=args.agents,
        etcd_members=args.etcd_members,
        agent_processes=args.agent_processes,
        fleets=args.fleets,
        base_port=args.base_port,
        detach=args.detach,
        wait=args.wait,
        kubernetes=args.kubernetes,
        prometheus=args.prometheus,
        prometheus_port=args.prometheus_port,
        alert_for_scale=args.alert_for_scale,
    )


def cmd_replica(args: argparse.Namespace) -> int:
    _private()
    from mooring import _control as control

    return control.control(args.dir, args.action, args.id, kinds=("replica",))


def cmd_logs(args: argparse.Namespace) -> int:
    from mooring import _control as control

    try:
        return control.logs(
            args.dir, args.name, tail=args.tail, follow=args.follow, path_only=args.path
        )
    except KeyboardInterrupt:  # the end of `logs -f`
        return 0
    except BrokenPipeError:  # `mooring logs -f p1 | head`
        return _reader_left()


def cmd_control(args: argparse.Namespace) -> int:
    _private()
    from mooring import _control as control

    return control.control(args.dir, args.command, args.name)


def cmd_chaos(args: argparse.Namespace) -> int:
    _private()
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
    if args.watch is not None and args.watch <= 0:
        raise UsageError(f"status: --watch must be a positive number of seconds, got {args.watch}")
    try:
        return _status_loop(args)
    except BrokenPipeError:  # `mooring status -w | head`: the reader has what it wanted
        return _reader_left()


def _reader_left() -> int:
    """stdout's reader went away (`| head`): exit 0 without an error at exit."""
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _status_loop(args: argparse.Namespace) -> int:
    import time

    from mooring import _status as status_

    while True:
        status, stopped = _status_once(args)
        if args.json:
            print(json.dumps(status, indent=2, sort_keys=True), flush=True)
        else:
            if args.watch is not None:
                print(f"--- {time.strftime('%H:%M:%S')}", flush=True)
            print(status_.render(status), flush=True)
        if stopped:
            # Say so, and exit 1 (the contract's runtime failure): scripts need not parse it.
            print(f"mooring: {stopped}", file=sys.stderr, flush=True)
            if args.watch is None:
                return 1
        if args.watch is None:
            return 0
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
        print(flush=True)


def _status_once(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """The status document, and what to say when the cluster is stopped ("" if not)."""
    from mooring import _state as state_
    from mooring import _status as status_

    if args.coordination:
        from mooring import _remote as remote

        status = remote.collect(args.coordination, redis=args.redis, store_root=args.store_root)
        stopped = "" if status["running"] else f"no replica of {args.coordination} is live"
        return status, stopped
    directory = args.dir.resolve()
    status = status_.collect(state_.load(directory))
    if status["running"]:
        return status, ""
    return status, (
        f"the cluster in {directory} is stopped: start it with `mooring up --dir {directory}`"
    )


def cmd_scale(args: argparse.Namespace) -> int:
    _private()
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
    "logs": cmd_logs,
    "down": cmd_down,
    "chaos": cmd_chaos,
    "fleet": cmd_fleet,
}
