"""The DROP rules a topology's faults are made of, and removing them again.

Each rule is an iptables DROP rule in the filter table's INPUT chain of the *receiving*
member's own namespace (why INPUT and never OUTPUT: `chaos.netns`), and carries the
suite's comment, so `iptables-save` shows whose it is and `remove_ours` can find every
one whichever process added it. `Rules` keeps one topology's own, in the order added.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable

from chaos import _nshost as nshost

__all__ = ["COMMENT", "Rule", "Rules", "remove_ours"]

logger = logging.getLogger("chaos.netns")  # one logger for the topology and its rules

COMMENT = "mooring-chaos"  # every rule carries it, so iptables-save shows whose it is

Rule = tuple[str, tuple[str, ...]]  # (namespace, iptables rule spec after the chain)


def _spec(match: tuple[str, ...]) -> tuple[str, ...]:
    return (*match, "-m", "comment", "--comment", COMMENT, "-j", "DROP")


def _iptables(ns: str, op: str, match: tuple[str, ...]) -> list[str]:
    return ["ip", "netns", "exec", ns, "iptables", "-w", op, "INPUT", *_spec(match)]


def _present(ns: str, match: tuple[str, ...]) -> bool:
    done = nshost.run(_iptables(ns, "-C", match), check=False)
    if done.returncode == 0:
        return True
    if done.returncode == 1:  # "Bad rule (does a matching rule exist in that chain?)"
        return False
    nshost.run(_iptables(ns, "-C", match))  # raises with the command and its stderr
    return False


class Rules:
    """The DROP rules one topology added, in the order it added them."""

    def __init__(self) -> None:
        self._added: dict[Rule, None] = {}  # insertion-ordered set

    def listed(self) -> list[Rule]:
        return list(self._added)

    def add(self, ns: str, match: tuple[str, ...]) -> None:
        """Drop what `match` matches on arrival in `ns` (once, however often asked)."""
        if _present(ns, match):
            logger.debug("rule already in %s: INPUT %s", ns, shlex.join(_spec(match)))
        else:
            nshost.run(_iptables(ns, "-I", match))
            logger.info("rule added in %s: INPUT %s", ns, shlex.join(_spec(match)))
        self._added[(ns, match)] = None

    def heal(self) -> None:
        """Remove every rule added here, newest first, and nothing else."""
        for ns, match in reversed(self._added):
            if _present(ns, match):
                nshost.run(_iptables(ns, "-D", match))
                logger.info("rule removed in %s: INPUT %s", ns, shlex.join(_spec(match)))
            else:
                logger.warning("rule already gone in %s: INPUT %s", ns, shlex.join(_spec(match)))
        self._added.clear()

    def forget(self) -> None:
        """Drop the record (the rules went with their namespaces, or `remove_ours`)."""
        self._added.clear()


def remove_ours(namespaces: Iterable[str]) -> list[Rule]:
    """Remove every INPUT rule carrying the suite's comment in the namespaces (rules of
    other tools stay); return what it removed."""
    removed: list[Rule] = []
    for ns in namespaces:
        listed = nshost.run(["ip", "netns", "exec", ns, "iptables", "-w", "-S", "INPUT"])
        for line in listed.stdout.splitlines():
            words = shlex.split(line)
            if words[:2] != ["-A", "INPUT"] or COMMENT not in words:
                continue
            nshost.run(["ip", "netns", "exec", ns, "iptables", "-w", "-D", "INPUT", *words[2:]])
            removed.append((ns, tuple(words[2:])))
            logger.info("rule removed in %s: INPUT %s", ns, shlex.join(words[2:]))
    return removed
