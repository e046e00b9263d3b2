"""The `mooring-sync` dashboard: envelopes both ways by type, resyncs, acknowledgements,
what agents applied, drift repairs and delivery errors."""

from __future__ import annotations

from mooring import _grafana as grafana
from proto import catalog

__all__ = ["dashboard"]


def dashboard() -> grafana.Json:
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
