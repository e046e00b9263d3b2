"""Mooring's Grafana dashboards, built as plain JSON from the metric catalog.

Four dashboards, each with a stable uid: `mooring-overview` (who leads, who is a member,
agents and sessions per replica), `mooring-failover` (how long agents take to come back,
what moved them, the election and its lease), `mooring-sync` (events both ways, resyncs,
acknowledgements, applies) and `mooring-errors` (what failed, certificates, agents not
seen). Every panel and target reads the `datasource` variable; principal panels filter by
the `instance` variable, which lists every replica whatever its scrape job is called.

The committed files in `mooring/monitoring/dashboards/` are this module's output
(`python -m mooring._dashboards mooring/monitoring/dashboards`); a test fails when they
differ. Expressions name families by the catalog's constants, so a renamed family breaks
the build here rather than a panel in production.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mooring import _grafana as grafana
from proto import catalog

__all__ = [
    "DASHBOARDS",
    "dashboards",
    "expand",
    "main",
    "panels",
    "write_all",
]


def overview() -> grafana.Json:
    c = catalog
    return grafana.build(
        "mooring-overview",
        "Mooring / Overview",
        "Who leads, who is a member, and how agents and sessions spread over the replicas.",
        [
            grafana.stat(
                "Replicas up",
                f"sum({grafana.sel_up(grafana.PRINCIPALS)})",
                description="Principal targets Prometheus scrapes successfully.",
                thresholds=((None, "red"), (1, "green")),
            ),
            grafana.stat(
                "Members",
                f"sum({grafana.sel(c.MEMBER, grafana.PRINCIPALS)})",
                description="Replicas whose member record is current: only members serve agents.",
                thresholds=((None, "red"), (1, "green")),
            ),
            grafana.stat(
                "Leaders",
                f"sum({grafana.sel(c.LEADER, grafana.PRINCIPALS)})",
                description="Replicas holding the leader lease: exactly 1 when healthy.",
                thresholds=((None, "red"), (1, "green"), (2, "red")),
            ),
            grafana.stat(
                "Agents registered",
                f"max({grafana.sel(c.AGENTS_REGISTERED, grafana.PRINCIPALS)})",
                description="Agents in the hub's registry.",
            ),
            grafana.stat(
                "Sessions open",
                f"sum({grafana.sel(c.SESSIONS_OPEN, grafana.PRINCIPALS)})",
                description="Agent sessions open on all replicas.",
            ),
            grafana.stat(
                "Stand-ins open",
                f"sum({grafana.sel(c.STANDIN_SESSIONS_OPEN, grafana.PRINCIPALS)})",
                description="Sessions served for agents whose owner they could not reach.",
                thresholds=((None, "green"), (1, "orange")),
            ),
            grafana.timeseries(
                "Leader per replica",
                [grafana.target(grafana.per_replica(c.LEADER), legend="{{instance}}")],
                description="1 while the replica holds the leader lease.",
                width=8,
            ),
            grafana.timeseries(
                "Shard epoch per replica",
                [grafana.target(grafana.per_replica(c.SHARD_EPOCH), legend="{{instance}}")],
                description="Epoch of the shard map each replica applied: they agree when settled.",
                width=8,
                minimum=None,
            ),
            grafana.timeseries(
                "Replicas up and members",
                [
                    grafana.target(
                        f"max by (instance) ({grafana.sel_up(grafana.PRINCIPAL)})",
                        legend="up {{instance}}",
                    ),
                    grafana.target(grafana.per_replica(c.MEMBER), legend="member {{instance}}"),
                    grafana.target(
                        grafana.per_replica(c.MEMBERS_LIVE),
                        legend="live members seen by {{instance}}",
                    ),
                ],
                description="Scrape health, member record, and how many live members each replica sees.",
                width=8,
            ),
            grafana.timeseries(
                "Agents registered and owned per replica",
                [
                    grafana.target(
                        grafana.per_replica(c.AGENTS_OWNED), legend="owned by {{instance}}"
                    ),
                    grafana.target(
                        f"max({grafana.sel(c.AGENTS_REGISTERED, grafana.PRINCIPAL)})",
                        legend="registered",
                    ),
                ],
                description="Owned: under the shard map the replica applied. Owned adds up to registered.",
            ),
            grafana.timeseries(
                "Sessions open per replica",
                [
                    grafana.target(grafana.per_replica(c.SESSIONS_OPEN), legend="{{instance}}"),
                    grafana.target(
                        grafana.per_replica(c.STANDIN_SESSIONS_OPEN),
                        legend="stand-ins on {{instance}}",
                    ),
                ],
                description="Agent sessions open, and of them stand-ins for another replica's agents.",
            ),
            grafana.timeseries(
                "Agents connected",
                [
                    grafana.target(
                        f"sum({grafana.sel(c.AGENT_CONNECTED, grafana.AGENTS)})", legend="connected"
                    ),
                    grafana.target(
                        f"count({grafana.sel(c.AGENT_CONNECTED, grafana.AGENTS)})", legend="scraped"
                    ),
                ],
                description="Agents with their own scrape target that have a session with their owner.",
            ),
            grafana.table(
                "Builds",
                f"max by (job, instance, component, version, protocol) ({catalog.BUILD_INFO.name})",
                description="Release and wire protocol range of every scraped process.",
                sort="instance",
            ),
        ],
    )


def failover() -> grafana.Json:
    c = catalog
    return grafana.build(
        "mooring-failover",
        "Mooring / Failover",
        "How long agents take to be served again, what moved them, the election and its lease.",
        [
            grafana.timeseries(
                "Failover time",
                grafana.quantiles(c.FAILOVER_SECONDS, grafana.AGENTS, window=grafana.RARE),
                description="From losing a session to being welcomed by an owner with resync done"
                f" (agents; over {grafana.RARE}).",
                unit="s",
            ),
            grafana.heatmap(
                "Failover time distribution",
                f"sum by (le) (rate({grafana.sel(c.FAILOVER_SECONDS, grafana.AGENTS, series='_bucket')}[{grafana.RATE}]))",
                description="Failovers per bucket of mooring_failover_seconds.",
            ),
            grafana.timeseries(
                f"Failovers and sessions welcomed in {grafana.RARE}",
                [
                    grafana.target(
                        f"sum(increase({grafana.sel(c.FAILOVER_SECONDS, grafana.AGENTS, series='_count')}[{grafana.RARE}]))",
                        legend="failovers",
                    ),
                    grafana.target(
                        f"sum(increase({grafana.sel(c.SESSIONS, grafana.AGENTS)}[{grafana.RARE}]))",
                        legend="sessions welcomed",
                    ),
                ],
                description="Agents that came back after losing a session, and all sessions welcomed.",
                width=8,
            ),
            grafana.timeseries(
                f"Handoffs in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.HANDOFFS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Sessions a replica handed to another after a shard-map change.",
                width=8,
            ),
            grafana.timeseries(
                f"Redirects in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.REDIRECTS, grafana.PRINCIPAL, by="instance"),
                        legend="sent by {{instance}}",
                    ),
                    grafana.target(
                        grafana.counted(c.REDIRECTS, grafana.AGENTS), legend="followed by agents"
                    ),
                ],
                description="Agents sent to their owner replica.",
                width=8,
            ),
            grafana.timeseries(
                f"Sessions closed by reason in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.SESSIONS_CLOSED, grafana.PRINCIPAL, by="reason"),
                        legend="{{reason}}",
                    )
                ],
                description="agent_gone, handoff, self_fence, shutdown, ...",
            ),
            grafana.timeseries(
                f"Stand-in sessions started in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.STANDIN_SESSIONS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Sessions served for agents that could not reach their owner.",
            ),
            grafana.timeseries(
                f"Election transitions and lease takeovers in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(
                            c.ELECTION_STATE_TRANSITIONS,
                            grafana.PRINCIPAL,
                            by="instance, from_state, to_state",
                        ),
                        legend="{{instance}} {{from_state}} -> {{to_state}}",
                    ),
                    grafana.target(
                        grafana.counted(c.LEASE_TRANSITIONS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}} lease takeovers",
                    ),
                ],
                description="Elector state changes and leader-lease takeovers per replica.",
            ),
            grafana.table(
                "Election state now",
                f"max by (instance, state) ({grafana.sel(c.ELECTION_STATE, grafana.PRINCIPAL)}) == 1",
                description="Each replica's elector state.",
                sort="instance",
            ),
            grafana.timeseries(
                "Lease renew latency",
                [
                    grafana.target(
                        grafana.quantile(
                            q,
                            c.LEASE_RENEW_SECONDS,
                            grafana.PRINCIPAL,
                            window=grafana.RATE,
                            by="instance",
                        ),
                        legend=f"p{round(q * 100)} {{{{instance}}}}",
                    )
                    for q in (0.5, 0.99)
                ],
                description="Duration of successful lease renewals.",
                unit="s",
            ),
            grafana.timeseries(
                f"Lease renew failures in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.LEASE_RENEW_FAILURES, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Renewals that failed or timed out; enough of them cost the lease.",
            ),
        ],
    )


def sync() -> grafana.Json:
    c = catalog
    return grafana.build(
        "mooring-sync",
        "Mooring / Sync",
        "Envelopes both ways, resyncs, acknowledgements and what agents applied.",
        [
            grafana.timeseries(
                "Events sent per replica",
                [
                    grafana.target(
                        grafana.rated(c.EVENTS_SENT, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Envelopes sent to agents, per second.",
                unit="ops",
                width=8,
            ),
            grafana.timeseries(
                "Events sent by type (principal)",
                [
                    grafana.target(
                        grafana.rated(c.EVENTS_SENT, grafana.PRINCIPAL, by="type"),
                        legend="{{type}}",
                    )
                ],
                description="Envelopes sent to agents, per second.",
                unit="ops",
                width=8,
            ),
            grafana.timeseries(
                "Events received by type (principal)",
                [
                    grafana.target(
                        grafana.rated(c.EVENTS_RECEIVED, grafana.PRINCIPAL, by="type"),
                        legend="{{type}}",
                    )
                ],
                description="Envelopes received from agents, per second.",
                unit="ops",
                width=8,
            ),
            grafana.timeseries(
                "Events sent by type (agents)",
                [
                    grafana.target(
                        grafana.rated(c.EVENTS_SENT, grafana.AGENTS, by="type"), legend="{{type}}"
                    )
                ],
                description="Envelopes agents sent to the principal, per second.",
                unit="ops",
            ),
            grafana.timeseries(
                "Events received by type (agents)",
                [
                    grafana.target(
                        grafana.rated(c.EVENTS_RECEIVED, grafana.AGENTS, by="type"),
                        legend="{{type}}",
                    )
                ],
                description="Envelopes agents received from the principal, per second.",
                unit="ops",
            ),
            grafana.timeseries(
                "Resync events",
                [
                    grafana.target(
                        grafana.rated(c.RESYNC_EVENTS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    ),
                    grafana.target(grafana.rated(c.RESYNC_EVENTS, grafana.AGENTS), legend="agents"),
                ],
                description="Resource events sent or requested during resync phases, per second.",
                unit="ops",
                width=8,
            ),
            grafana.timeseries(
                "Resync time",
                [
                    *grafana.quantiles(
                        c.RESYNC_SECONDS,
                        grafana.PRINCIPAL,
                        window=grafana.RARE,
                        prefix="principal ",
                    ),
                    *grafana.quantiles(
                        c.RESYNC_SECONDS, grafana.AGENTS, window=grafana.RARE, prefix="agents "
                    ),
                ],
                description=f"From hello to the end of the resync phase (over {grafana.RARE}).",
                unit="s",
                width=8,
            ),
            grafana.timeseries(
                "Event acknowledgement time",
                grafana.quantiles(c.EVENT_ACK_SECONDS, grafana.PRINCIPAL, window=grafana.RATE),
                description="From sending a resource event to an agent to its acknowledgement.",
                unit="s",
                width=8,
            ),
            grafana.timeseries(
                "Events applied by agents",
                [
                    grafana.target(
                        grafana.rated(c.EVENTS_APPLIED, grafana.AGENTS, by="operation"),
                        legend="{{operation}}",
                    )
                ],
                description="Resource events that changed an agent's local store, per second.",
                unit="ops",
                width=8,
            ),
            grafana.timeseries(
                f"Drift repairs in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.DRIFT_REPAIRS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    ),
                    grafana.target(
                        grafana.counted(c.DRIFT_REPAIRS, grafana.AGENTS), legend="agents"
                    ),
                ],
                description="Resyncs started because a copy was changed behind Mooring's back.",
                width=8,
            ),
            grafana.timeseries(
                f"Delivery errors in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.DELIVERY_ERRORS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Events a managed agent acknowledged as refused by its cluster.",
                width=8,
            ),
        ],
    )


def errors() -> grafana.Json:
    c = catalog
    expiry = c.CERTIFICATE_EXPIRY.name
    return grafana.build(
        "mooring-errors",
        "Mooring / Errors",
        "What failed, certificates about to expire, and agents not seen for a while.",
        [
            grafana.timeseries(
                f"Hub store errors in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.STORE_ERRORS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Failed calls to the hub store (desired state, agent registry).",
                width=8,
            ),
            grafana.timeseries(
                f"Session registry errors in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.REGISTRY_ERRORS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    )
                ],
                description="Failed calls to the Redis session registry.",
                width=8,
            ),
            grafana.timeseries(
                f"Self-fence closes in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(
                            c.SESSIONS_CLOSED,
                            f'{grafana.PRINCIPAL}, reason="self_fence"',
                            by="instance",
                        ),
                        legend="{{instance}}",
                    )
                ],
                description="Sessions a replica closed because it could not confirm it still"
                " owns them.",
                width=8,
            ),
            grafana.timeseries(
                f"Sessions rejected by reason in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.SESSIONS_REJECTED, grafana.PRINCIPAL, by="reason"),
                        legend="{{reason}}",
                    )
                ],
                description="Agent streams refused: identity_mismatch, malformed, oversized, ...",
                width=8,
            ),
            grafana.timeseries(
                f"Connect errors by reason in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.CONNECT_ERRORS, grafana.AGENTS, by="reason"),
                        legend="{{reason}}",
                    )
                ],
                description="Failed session attempts by agents: tls, unavailable, rejected, ...",
                width=8,
            ),
            grafana.timeseries(
                f"Apply errors in {grafana.RARE}",
                [grafana.target(grafana.counted(c.APPLY_ERRORS, grafana.AGENTS), legend="agents")],
                description="Resource events agents' local stores refused.",
                width=8,
            ),
            grafana.stat(
                "Soonest certificate expiry",
                f"min({expiry}) - time()",
                description="Time until the first certificate any scraped process uses expires.",
                unit="dtdurations",
                thresholds=((None, "red"), (7 * 86400, "orange"), (30 * 86400, "green")),
                width=6,
                height=8,
            ),
            grafana.table(
                "Certificate expiry",
                f"min by (job, instance, certificate) ({expiry}) - time()",
                description="Time until each certificate expires (serving, client, ca).",
                unit="dtdurations",
                width=9,
            ),
            grafana.table(
                "Agents last seen (10 longest ago)",
                f"topk(10, time() - max by (agent) ({grafana.sel(c.AGENT_LAST_SEEN, grafana.PRINCIPALS)}))",
                description="Seconds since each agent was last connected to any replica (a day"
                " or more: not seen within a day).",
                unit="dtdurations",
                width=9,
                descending=True,
            ),
        ],
    )


DASHBOARDS = (overview, failover, sync, errors)
"""The builders, in the order the dashboards are listed."""


def dashboards() -> list[grafana.Json]:
    """Every dashboard, freshly built."""
    return [make() for make in DASHBOARDS]


def panels(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, in layout order."""
    return [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel["targets"]]


def expand(expr: str, variables: Mapping[str, str]) -> str:
    """`expr` with Grafana variables (`$name`, `${name}`) replaced from `variables`;
    unknown ones are left as they are."""

    def value(match: re.Match[str]) -> str:
        return variables.get(match.group(1) or match.group(2), match.group(0))

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


def dumps(dashboard: Mapping[str, Any]) -> str:
    """The dashboard as its committed file spells it."""
    return json.dumps(dashboard, indent=2) + "\n"


def write_all(directory: str | Path) -> list[Path]:
    """Write `<uid>.json` for every dashboard into `directory`; return the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for dashboard in dashboards():
        path = out / f"{dashboard['uid']}.json"
        path.write_text(dumps(dashboard))
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mooring._dashboards OUTDIR", file=sys.stderr)
        return 2
    for path in write_all(args[0]):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
