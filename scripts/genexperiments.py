"""Write chaos/experiments/*.json from chaos/experiments.py (one file per fault)."""

from __future__ import annotations

from chaos import experiments

if __name__ == "__main__":
    for path in experiments.write_all():
        print(path)
