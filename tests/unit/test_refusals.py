"""The table of refusals no retry cures: which trailer reasons are in it, the fix each
names, and the refused state's log lines and gauge (one ERROR, DEBUG repeats, one INFO)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import prometheus_client as prom
import pytest

from agent import _refusals as refusals
from principal._session import RejectReason
from proto import catalog, codec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RESERVED: set[str] = set()  # in the table before any replica sends it


def sent_by_the_principal() -> set[str]:
    """Every `reason=` a principal's Rejection carries (the trailer's values), in any of
    the principal's modules."""
    source = "\n".join(p.read_text() for p in sorted((ROOT / "principal").glob("*.py")))
    literal = set(re.findall(r'reason ?= ?"([a-z_]+)"', source))
    named = {
        RejectReason[member].value
        for member in re.findall(r"reason ?= ?RejectReason\.([A-Z_]+)", source)
    }
    return literal | named


def test_permanent_reasons_are_the_table_and_nothing_a_retry_cures() -> None:
    assert set(refusals.FIXES) == {
        "identity_mismatch",
        "mode_conflict",
        "protocol_version",
        "revoked",
        "not_registered",
    } | (RESERVED)
    for reason in refusals.FIXES:
        assert refusals.permanent(reason)
    for reason in [None, "", *codec.RETRY_REASONS, "no_hello", "protocol", "malformed"]:
        assert not refusals.permanent(reason), reason


def test_every_reason_but_the_reserved_is_one_a_principal_sends() -> None:
    sent = sent_by_the_principal()
    assert {"identity_mismatch", "mode_conflict", "held"} <= sent  # the pattern finds them
    assert set(refusals.FIXES) - RESERVED <= sent
    assert not RESERVED & sent, "a reserved reason is sent now: drop it from RESERVED"


def test_each_fix_names_the_commands_for_this_agent() -> None:
    assert refusals.fix("identity_mismatch", name="edge-1", mode="managed") == (
        "the certificate in --tls-dir is issued for another agent: issue one for edge-1 with"
        " `mooring pki issue agent --name edge-1` or `mooring agent create edge-1 --issue-cert`"
    )
    assert refusals.fix("mode_conflict", name="edge-1", mode="managed") == (
        "run with --mode autonomous, or change the registration with"
        " `mooring agent set-mode edge-1 managed`"
    )
    assert "--mode managed," in refusals.fix("mode_conflict", name="e", mode="autonomous")
    assert "upgrade the agent or the principal" in refusals.fix(
        "protocol_version", name="e", mode="managed"
    )
    assert refusals.fix("revoked", name="e", mode="managed").startswith(
        "the certificate was revoked: issue a new one"
    )
    assert refusals.fix("not_registered", name="edge-1", mode="autonomous") == (
        "register it with `mooring agent create edge-1 --mode autonomous`"
    )


def refused_series(registry: prom.CollectorRegistry) -> dict[str, float]:
    """reason -> value of every mooring_agent_refused series."""
    return {
        sample.labels["reason"]: sample.value
        for metric in registry.collect()
        if metric.name == catalog.AGENT_REFUSED.name
        for sample in metric.samples
    }


def test_one_error_while_a_refusal_lasts_then_one_info_when_welcomed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = prom.CollectorRegistry()
    gauge = catalog.gauge(registry, catalog.AGENT_REFUSED)
    state = refusals.Refusal(gauge, agent="edge-1", mode="managed", interval=60.0)
    none = dict.fromkeys(refusals.FIXES, 0.0)  # every reason's series, from the start
    assert refused_series(registry) == none
    assert state.reason is None

    with caplog.at_level(logging.DEBUG, logger="agent._refusals"):
        for _ in range(3):
            state.refused("mode_conflict", endpoint="h:1", error="FAILED_PRECONDITION: x")
        assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
        assert caplog.records[0].getMessage() == (
            "agent edge-1: refused by h:1 (mode_conflict: FAILED_PRECONDITION: x); to fix: run"
            " with --mode autonomous, or change the registration with"
            " `mooring agent set-mode edge-1 managed`; retrying every 60s"
        )
        assert caplog.records[2].getMessage() == (
            "agent edge-1: still refused by h:1 (mode_conflict), 3 times in a row"
        )
        assert state.reason == "mode_conflict"
        assert refused_series(registry) == {**none, "mode_conflict": 1.0}

        caplog.clear()
        state.refused("identity_mismatch", endpoint="h:2", error="PERMISSION_DENIED: y")
        assert [r.levelno for r in caplog.records] == [logging.ERROR]  # another reason: said
        assert refused_series(registry) == {**none, "identity_mismatch": 1.0}

        caplog.clear()
        state.welcomed(endpoint="h:2")
        state.welcomed(endpoint="h:2")  # a welcome when not refused says nothing
        assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
            (
                logging.INFO,
                "agent edge-1: recovered from the refusal (identity_mismatch): welcomed on h:2",
            )
        ]
    assert state.reason is None
    assert refused_series(registry) == none
