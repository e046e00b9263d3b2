"""Write each chart README's table of values from the `# --` comments in its values.yaml.

The table sits between `<!-- values:start -->` and `<!-- values:end -->`; a test fails
when it is stale (`python3 scripts/genchartdocs.py` rewrites it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHARTS = ("mooring", "mooring-agent")
START, END = "<!-- values:start -->", "<!-- values:end -->"
FREE_FORM = {
    "resources", "podSecurityContext", "securityContext", "labels", "annotations",
    "monitoringNamespaceSelector", "issuerRef", "requests", "limits",
}  # fmt: skip
"""Maps documented as one value (users put their own keys in them)."""


def documented(values_yaml: str) -> dict[str, str]:
    """Dotted path -> the `# --` comment above its key."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    comment: list[str] = []
    for line in values_yaml.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped[1:].strip())
            continue
        match = re.match(r"^(\s*)([A-Za-z][\w-]*):", line)
        if not match:
            comment = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if comment:
            out[".".join(k for _, k in stack)] = " ".join(comment)
        comment = []
    return out


def leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in FREE_FORM:
            out += leaves(value, path + ".")
        else:
            out.append((path, value))
    return out


def table(chart: Path) -> str:
    text = (chart / "values.yaml").read_text()
    notes = documented(text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for path, value in leaves(yaml.safe_load(text)):
        default = json.dumps(value, separators=(", ", ": ")).replace("|", "\\|")
        note = notes.get(path, "").replace("|", "\\|")
        rows.append(f"| `{path}` | `{default}` | {note} |")
    return "\n".join(rows)


def render(chart: Path) -> str:
    readme = (chart / "README.md").read_text()
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{chart / 'README.md'}: no {START} marker")
    return f"{head}{START}\n{table(chart)}\n{END}{tail}"


if __name__ == "__main__":
    for name in CHARTS:
        chart = ROOT / "charts" / name
        (chart / "README.md").write_text(render(chart))
        print(f"wrote {chart / 'README.md'}", file=sys.stderr)
