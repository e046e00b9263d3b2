"""The host side of the chaos suite's network namespaces: running `ip` and `iptables`
(a failure is a TopologyError naming the command and its stderr), the named namespaces
and the processes in them, a prefix's lock file, and a /24 no other network uses.

Everything here acts on the machine, not on one topology; `chaos.netns.Topology` is
made of these.
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
from typing import IO

from chaos import _errors as errors

__all__ = [
    "TopologyError",
    "chosen_subnet",
    "delete",
    "free_subnet",
    "iptables_variant",
    "list_namespaces",
    "lock",
    "lock_dir",
    "namespace_pids",
    "run",
    "stale",
]

logger = logging.getLogger("chaos.netns")  # one logger for the topology and its host side

SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")  # /24s are taken from here
COMMAND_TIMEOUT = 30.0  # seconds, for one `ip` or `iptables` call
KILL_TIMEOUT = 5.0  # seconds to wait for SIGKILLed processes to leave a namespace
LOCK_DIRS = (Path("/run/mooring-chaos"), Path("/tmp/mooring-chaos"))


class TopologyError(errors.ChaosError, RuntimeError):
    """An `ip`/`iptables` command failed, or the topology cannot be made as asked."""


def run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
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
    version = run(["iptables", "-V"]).stdout.strip()  # "iptables v1.8.9 (nf_tables)"
    match = re.search(r"\((\w+)\)", version)
    return match.group(1) if match else "legacy"


def list_namespaces() -> list[str]:
    """Every named network namespace (`ip netns list`), without the "(id: N)" suffixes."""
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(namespace: str) -> list[int]:
    done = run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def kill_all(namespaces: Iterable[str]) -> None:
    """SIGKILL every process in the namespaces and wait (bounded) until none is left."""
    namespaces = list(namespaces)
    deadline = time.monotonic() + KILL_TIMEOUT
    killed: set[int] = set()
    while True:
        left = {ns: namespace_pids(ns) for ns in namespaces}
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


def delete(namespaces: Iterable[str]) -> list[str]:
    """Kill what runs in them, then delete them (their veths go with them)."""
    present = set(list_namespaces())
    doomed = [ns for ns in namespaces if ns in present]
    kill_all(doomed)
    for ns in doomed:
        run(["ip", "netns", "delete", ns])
        logger.info("deleted namespace %s", ns)
    return doomed


def lock_dir() -> Path:
    for path in LOCK_DIRS:
        with contextlib.suppress(OSError):
            path.mkdir(parents=True, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
    raise TopologyError(f"no writable lock directory among {[str(p) for p in LOCK_DIRS]}")


def lock(prefix: str) -> IO[str]:
    """The prefix's lock, held exclusively (the kernel drops it when the process dies)."""
    file = (lock_dir() / f"{prefix}.lock").open("a+")
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


def stale(prefix: str) -> list[str]:
    return [ns for ns in list_namespaces() if ns.startswith(f"{prefix}-")]


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks in use: root's addresses and routes, every named namespace's addresses."""
    outputs = [
        run(["ip", "-o", "-4", "addr", "show"]).stdout,
        run(["ip", "-4", "route", "show", "table", "all"]).stdout,
    ]
    for ns in list_namespaces():
        outputs.append(run(["ip", "-n", ns, "-o", "-4", "addr", "show"], check=False).stdout)
    used: list[ipaddress.IPv4Network] = []
    for word in " ".join(outputs).split():
        with contextlib.suppress(ValueError):
            if "/" in word or word.count(".") == 3:
                used.append(ipaddress.IPv4Network(word, strict=False))
    return used


def free_subnet() -> ipaddress.IPv4Network:
    used = used_networks()
    for subnet in SUBNET_POOL.subnets(new_prefix=24):
        if not any(subnet.overlaps(net) for net in used):
            return subnet
    raise TopologyError(f"no free /24 left in {SUBNET_POOL}")


def chosen_subnet(text: str) -> ipaddress.IPv4Network:
    net = ipaddress.IPv4Network(text)
    if clash := [str(used) for used in used_networks() if net.overlaps(used)]:
        raise TopologyError(f"subnet {net} overlaps networks in use: {', '.join(clash)}")
    return net
