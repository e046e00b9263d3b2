"""Network namespaces for chaos experiments: members on one private L2 segment, and faults
made of real packet loss.

    with netns.Topology.create("mc", ["etcd0", "redis", "p1", "fleet"]) as topo:
        server = subprocess.Popen(topo.argv("redis", ["redis-server", "--bind", topo.address("redis")]))
        topo.partition("p1", "redis")   # p1 <-> redis packets dropped: connections hang
        topo.heal()                     # every rule this topology added is gone again

`create` makes one namespace per member (`<prefix>-<name>`) and one more
(`<prefix>-bridge`) holding a Linux bridge. Each member gets a veth pair whose one end is
the member's `eth0` and whose other end is a bridge port; both ends are created directly
inside those namespaces (`ip -n BRIDGE link add ... peer ... netns MEMBER`), so nothing
ever appears in the root namespace. Members get addresses on a /24 that no interface or
route of the root namespace, nor any other namespace, uses (10.213.X.0/24 by default);
they have no default route, IPv6 is off, and `lo` is up, so their traffic cannot leave
the topology.

Faults are iptables DROP rules in the filter table's INPUT chain of the *receiving*
member's own namespace (never OUTPUT: a locally generated packet dropped in OUTPUT fails
`send` at once with EPERM, while a packet dropped on arrival is simply lost, which is
what a partition looks like; TCP connects and reads then hang until their timeouts).
`iptables` is whatever the system links (on Debian 12 iptables-nft, through nf_tables);
rules in a namespace live in that namespace's own ruleset and never touch the root's.

A prefix is held by one live topology at a time: `create` takes an exclusive lock file
that the kernel releases if the process dies, so `cleanup_stale(prefix)` (and `create`
itself) can tell a crashed run's leftovers from a live one's.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = ["Rule", "Topology", "TopologyError", "iptables_variant"]

logger = logging.getLogger(__name__)

PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,11}")  # no "-": "<prefix>-" names one topology
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")  # "v-<name>" must fit IFNAMSIZ (15)
BRIDGE = "bridge"  # the bridge namespace's suffix; no member may be called so
BRIDGE_DEV = "br0"
MEMBER_DEV = "eth0"
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")  # /24s are taken from here
COMMENT = "mooring-chaos"  # every rule carries it, so iptables-save shows whose it is
COMMAND_TIMEOUT = 30.0  # seconds, for one `ip` or `iptables` call
KILL_TIMEOUT = 5.0  # seconds to wait for SIGKILLed processes to leave a namespace
LOCK_DIRS = (Path("/run/mooring-chaos"), Path("/tmp/mooring-chaos"))

Rule = tuple[str, tuple[str, ...]]  # (namespace, iptables rule spec after the chain)


class TopologyError(RuntimeError):
    """An `ip`/`iptables` command failed, or the topology cannot be made as asked."""


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one command; a failure (with check) is a TopologyError naming it and its stderr."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise TopologyError(f"`{shlex.join(argv)}` failed: {err}") from err
    if check and done.returncode != 0:
        stderr = "; ".join(line for line in done.stderr.strip().splitlines() if line)
        raise TopologyError(
            f"`{shlex.join(argv)}` failed (exit {done.returncode}): {stderr or 'no stderr'}"
        )
    return done


def iptables_variant() -> str:
    """Which backend `iptables` drives here: "nf_tables" (iptables-nft) or "legacy"."""
    version = _run(["iptables", "-V"]).stdout.strip()  # "iptables v1.8.9 (nf_tables)"
    match = re.search(r"\((\w+)\)", version)
    return match.group(1) if match else "legacy"


def _namespaces() -> list[str]:
    """Every named network namespace (`ip netns list`), without the "(id: N)" suffixes."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _pids(namespace: str) -> list[int]:
    done = _run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def _kill_all(namespaces: Iterable[str]) -> None:
    """SIGKILL every process in the namespaces and wait (bounded) until none is left."""
    namespaces = list(namespaces)
    deadline = time.monotonic() + KILL_TIMEOUT
    killed: set[int] = set()
    while True:
        left = {ns: _pids(ns) for ns in namespaces}
        left = {ns: pids for ns, pids in left.items() if pids}
        if not left:
            return
        if time.monotonic() > deadline:
            raise TopologyError(f"processes still in namespaces after SIGKILL: {left}")
        for ns, pids in left.items():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    if pid not in killed:
                        killed.add(pid)
                        logger.info("killed pid %d in namespace %s", pid, ns)
        time.sleep(0.02)  # a SIGKILLed process leaves its namespace within milliseconds


def _delete(namespaces: Iterable[str]) -> list[str]:
    """Kill what runs in them, then delete them (their veths go with them)."""
    present = set(_namespaces())
    doomed = [ns for ns in namespaces if ns in present]
    _kill_all(doomed)
    for ns in doomed:
        _run(["ip", "netns", "delete", ns])
        logger.info("deleted namespace %s", ns)
    return doomed


def _lock_dir() -> Path:
    for path in LOCK_DIRS:
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
    raise TopologyError(f"no writable lock directory among {[str(p) for p in LOCK_DIRS]}")


def _lock(prefix: str) -> IO[str]:
    """The prefix's lock, held exclusively (the kernel drops it when the process dies)."""
    file = (_lock_dir() / f"{prefix}.lock").open("a+")
    try:
        fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        file.seek(0)
        owner = file.read().strip() or "unknown"
        file.close()
        raise TopologyError(f"prefix {prefix!r} is held by a live topology (pid {owner})") from None
    file.seek(0)
    file.truncate()
    file.write(f"{os.getpid()}\n")
    file.flush()
    return file


def _stale(prefix: str) -> list[str]:
    return [ns for ns in _namespaces() if ns.startswith(f"{prefix}-")]


def _used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks in use: root's addresses and routes, every named namespace's addresses."""
    outputs = [
        _run(["ip", "-o", "-4", "addr", "show"]).stdout,
        _run(["ip", "-4", "route", "show", "table", "all"]).stdout,
    ]
    for ns in _namespaces():
        outputs.append(_run(["ip", "-n", ns, "-o", "-4", "addr", "show"], check=False).stdout)
    used: list[ipaddress.IPv4Network] = []
    for word in " ".join(outputs).split():
        with contextlib.suppress(ValueError):
            if "/" in word or word.count(".") == 3:
                used.append(ipaddress.IPv4Network(word, strict=False))
    return used


def _free_subnet() -> ipaddress.IPv4Network:
    used = _used_networks()
    for subnet in SUBNET_POOL.subnets(new_prefix=24):
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise TopologyError(f"no free /24 left in {SUBNET_POOL}")


def _chosen_subnet(text: str) -> ipaddress.IPv4Network:
    net = ipaddress.IPv4Network(text)
    if clash := [str(used) for used in _used_networks() if net.overlaps(used)]:
        raise TopologyError(f"subnet {net} overlaps networks in use: {', '.join(clash)}")
    return net


class Topology:
    """Member namespaces on one bridge, and the DROP rules that fault their links."""

    def __init__(
        self,
        prefix: str,
        addresses: dict[str, str],
        *,
        subnet: ipaddress.IPv4Network,
        lock: IO[str] | None,
    ) -> None:
        self.prefix = prefix
        self.subnet = subnet
        self._addresses = dict(addresses)
        self._lock = lock
        self._rules: dict[Rule, None] = {}  # insertion-ordered set of the rules we added
        self._destroyed = False

    # --- making and unmaking ---------------------------------------------------------

    @classmethod
    def create(cls, prefix: str, names: Sequence[str], *, subnet: str | None = None) -> Topology:
        """One namespace per name plus the bridge's; leftovers of a dead run are removed."""
        if not PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must match {PREFIX_RE.pattern}")
        for name in names:
            if not NAME_RE.fullmatch(name) or name == BRIDGE:
                raise ValueError(
                    f"member name {name!r} must match {NAME_RE.pattern}, not {BRIDGE!r}"
                )
        if len(set(names)) != len(names) or not names:
            raise ValueError(f"member names must be unique and at least one: {list(names)}")
        lock = _lock(prefix)
        try:
            logger.info("iptables here is %s", iptables_variant())
            if stale := _stale(prefix):
                logger.warning("removing leftovers of a dead topology %s: %s", prefix, stale)
                _delete(stale)
            # One creator at a time picks a subnet, so two topologies never share one.
            with _lock_dir().joinpath("subnets.lock").open("a") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                net = _chosen_subnet(subnet) if subnet else _free_subnet()
                if net.num_addresses - 2 < len(names):
                    raise ValueError(f"subnet {net} is too small for {len(names)} members")
                hosts = list(net.hosts())
                addresses = {name: str(hosts[i]) for i, name in enumerate(names)}
                topo = cls(prefix, addresses, subnet=net, lock=lock)
                try:
                    topo._build()
                except BaseException:
                    topo.destroy()
                    raise
        except BaseException:
            lock.close()
            raise
        logger.info(
            "topology %s created on %s: %s",
            prefix,
            net,
            ", ".join(f"{n}={a}" for n, a in addresses.items()),
        )
        return topo

    def _build(self) -> None:
        bridge = self.namespace(BRIDGE)
        _run(["ip", "netns", "add", bridge])
        self._sysctl(bridge, "net.ipv6.conf.all.disable_ipv6=1")
        _run(["ip", "-n", bridge, "link", "add", BRIDGE_DEV, "type", "bridge"])
        _run(["ip", "-n", bridge, "link", "set", BRIDGE_DEV, "up"])
        for name, address in self._addresses.items():
            ns = self.namespace(name)
            port = f"v-{name}"
            _run(["ip", "netns", "add", ns])
            self._sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")
            self._sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
            _run(
                [
                    "ip",
                    "-n",
                    bridge,
                    "link",
                    "add",
                    port,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    MEMBER_DEV,
                    "netns",
                    ns,
                ]
            )
            _run(["ip", "-n", bridge, "link", "set", port, "master", BRIDGE_DEV, "up"])
            _run(
                [
                    "ip",
                    "-n",
                    ns,
                    "addr",
                    "add",
                    f"{address}/{self.subnet.prefixlen}",
                    "dev",
                    MEMBER_DEV,
                ]
            )
            _run(["ip", "-n", ns, "link", "set", MEMBER_DEV, "up"])

    @staticmethod
    def _sysctl(namespace: str, setting: str) -> None:
        _run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", setting])

    def destroy(self) -> None:
        """Kill every process in the namespaces, delete them and their veths. Idempotent."""
        if self._destroyed:
            return
        _delete([self.namespace(n) for n in self._addresses] + [self.namespace(BRIDGE)])
        self._rules.clear()
        self._destroyed = True
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        logger.info("topology %s destroyed", self.prefix)

    @classmethod
    def cleanup_stale(cls, prefix: str) -> list[str]:
        """Delete the namespaces a crashed run with this prefix left; return their names.

        Raises TopologyError when a live topology holds the prefix.
        """
        if not PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must match {PREFIX_RE.pattern}")
        with _lock(prefix):
            removed = _delete(_stale(prefix))
        if removed:
            logger.warning("removed leftovers of topology %s: %s", prefix, removed)
        return removed

    def describe(self) -> dict[str, object]:
        """What another process needs to `attach`: prefix, subnet, members' namespaces
        and addresses (also the `netns` placement `mooring up` takes)."""
        return {
            "prefix": self.prefix,
            "subnet": str(self.subnet),
            "members": {
                name: {"namespace": self.namespace(name), "host": address}
                for name, address in self._addresses.items()
            },
        }

    @classmethod
    def attach(cls, description: dict[str, Any]) -> Topology:
        """The topology another process created (see `describe`), to add faults to and
        heal with `heal_all`; it owns no lock, and `destroy` stays with its creator."""
        members = description["members"]
        return cls(
            description["prefix"],
            {name: str(m["host"]) for name, m in members.items()},
            subnet=ipaddress.IPv4Network(description["subnet"]),
            lock=None,
        )

    def heal_all(self) -> list[Rule]:
        """Remove every rule carrying this suite's comment in the members' namespaces,
        whichever process added it (rules of other tools stay); return what it removed."""
        removed: list[Rule] = []
        for name in self._addresses:
            ns = self.namespace(name)
            listed = _run(["ip", "netns", "exec", ns, "iptables", "-w", "-S", "INPUT"])
            for line in listed.stdout.splitlines():
                words = shlex.split(line)
                if words[:2] != ["-A", "INPUT"] or COMMENT not in words:
                    continue
                _run(["ip", "netns", "exec", ns, "iptables", "-w", "-D", "INPUT", *words[2:]])
                removed.append((ns, tuple(words[2:])))
                logger.info("rule removed in %s: INPUT %s", ns, shlex.join(words[2:]))
        self._rules.clear()
        return removed

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    # --- looking ---------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self._addresses)

    def namespace(self, name: str) -> str:
        """The network namespace's name for a member (or "bridge")."""
        if name != BRIDGE:
            self._check(name)
        return f"{self.prefix}-{name}"

    def address(self, name: str) -> str:
        """The member's IPv4 address on the topology's subnet."""
        self._check(name)
        return self._addresses[name]

    def argv(self, name: str, cmd: Sequence[str]) -> list[str]:
        """The argv that runs cmd inside the member's namespace."""
        return ["ip", "netns", "exec", self.namespace(name), *cmd]

    @property
    def rules(self) -> list[Rule]:
        """The DROP rules this topology has in place, in the order they were added."""
        return list(self._rules)

    def _check(self, name: str) -> None:
        if self._destroyed:
            raise TopologyError(f"topology {self.prefix} is destroyed")
        if name not in self._addresses:
            raise KeyError(f"{name!r} is not a member of topology {self.prefix}: {self.names}")

    # --- faults ----------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Drop every packet between a and b, both directions."""
        self._add(b, ("-s", self.address(a)))
        self._add(a, ("-s", self.address(b)))
        logger.info("partitioned %s <-> %s", a, b)

    def drop_one_way(self, src: str, dst: str) -> None:
        """Drop src's packets to dst; dst's packets to src still flow."""
        self._add(dst, ("-s", self.address(src)))
        logger.info("dropping %s -> %s (one way)", src, dst)

    def isolate(self, name: str) -> None:
        """The member receives nothing but its own loopback, and nobody receives from it."""
        self._add(name, ("-i", MEMBER_DEV))
        for other in self._addresses:
            if other != name:
                self._add(other, ("-s", self.address(name)))
        logger.info("isolated %s", name)

    def heal(self) -> None:
        """Remove every rule this topology added, and nothing else."""
        for ns, match in reversed(self._rules):
            if self._present(ns, match):
                _run(self._iptables(ns, "-D", match))
                logger.info("rule removed in %s: INPUT %s", ns, shlex.join(self._spec(match)))
            else:
                logger.warning(
                    "rule already gone in %s: INPUT %s", ns, shlex.join(self._spec(match))
                )
        self._rules.clear()
        logger.info("topology %s healed", self.prefix)

    def _add(self, name: str, match: tuple[str, ...]) -> None:
        ns = self.namespace(name)
        if self._present(ns, match):
            logger.debug("rule already in %s: INPUT %s", ns, shlex.join(self._spec(match)))
        else:
            _run(self._iptables(ns, "-I", match))
            logger.info("rule added in %s: INPUT %s", ns, shlex.join(self._spec(match)))
        self._rules[(ns, match)] = None

    def _present(self, ns: str, match: tuple[str, ...]) -> bool:
        done = _run(self._iptables(ns, "-C", match), check=False)
        if done.returncode == 0:
            return True
        if done.returncode == 1:  # "Bad rule (does a matching rule exist in that chain?)"
            return False
        _run(self._iptables(ns, "-C", match))  # raises with the command and its stderr
        return False

    @staticmethod
    def _spec(match: tuple[str, ...]) -> tuple[str, ...]:
        return (*match, "-m", "comment", "--comment", COMMENT, "-j", "DROP")

    def _iptables(self, ns: str, op: str, match: tuple[str, ...]) -> list[str]:
        return ["ip", "netns", "exec", ns, "iptables", "-w", op, "INPUT", *self._spec(match)]
