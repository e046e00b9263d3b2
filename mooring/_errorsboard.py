"""The `mooring-errors` dashboard: what failed (stores, tasks, sessions, connects,
applies), certificates and their reloads, agents not seen or refused, and each
process's open files, memory, CPU and restarts."""

from __future__ import annotations

from mooring import _grafana as grafana
from proto import catalog

__all__ = ["dashboard"]


def dashboard() -> grafana.Json:
    c = catalog
    expiry = c.CERTIFICATE_EXPIRY.name
    return grafana.build(
        "mooring-errors",
        "Mooring / Errors",
        "What failed, certificates about to expire, agents not seen for a while, and"
        " processes running out of open files or memory.",
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
                width=6,
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
                width=6,
            ),
            grafana.timeseries(
                f"Task failures in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(c.TASK_FAILURES, grafana.PRINCIPAL, by="instance, task"),
                        legend="{{instance}} {{task}}",
                    )
                ],
                description="Unexpected errors that ended a replica's long-lived task: it"
                " restarted, or the replica fenced itself and exited (status 3: then the count"
                " is seldom scraped, and the replica's log says which task).",
                width=6,
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
                " owns them, or because a task it must not run without failed.",
                width=6,
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
            grafana.timeseries(
                f"Certificate reload failures in {grafana.RARE}",
                [
                    grafana.target(
                        grafana.counted(
                            c.CERTIFICATE_RELOAD_FAILURES, grafana.PRINCIPAL, by="instance"
                        ),
                        legend="{{instance}}",
                    ),
                    grafana.target(
                        grafana.counted(c.CERTIFICATE_RELOAD_FAILURES, grafana.AGENTS),
                        legend="agents",
                    ),
                ],
                description="Changed TLS files a process could not use (half-written, a key"
                " not matching its certificate): it goes on with the previous ones, and its log"
                " names the file.",
                width=8,
                height=6,
            ),
            grafana.table(
                "Agents refused until an operator fixes it",
                f"max by (instance, reason) ({grafana.sel(c.AGENT_REFUSED, grafana.AGENTS)}) == 1",
                description="Agents the hub refuses for a reason no retry cures: identity_mismatch"
                " (certificate for another agent), mode_conflict (--mode differs from the"
                " registration), protocol_version; the agent's log has the fix.",
                sort="instance",
                width=16,
                height=6,
            ),
            grafana.timeseries(
                "Open files, of the limit",
                [
                    grafana.target(
                        f"{grafana.per_replica(c.PROCESS_OPEN_FDS)}"
                        f" / {grafana.per_replica(c.PROCESS_MAX_FDS)}",
                        legend="{{instance}}",
                    ),
                    grafana.target(
                        f"max({grafana.sel(c.PROCESS_OPEN_FDS, grafana.AGENTS)}"
                        f" / {grafana.sel(c.PROCESS_MAX_FDS, grafana.AGENTS)})",
                        legend="agents (highest)",
                    ),
                ],
                description="Open file descriptors over the soft limit: every agent session,"
                " store connection and connection being handshaken holds one. At 100% new"
                " connections fail and agents dialling the replica time out (alert at 80%:"
                " MooringFileDescriptorsNearLimit).",
                unit="percentunit",
                width=6,
            ),
            grafana.timeseries(
                "Resident memory",
                [
                    grafana.target(
                        grafana.per_replica(c.PROCESS_RESIDENT_MEMORY), legend="{{instance}}"
                    ),
                    grafana.target(
                        f"max({grafana.sel(c.PROCESS_RESIDENT_MEMORY, grafana.AGENTS)})",
                        legend="agents (highest)",
                    ),
                ],
                description="Memory in RAM per process. A connection flood costs a replica"
                " about 30-60 KB per connection (bench_hardening), given back within about"
                " 10 s of its end (the replica trims its heap).",
                unit="bytes",
                width=6,
            ),
            grafana.timeseries(
                "CPU",
                [
                    grafana.target(
                        grafana.rated(c.PROCESS_CPU_SECONDS, grafana.PRINCIPAL, by="instance"),
                        legend="{{instance}}",
                    ),
                    grafana.target(
                        f"max(rate({grafana.sel(c.PROCESS_CPU_SECONDS, grafana.AGENTS)}"
                        f"[{grafana.RATE}]))",
                        legend="agents (busiest)",
                    ),
                ],
                description="CPU seconds per second, user and system (1: one core busy).",
                width=6,
            ),
            grafana.timeseries(
                f"Process restarts in {grafana.RARE}",
                [
                    grafana.target(
                        f"sum by (instance) (changes({grafana.sel(c.PROCESS_START_TIME, grafana.PRINCIPAL)}[{grafana.RARE}]))",
                        legend="{{instance}}",
                    ),
                    grafana.target(
                        f"sum(changes({grafana.sel(c.PROCESS_START_TIME, grafana.AGENTS)}[{grafana.RARE}]))",
                        legend="agents",
                    ),
                ],
                description="Processes that started again at the same address: a crash, an"
                " exit after fencing (status 3), an out-of-memory kill, a restarted container.",
                width=6,
            ),
        ],
    )
