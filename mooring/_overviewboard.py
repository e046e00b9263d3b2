"""The `mooring-overview` dashboard: who leads, who is a member, and how agents and
sessions spread over the replicas (stats, their history per replica, and the build of
every scraped process)."""

from __future__ import annotations

from mooring import _grafana as grafana
from proto import catalog

__all__ = ["dashboard"]


def dashboard() -> grafana.Json:
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
            grafana.timeseries(
                "Agents by link state",
                [
                    grafana.target(
                        f"sum by (state) ({grafana.sel(c.AGENT_LINK_STATE, grafana.AGENTS)})",
                        legend="{{state}}",
                    ),
                ],
                description="Where each scraped agent's connection is (agent/_link.py): live,"
                " resyncing, dialing, backing_off after a failed sweep, refused for good.",
            ),
            grafana.table(
                "Builds",
                f"max by (job, instance, component, version, protocol) ({catalog.BUILD_INFO.name})",
                description="Release and wire protocol range of every scraped process.",
                sort="instance",
            ),
        ],
    )
