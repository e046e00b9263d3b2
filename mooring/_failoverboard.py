"""The `mooring-failover` dashboard: how long agents take to be served again, what moved
them (handoffs, redirects, closes, stand-ins), the election and its lease."""

from __future__ import annotations

from mooring import _grafana as grafana
from proto import catalog

__all__ = ["dashboard"]


def dashboard() -> grafana.Json:
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
