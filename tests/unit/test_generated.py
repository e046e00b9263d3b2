"""The committed gRPC stubs are exactly what scripts/genproto.sh generates."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_generation_unchanged(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "genproto.sh"), str(tmp_path)], check=True, cwd=ROOT
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated == [
        Path("proto/v1/mooring_pb2.py"),
        Path("proto/v1/mooring_pb2.pyi"),
        Path("proto/v1/mooring_pb2_grpc.py"),
    ]
    for rel in generated:
        committed = (ROOT / rel).read_text()
        assert (tmp_path / rel).read_text() == committed, (
            f"{rel} is stale: run `make proto` and commit"
        )
