"""The `mooring` command line: argument parsing, environment defaults, exit codes.

Every flag also reads MOORING_<FLAG> (dashes as underscores) from the environment.
Exit codes: 0 ok, 1 runtime failure, 2 usage error, 3 `principal serve` stopped because a
task it must not run without failed (it fenced itself first, logged why, and wants a
restart by systemd or Kubernetes: principal/_server.py POLICIES). Errors are one line
unless --debug.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import agent
import election
import principal

if TYPE_CHECKING:  # the commands import what they use, so `agent run` stays small
    from agent import settings as agent_settings
    from principal import settings as principal_settings

from agent import flags as agent_flags
from mooring import _access as access
from mooring import _errors as errors
from mooring import _hubcli as hubcli
from mooring import _localcli as localcli
from mooring import _logging as logging_
from mooring import _manifests as manifests
from mooring import _revokecli as revokecli
from mooring import _usage as usage
from principal import flags as principal_flags
from proto import codec, limits
from proto import errors as proto_errors

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
                    raise UsageError(f"bad {name}={env[name]!r}: {err}") from err
            action.default = value
            action.required = False


VERSION = f"mooring {codec.RELEASE} (wire protocol {codec.PROTOCOL_MIN}-{codec.PROTOCOL_MAX})"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mooring", description="HA control plane for pull-based GitOps agents.")
    parser.add_argument("--version", action="version", version=VERSION, help="print it and exit")
    parser.add_argument("--debug", action="store_true", help="tracebacks and debug logs")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (default) or json: one object a line, for log collectors",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO (default), WARNING or ERROR"
    )
    top = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_pki = top.add_parser("pki", help="certificates").add_subparsers(
        dest="pki_command", required=True
    )
    p = p_pki.add_parser("init", help="create the CA")
    p.add_argument("--dir", required=True, type=Path, help="the CA folder to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing CA")
    p_issue = p_pki.add_parser("issue", help="issue a certificate").add_subparsers(
        dest="subject", required=True
    )
    p = p_issue.add_parser("principal", help="a replica's server certificate")
    p.add_argument("--dir", required=True, type=Path, help="the CA folder (`pki init`)")
    p.add_argument("--name", required=True, help="the replica's id, e.g. p1")
    p.add_argument("--san", default="", help="HOST[,HOST...]: DNS names and IP addresses")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p = p_issue.add_parser("agent", help="an agent's client certificate (its name is its identity)")
    p.add_argument("--dir", required=True, type=Path, help="the CA folder (`pki init`)")
    p.add_argument("--name", required=True, help="the agent's name, e.g. edge-01")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    revokecli.add_parsers(p_pki)  # revoke, revocations: the hub's revocation list

    p_pr = top.add_parser("principal", help="principal replica").add_subparsers(
        dest="principal_command", required=True
    )
    p = p_pr.add_parser("serve", help="run one principal replica")
    p.add_argument("--version", action="version", version=VERSION, help="print it and exit")
    principal_flags.add_to(p)  # principal/_flags.py: one table, defaults from the settings
    access.add_redis_flags(p)
    access.add_etcd_flags(p)

    p_ag = top.add_parser("agent", help="run an agent; the hub's agent registry").add_subparsers(
        dest="agent_command", required=True
    )
    p = p_ag.add_parser("run", help="run one agent")
    p.add_argument("--version", action="version", version=VERSION, help="print it and exit")
    agent_flags.add_to(p)  # agent/_flags.py: one table, defaults from AgentSettings
    hubcli.add_agent_parsers(p_ag)  # create, list, get, delete, set-mode

    p_app = top.add_parser("app", help="Applications and AppProjects").add_subparsers(
        dest="app_command", required=True
    )
    verbs = {
        "apply": "write Applications and AppProjects from manifests",
        "list": "list them: every agent's on the hub by default",
        "get": "show one, with its delivery, sync and health (-o yaml|json: the whole object)",
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
        if verb in ("list", "get"):
            p.add_argument(
                "-o",
                "--output",
                choices=("wide", "json", "yaml"),
                help="wide adds VERSION, CHECKSUM and ORIGIN",
            )
            p.add_argument("--json", action="store_true", help="the same as -o json")
        if verb in ("get", "delete"):
            p.add_argument(
                "--kind",
                default="Application",
                choices=("Application", "AppProject"),
                help="the kind of the NAME(s) (default Application)",
            )
        if verb == "get":
            p.add_argument("name", metavar="NAME", help="the Application's (or --kind's) name")
        if verb == "delete":
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
    from principal import pki

    if args.pki_command == "revoke":
        return revokecli.cmd_revoke(args)
    if args.pki_command == "revocations":
        return revokecli.cmd_revocations(args)
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


# The nested settings fields `principal serve` sets from flags: their own ValueErrors
# name the field, and the one line the user reads names the flag they typed.
# (PrincipalSettings names its flags itself.)
PRINCIPAL_FLAGS = {
    flag.field.rpartition(".")[2]: flag.name for flag in principal_flags.FLAGS if "." in flag.field
}
_PRINCIPAL_FIELD = re.compile(r"\b(" + "|".join(PRINCIPAL_FLAGS) + r")\b")


def cmd_principal(args: argparse.Namespace) -> int:
    from principal import server as principal_server

    try:
        settings = _principal_settings(args)
    except ValueError as err:
        named = _PRINCIPAL_FIELD.sub(lambda m: PRINCIPAL_FLAGS[m[1]], str(err))
        raise UsageError(f"principal serve: {named}") from err
    return asyncio.run(principal_server.run(settings))  # 3: supervise.EXIT_FATAL


def _principal_settings(args: argparse.Namespace) -> principal_settings.PrincipalSettings:
    """`principal serve`'s settings from its flags; ValueError when a value is bad."""
    return principal_flags.settings(args)


def cmd_agent(args: argparse.Namespace) -> int:
    if args.agent_command != "run":
        return hubcli.cmd_registry(args)

    try:
        settings = agent_flags.settings(args)
    except ValueError as err:  # AgentSettings names the flags
        raise UsageError(f"agent run: {err}") from err
    limits.raise_open_files_limit()
    asyncio.run(_run_agent(settings))
    return 0


async def _run_agent(settings: agent_settings.AgentSettings) -> None:
    import signal

    from agent import client as agent_client
    from proto import exposition

    agent = agent_client.Agent(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    server = None
    if settings.metrics:  # HOST:PORT, as AgentSettings checked
        host, _, port_text = settings.metrics.rpartition(":")
        try:
            server = exposition.serve(
                host.strip("[]"), int(port_text), registry=agent.registry, ready=agent.readiness
            )
        except OSError as err:
            reason = (err.strerror or str(err)).lower()
            raise OSError(f"cannot listen on {settings.metrics} for metrics: {reason}") from err
    try:
        await agent.run()
    finally:
        if server is not None:
            server.close()


def cmd_app(args: argparse.Namespace) -> int:
    if getattr(args, "json", False) and not args.output:
        args.output = "json"
    if args.agent_state is not None:
        return _app_local(args)
    return asyncio.run(hubcli.with_store(args, lambda desired: hubcli.app_on_hub(args, desired)))


def _app_local(args: argparse.Namespace) -> int:
    from agent import store as agent_store

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
                if args.app_command == "get" and (r.kind, r.name) != (args.kind, args.name):
                    continue
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
            output = args.output
            if args.app_command == "get" and not rows:
                raise RuntimeError(f"{args.kind} {args.name} not found in {args.agent_state}")
            if args.app_command == "get" and output in ("json", "yaml"):
                hubcli.emit(rows[0]["manifest"], output)
            elif output in ("json", "yaml"):
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


# Every error of ours derives from its package's root (tests/unit/test_errors.py checks),
# and the roots load alone: judging an error imports none of the modules that raise them.
OURS: tuple[type[Exception], ...] = (
    proto_errors.ProtoError,
    election.CoordinationError,
    principal.PrincipalError,
    agent.AgentError,
    errors.MooringError,
)


class Exit(NamedTuple):
    """How `mooring` ends on an error of `kinds`."""

    kinds: tuple[type[BaseException], ...]
    code: int
    line: str | None  # printed on stderr, {} the error's first line; None: nothing
    debug_traceback: bool  # --debug re-raises it instead, for its traceback


# How `mooring` ends on an exception: the first row it is an instance of. One that no
# row names (a bug) keeps its traceback.
EXITS: tuple[Exit, ...] = (
    Exit((usage.UsageError,), 2, "mooring: {}", False),  # bad flags, arguments or values
    Exit((KeyboardInterrupt,), 130, None, False),
    Exit((*OURS, ValueError, RuntimeError, OSError), 1, "mooring: error: {}", True),
)


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or env.get("MOORING_DEBUG", "") in ("1", "true")
    try:
        parser = build_parser()
        _apply_env(parser, env)
        args = parser.parse_args(argv)
        access.apply(args, env)  # the --etcd-* flags into the etcd URLs; files checked
        _setup_logging(args)
        return COMMANDS[args.command](args)
    except (Exception, KeyboardInterrupt) as err:
        end = next((row for row in EXITS if isinstance(err, row.kinds)), None)
        if end is None or (debug and end.debug_traceback):
            raise
        if end.line is not None:
            print(end.line.format(_first_line(err)), file=sys.stderr)
        return end.code


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
