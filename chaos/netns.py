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

import fcntl
import ipaddress
import logging
import re
from collections.abc import Sequence
from types import TracebackType
from typing import IO, Any

from chaos import _nshost as nshost
from chaos import _nsrules as nsrules

__all__ = ["Rule", "Topology", "TopologyError", "iptables_variant"]

logger = logging.getLogger(__name__)

PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,11}")  # no "-": "<prefix>-" names one topology
NAME_RE = re.compile(r"[a-z][a-z0-9]{0,11}")  # "v-<name>" must fit IFNAMSIZ (15)
BRIDGE = "bridge"  # the bridge namespace's suffix; no member may be called so
BRIDGE_DEV = "br0"
MEMBER_DEV = "eth0"

# The parts: the host side (chaos/_nshost.py: commands, namespaces, locks, subnets) and
# the DROP rules (chaos/_nsrules.py); named here, where experiments and tests look.
TopologyError = nshost.TopologyError
Rule = nsrules.Rule
iptables_variant = nshost.iptables_variant
_run = nshost.run  # tests run one command through it


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
        self._rules = nsrules.Rules()
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
        lock = nshost.lock(prefix)
        try:
            logger.info("iptables here is %s", nshost.iptables_variant())
            if stale := nshost.stale(prefix):
                logger.warning("removing leftovers of a dead topology %s: %s", prefix, stale)
                nshost.delete(stale)
            # One creator at a time picks a subnet, so two topologies never share one.
            with nshost.lock_dir().joinpath("subnets.lock").open("a") as guard:
                fcntl.flock(guard, fcntl.LOCK_EX)
                net = nshost.chosen_subnet(subnet) if subnet else nshost.free_subnet()
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
        nshost.run(["ip", "netns", "add", bridge])
        self._sysctl(bridge, "net.ipv6.conf.all.disable_ipv6=1")
        nshost.run(["ip", "-n", bridge, "link", "add", BRIDGE_DEV, "type", "bridge"])
        nshost.run(["ip", "-n", bridge, "link", "set", BRIDGE_DEV, "up"])
        for name, address in self._addresses.items():
            ns = self.namespace(name)
            port = f"v-{name}"
            nshost.run(["ip", "netns", "add", ns])
            self._sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1")
            self._sysctl(ns, "net.ipv6.conf.default.disable_ipv6=1")
            nshost.run(["ip", "-n", ns, "link", "set", "lo", "up"])
            nshost.run(
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
            nshost.run(["ip", "-n", bridge, "link", "set", port, "master", BRIDGE_DEV, "up"])
            nshost.run(
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
            nshost.run(["ip", "-n", ns, "link", "set", MEMBER_DEV, "up"])

    @staticmethod
    def _sysctl(namespace: str, setting: str) -> None:
        nshost.run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", setting])

    def destroy(self) -> None:
        """Kill every process in the namespaces, delete them and their veths. Idempotent."""
        if self._destroyed:
            return
        nshost.delete([self.namespace(n) for n in self._addresses] + [self.namespace(BRIDGE)])
        self._rules.forget()
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
        with nshost.lock(prefix):
            removed = nshost.delete(nshost.stale(prefix))
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
        removed = nsrules.remove_ours(self.namespace(name) for name in self._addresses)
        self._rules.forget()
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
        return self._rules.listed()

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
        self._rules.heal()
        logger.info("topology %s healed", self.prefix)

    def _add(self, name: str, match: tuple[str, ...]) -> None:
        self._rules.add(self.namespace(name), match)
