"""The CLI on the hub store, as `mooring._cli` wires it: the agent registry (`mooring agent
create|list|get|delete|set-mode`) and `mooring app apply|list|get|delete` on the hub.

Both find the hub store as `principal serve` names it: `--store`, else `--coordination`,
else the cluster.json of a local cluster's state dir (`--dir`, $MOORING_DIR, `.mooring`).

The parts: `mooring/_hubstore.py` (the store flags, the URL, the store opened for one
command), `mooring/_agentcli.py` (the registry commands), `mooring/_appcli.py` (the app
commands) and `mooring/_output.py` (tables, JSON and YAML, ages). This module names
what the command line takes from them.
"""

from __future__ import annotations

from mooring import _agentcli as agentcli
from mooring import _appcli as appcli
from mooring import _hubstore as hubstore
from mooring import _output as output

__all__ = [
    "add_agent_parsers",
    "add_store_flags",
    "age",
    "agent_name",
    "app_on_hub",
    "cmd_registry",
    "delivered",
    "emit",
    "hub_url",
    "print_table",
    "sync_and_health",
    "with_store",
]

add_agent_parsers = agentcli.add_agent_parsers
agent_name = agentcli.agent_name
cmd_registry = agentcli.cmd_registry
MODES = agentcli.MODES

app_on_hub = appcli.app_on_hub
delivered = appcli.delivered
LIST_COLUMNS = appcli.LIST_COLUMNS
WIDE_COLUMNS = appcli.WIDE_COLUMNS

add_store_flags = hubstore.add_store_flags
hub_url = hubstore.hub_url
with_store = hubstore.with_store

age = output.age
emit = output.emit
print_table = output.print_table
sync_and_health = output.sync_and_health
