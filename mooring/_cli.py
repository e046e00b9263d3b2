"""The `mooring` command line: argument parsing, environment defaults, exit codes.

Every flag also reads MOORING_<FLAG> (dashes as underscores) from the environment.
Exit codes: 0 ok, 1 runtime failure, 2 usage error. Errors are one line unless --debug.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the commands import what they use, so `agent run` stays small
    from agent import _settings as agent_settings

from mooring import _hubcli as hubcli
from mooring import _localcli as localcli
from mooring import _logging as logging_
from mooring import _manifests as manifests
from mooring import _usage as usage
from proto import codec

__all__ = ["main"]

UsageError = usage.UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse would print usage; we want one line
        where = self.prog.removeprefix("mooring").strip()  # main() prints "mooring: " itself
        raise UsageError(f"{where}: {message}" if where else message)


def _apply_env(parser: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """Let MOORING_<FLAG> provide each flag's default (and satisfy required flags)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _apply_env(sub, env)
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in ("help", "debug"):
            continue
        name = "MOORING_" + longs[0][2:].upper().replace("-", "_")
        if name in env:
            value: Any = env[name]
            if isinstance(action, argparse._StoreTrueAction):
                value = value.lower() in ("1", "true", "yes", "on")
            elif action.type is not None and callable(action.type):
                try:
                    value = action.type(value)
                except (TypeError, ValueError) as err:
                    raise UsageError(f"bad {name}={env[name]!r}: {err}") from None
            action.default = value
            action.required = False


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mooring", description="HA control plane for pull-based GitOps agents.")
    parser.add_argument(
        "--version",
        action="version",
        version=f"mooring {codec.RELEASE} (wire protocol {codec.PROTOCOL_MIN}-{codec.PROTOCOL_MAX})",
    )
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument("--log-level", default="INFO")
    top = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_pki = top.add_parser("pki", help="certificates").add_subparsers(
        dest="pki_command", required=True
    )
    p = p_pki.add_parser("init", help="create the CA")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--force", action="store_true", help="overwrite an existing CA")
    p_issue = p_pki.add_parser("issue", help="issue a certificate").add_subparsers(
        dest="subject", required=True
    )
    p = p_issue.add_parser("principal")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--san", default="", help="HOST[,HOST...]: DNS names and IP addresses")
    p.add_argument("--days", type=int, default=365)
    p = p_issue.add_parser("agent")
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--days", type=int, default=365)

    p_pr = top.add_parser("principal", help="principal replica").add_subparsers(
        dest="principal_command", required=True
    )
    p = p_pr.add_parser("serve", help="run one principal replica")
    p.add_argument("--id", required=True)
    p.add_argument("--listen", required=True, help="HOST:PORT for agents")
    p.add_argument("--advertise", help="HOST:PORT agents reach this replica on (default: --listen)")
    p.add_argument(
        "--coordination", required=True, help="etcd://HOST:PORT[,HOST:PORT] or kubernetes (Leases)"
    )
    p.add_argument(
        "--store",
        help="the hub store: etcd://HOST:PORT[,...] or kubernetes://[?kubeconfig=PATH]"
        "[&hub=NAME][&namespace-prefix=PREFIX] (default: --coordination)",
    )
    p.add_argument("--namespace", default="default", help="namespace of the Lease objects")
    p.add_argument("--redis", help="redis://HOST:PORT session registry")
    p.add_argument("--tls-dir", required=True, type=Path)
    p.add_argument("--metrics", help="HOST:PORT for /metrics, /healthz and /readyz")
    p.add_argument(
        "--health",
        help="HOST:PORT of a plaintext grpc.health.v1 server for probes (kubelet's gRPC probes"
        " cannot do mTLS): service `liveness` is SERVING while the process runs, `readiness`"
        ' (and "") while it is a member with a shard map applied',
    )
    p.add_argument("--max-message-bytes", type=int, default=1 << 20)
    p.add_argument("--heartbeat-interval", type=float, default=5.0, help="seconds")
    p.add_argument("--lease-duration", type=float, default=4.0, help="seconds (client-go: 15)")
    p.add_argument("--renew-deadline", type=float, default=3.0, help="seconds (client-go: 10)")
    p.add_argument("--retry-period", type=float, default=0.5, help="seconds (client-go: 2)")
    p.add_argument("--request-timeout", type=float, default=1.0, help="seconds per store call")
    p.add_argument(
        "--session-ttl", type=float, default=6.0, help="seconds a Redis session entry lives"
    )
    p.add_argument(
        "--liveness-ttl",
        type=float,
        default=1.0,
        help="seconds this replica's Redis liveness key lives without a beat: a dead "
        "replica's agents are served elsewhere about this long after it stopped",
    )
    p.add_argument("--history", type=Path, help="append session opens/closes (JSON lines) here")
    p.add_argument(
        "--store-root", default="/mooring/", help="etcd key prefix of everything Mooring writes"
    )

    p_ag = top.add_parser("agent", help="run an agent; the hub's agent registry").add_subparsers(
        dest="agent_command", required=True
    )
    p = p_ag.add_parser("run", help="run one agent")
    p.add_argument("--name", required=True)
    p.add_argument("--mode", required=True, choices=("managed", "autonomous"))
    p.add_argument("--endpoints", required=True, help="HOST:PORT[,HOST:PORT]")
    p.add_argument("--tls-dir", required=True, type=Path)
    local = p.add_mutually_exclusive_group(required=True)
    local.add_argument("--state", type=Path, help="SQLite file of the local store")
    local.add_argument(
        "--store",
        help="the local store: sqlite:///FILE, or kubernetes://[?kubeconfig=PATH][&namespace=NS]"
        " for Argo CD's namespace (default argocd) on the workload cluster",
    )
    p.add_argument("--metrics", help="HOST:PORT for /metrics")
    p.add_argument(
        "--drift-check-interval",
        type=float,
        default=60.0,
        help="seconds between full checks for objects changed on the workload cluster (managed)",
    )
    hubcli.add_agent_parsers(p_ag)  # create, list, get, delete, set-mode

    p_app = top.add_parser("app", help="Applications and AppProjects").add_subparsers(
        dest="app_command", required=True
    )
    verbs = {
        "apply": "write Applications and AppProjects from manifests",
        "list": "list them: every agent's on the hub by default",
        "delete": "delete them by name, or by the manifests that created them",
    }
    for verb, about in verbs.items():
        p = p_app.add_parser(verb, help=about)
        target = p.add_mutually_exclusive_group(required=verb != "list")
        target.add_argument(
            "--agent", help="the agent whose resources live in the hub store (list: only its)"
        )
        target.add_argument("--agent-state", type=Path, help="an agent's local store (SQLite file)")
        hubcli.add_store_flags(p)
        if verb == "apply":
            p.add_argument(
                "-f", "--file", required=True, help="YAML or JSON manifest(s); - for stdin"
            )
            p.add_argument(
                "--create-agent",
                action="store_true",
                help="register --agent (managed) if it is not registered yet, instead of failing",
            )
        if verb == "list":
            p.add_argument(
                "-o",
                "--output",
                choices=("wide", "json", "yaml"),
                help="wide adds VERSION, CHECKSUM and ORIGIN",
            )
            p.add_argument("--json", action="store_true", help="the same as -o json")
        if verb == "delete":
            p.add_argument(
                "--kind",
                default="Application",
                choices=("Application", "AppProject"),
                help="the kind of the NAMEs (default Application)",
            )
            p.add_argument(
                "-f",
                "--file",
                help="delete what these manifest(s) name (kind and name); - for stdin",
            )
            p.add_argument("names", nargs="*", metavar="NAME", help="names to delete")

    localcli.add_parsers(top)  # up, status, scale, down, fleet run: the local cluster
    return parser


# ----------------------------------------------------------------------------- commands
def cmd_pki(args: argparse.Namespace) -> int:
    from principal import _pki as pki

    if args.pki_command == "init":
        path = pki.init_ca(args.dir, force=args.force)
        print(f"CA written to {path}")
        return 0
    if args.subject == "principal":
        sans = [s.strip() for s in args.san.split(",") if s.strip()]
        path = pki.issue_principal(args.dir, name=args.name, sans=sans, days=args.days)
    else:
        path = pki.issue_agent(args.dir, name=args.name, days=args.days)
    print(f"certificate written to {path}")
    return 0


def cmd_principal(args: argparse.Namespace) -> int:
    from election import _settings as election_settings
    from principal import _server as principal_server
    from principal import _session as session
    from principal import _settings as principal_settings

    settings = principal_settings.PrincipalSettings(
        replica_id=args.id,
        listen=args.listen,
        advertise=args.advertise or args.listen,
        coordination=args.coordination,
        store=args.store,
        namespace=args.namespace,
        redis=args.redis,
        tls_dir=args.tls_dir,
        metrics=args.metrics,
        health=args.health,
        session=session.SessionSettings(
            max_message_bytes=args.max_message_bytes,
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_timeout=args.heartbeat_interval * 3,
        ),
        election=election_settings.ElectionSettings(
            lease_duration=args.lease_duration,
            renew_deadline=args.renew_deadline,
            retry_period=args.retry_period,
            request_timeout=args.request_timeout,
        ),
        session_ttl=args.session_ttl,
        liveness_ttl=args.liveness_ttl,
        history=args.history,
        store_root=args.store_root,
    )
    asyncio.run(principal_server.run(settings))
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    if args.agent_command != "run":
        return hubcli.cmd_registry(args)
    from agent import _settings as agent_settings

    settings = agent_settings.AgentSettings(
        name=args.name,
        mode=args.mode,
        endpoints=tuple(e.strip() for e in args.endpoints.split(",") if e.strip()),
        tls_dir=args.tls_dir,
        state=args.state,
        store=args.store,
        metrics=args.metrics,
        drift_check_interval=args.drift_check_interval,
    )
    asyncio.run(_run_agent(settings))
    return 0


async def _run_agent(settings: agent_settings.AgentSettings) -> None:
    import signal

    from agent import _client as agent_client
    from proto import _exposition as exposition

    agent = agent_client.Agent(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    server = None
    if settings.metrics:
        host, _, port_text = settings.metrics.rpartition(":")
        if not host or not port_text.isdigit():
            raise ValueError(f"bad --metrics {settings.metrics!r}: expected HOST:PORT")
        host, port = host.strip("[]"), int(port_text)
        server = exposition.serve(host, port, registry=agent.registry, ready=agent.readiness)
    try:
        await agent.run()
    finally:
        if server is not None:
            server.close()


def cmd_app(args: argparse.Namespace) -> int:
    if args.agent_state is not None:
        return _app_local(args)
    return asyncio.run(hubcli.with_store(args, lambda desired: hubcli.app_on_hub(args, desired)))


def _app_local(args: argparse.Namespace) -> int:
    from agent import _store as agent_store

    create = args.app_command == "apply"
    local = agent_store.AgentStore(args.agent_state, create=create)
    try:
        if args.app_command == "apply":
            docs = manifests.valid(args.file, need_spec=local.mode == "autonomous")
            existed = {(r.kind, r.name) for r in local.list()}
            for doc in docs:
                row, changed = local.apply_local(doc)
                said = "configured" if (row.kind, row.name) in existed else "created"
                existed.add((row.kind, row.name))
                print(f"{row.kind} {row.name} {said if changed else 'unchanged'}")
        elif args.app_command == "delete":
            missing = 0
            for kind, name in manifests.delete_targets(args):
                deleted = local.delete_local(kind, name)
                missing += not deleted
                print(f"{kind} {name} {'deleted' if deleted else 'not found'}")
            return 1 if missing else 0
        else:
            rows = []
            for r in local.list():
                sync, health = hubcli.sync_and_health(r.status)
                rows.append(
                    {
                        "kind": r.kind,
                        "name": r.name,
                        "version": r.version,
                        "checksum": r.checksum[:12],
                        "sync": sync,
                        "health": health,
                        "status": "/".join(x for x in (sync, health) if x != "-") or "-",
                        "manifest": r.manifest(),
                    }
                )
            output = "json" if args.json and not args.output else args.output
            if output in ("json", "yaml"):
                hubcli.emit({"mode": local.mode, "items": rows}, output)
            elif not rows:
                print("no resources found", file=sys.stderr)
            else:
                columns = ["kind", "name", "sync", "health"]
                hubcli.print_table(
                    rows, columns + (["version", "checksum"] if output == "wide" else [])
                )
    finally:
        local.close()
    return 0


COMMANDS = {"pki": cmd_pki, "principal": cmd_principal, "agent": cmd_agent, "app": cmd_app}
COMMANDS.update(localcli.COMMANDS)  # the local cluster launcher (mooring/_launcher.py)


def _setup_logging(args: argparse.Namespace) -> None:
    level = "DEBUG" if args.debug else str(args.log_level).upper()
    logging_.setup(level, args.log_format, sys.stderr)


OUR_PACKAGES = {"proto", "election", "principal", "agent", "mooring"}


def _expected(err: Exception) -> bool:
    """Errors that deserve one readable line: bad values, OS errors, and every error of
    ours (judged by module, so the commands' modules need not be imported up front)."""
    if isinstance(err, ValueError | RuntimeError | OSError):
        return True
    return any(
        cls.__module__.split(".")[0] in OUR_PACKAGES and issubclass(cls, Exception)
        for cls in type(err).__mro__[:-2]
    )


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or env.get("MOORING_DEBUG", "") in ("1", "true")
    try:
        parser = build_parser()
        _apply_env(parser, env)
        args = parser.parse_args(argv)
        _setup_logging(args)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"mooring: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if debug or not _expected(err):
            raise
        print(
            f"mooring: error: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
            file=sys.stderr,
        )
        return 1
