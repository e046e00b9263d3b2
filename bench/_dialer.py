"""Real agents dialling at once, for `bench/bench_hardening.py`; not run by hand.

    python bench/_dialer.py --spec FILE

The spec (JSON) lists agents: {"agents": [{"name", "endpoints": [HOST:PORT, ...],
"tls_dir", "state"}], "timeout": S}. Each becomes a real `agent.Agent` (managed mode,
its own SQLite file and Prometheus registry), all started at once, without the fleet's
dial gate. One JSON line per agent as it is welcomed and resynced:

    {"agent": NAME, "started": T, "welcomed": T, "replica": ID, "errors": {REASON: N}}

T being `time.monotonic()` (CLOCK_MONOTONIC: one clock for every process on the host);
`errors` is the agent's own `mooring_connect_errors_total` by reason at that moment.
After every agent was welcomed, or after `timeout` seconds, one line
{"done": true, "missing": [NAME, ...], "errors": {NAME: {REASON: N}}}; then the agents
keep their sessions until stdin closes or says "stop".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import prometheus_client as prom

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import _client as agent_client
from agent import _settings as agent_settings

CONNECT_ERRORS = "mooring_connect_errors_total"


def emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def connect_errors(registry: prom.CollectorRegistry) -> dict[str, int]:
    """The agent's failed session attempts so far, by reason."""
    out: dict[str, int] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == CONNECT_ERRORS and sample.value:
                out[sample.labels.get("reason", "")] = int(sample.value)
    return out


async def run(spec: dict[str, Any]) -> None:
    agents = [
        agent_client.Agent(
            agent_settings.AgentSettings(
                name=entry["name"],
                mode="managed",
                endpoints=tuple(entry["endpoints"]),
                tls_dir=Path(entry["tls_dir"]),
                state=Path(entry["state"]),
            ),
            registry=prom.CollectorRegistry(),
        )
        for entry in spec["agents"]
    ]
    started: dict[str, float] = {}

    async def watch(agent: agent_client.Agent) -> None:
        await agent.welcomed.wait()
        emit(
            {
                "agent": agent.settings.name,
                "started": started[agent.settings.name],
                "welcomed": time.monotonic(),
                "replica": agent.replica_id,
                "errors": connect_errors(agent.registry),
            }
        )

    tasks = []
    for agent in agents:
        started[agent.settings.name] = time.monotonic()
        tasks.append(asyncio.create_task(agent.run(), name=f"agent:{agent.settings.name}"))
    watchers = [asyncio.create_task(watch(a)) for a in agents]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*watchers), float(spec["timeout"]))
        emit(
            {
                "done": True,
                "missing": [a.settings.name for a in agents if not a.welcomed.is_set()],
                "errors": {a.settings.name: connect_errors(a.registry) for a in agents},
            }
        )
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line or line.strip() == "stop":
                return
    finally:
        for watcher in watchers:
            watcher.cancel()
        for agent in agents:
            agent.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/_dialer.py")
    parser.add_argument("--spec", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(json.loads(args.spec.read_text())))


if __name__ == "__main__":
    main()
