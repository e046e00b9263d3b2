"""Write the generated docs pages: docs/metrics.md from proto/_catalog.py."""

from __future__ import annotations

from pathlib import Path

from mooring import _monitoring as monitoring

ROOT = Path(__file__).resolve().parent.parent

if __name__ == "__main__":
    target = ROOT / "docs" / "metrics.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(monitoring.metrics_doc())
    print(f"wrote {target}")
