"""Refusals no retry can cure: one table of the replicas' refusal reasons that only an
operator can lift, with the fix for each, and the agent's refused state.

A reason is the `codec.REJECTED_TRAILER` of a replica's answer (the `reason=` of a
`Rejection` in `principal/_session.py`), never its wording. Under such a refusal the agent
says so once at ERROR (the reason and the fix), repeats of the same refusal only at DEBUG,
shows it in `mooring_agent_refused{reason}` and `Agent.refused`, and sweeps again only
every `refused_retry_interval` seconds (an operator may fix the registration meanwhile).
The next welcome ends it, with one INFO line.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping

import prometheus_client as prom

from proto import logfields

__all__ = ["FIXES", "Refusal", "fix", "permanent"]

logger = logging.getLogger(__name__)

FIXES: Mapping[str, str] = types.MappingProxyType(
    {
        # The certificate names another agent than --name says.
        "identity_mismatch": "the certificate in --tls-dir is issued for another agent: issue"
        " one for {name} with `mooring pki issue agent --name {name}` or"
        " `mooring agent create {name} --issue-cert`",
        # --mode differs from the mode the agent is registered with on the hub.
        "mode_conflict": "run with --mode {registered}, or change the registration with"
        " `mooring agent set-mode {name} {mode}`",
        # The agent's and the principal's wire protocol ranges do not overlap.
        "protocol_version": "no common wire protocol version: upgrade the agent or the principal",
        # The certificate in --tls-dir is on the hub's revocation list (`mooring pki revoke`).
        "revoked": "the certificate was revoked: issue a new one with"
        " `mooring pki issue agent --name {name}`",
        # The hub registers no agent on its first connect (no `principal serve --auto-register`).
        "not_registered": "register it with `mooring agent create {name} --mode {mode}`",
    }
)
"""Refusal reason -> the fix, a template of the agent's {name}, {mode} and {registered}."""


def permanent(reason: str | None) -> bool:
    """Whether a replica's refusal reason is one no retry can cure (None: no refusal)."""
    return reason is not None and reason in FIXES


def fix(reason: str, *, name: str, mode: str) -> str:
    """What the operator must do about `reason`, for the agent `name` run with `mode`."""
    registered = "autonomous" if mode == "managed" else "managed"  # two modes: the other one
    return FIXES[reason].format(name=name, mode=mode, registered=registered)


class Refusal:
    """One agent's refused state: the permanent refusal it is under until its next welcome."""

    def __init__(self, gauge: prom.Gauge, *, agent: str, mode: str, interval: float) -> None:
        self.gauge = gauge
        self.agent = agent
        self.mode = mode
        self.interval = interval
        self.reason: str | None = None
        self.times = 0  # refusals for this reason since it was logged at ERROR
        for each in FIXES:
            gauge.labels(each).set(0)

    def refused(self, reason: str, *, endpoint: str, error: str) -> None:
        """A replica refused us with a permanent `reason`: ERROR the first time, DEBUG after."""
        fields = logfields.of(agent=self.agent, endpoint=endpoint, reason=reason, error=error)
        if reason == self.reason:
            self.times += 1
            logger.debug(
                "agent %s: still refused by %s (%s), %d times in a row",
                self.agent,
                endpoint,
                reason,
                self.times,
                extra=fields,
            )
            return
        if self.reason is not None:
            self.gauge.labels(self.reason).set(0)
        self.reason, self.times = reason, 1
        self.gauge.labels(reason).set(1)
        logger.error(
            "agent %s: refused by %s (%s: %s); to fix: %s; retrying every %gs",
            self.agent,
            endpoint,
            reason,
            error,
            fix(reason, name=self.agent, mode=self.mode),
            self.interval,
            extra=fields,
        )

    def welcomed(self, *, endpoint: str) -> None:
        """A replica welcomed us: the refusal, if any, is over."""
        if self.reason is None:
            return
        logger.info(
            "agent %s: recovered from the refusal (%s): welcomed on %s",
            self.agent,
            self.reason,
            endpoint,
            extra=logfields.of(agent=self.agent, endpoint=endpoint, reason=self.reason),
        )
        self.gauge.labels(self.reason).set(0)
        self.reason, self.times = None, 0
