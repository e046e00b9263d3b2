"""Manifests for `mooring app apply|delete -f FILE`: read, and checked before any write."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mooring import _usage as usage
from proto import objects

__all__ = ["delete_targets", "load", "valid"]


def load(path: str) -> list[dict[str, Any]]:
    """Every manifest in a YAML or JSON file (`-` for stdin), `List`s unpacked."""
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as err:
        raise RuntimeError(f"cannot read {path}: {err.strerror}") from err
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as err:
        raise RuntimeError(f"{path} is not valid YAML/JSON: {str(err).splitlines()[0]}") from err
    out: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List":
            out.extend(doc.get("items") or [])
        elif isinstance(doc, dict):
            out.append(doc)
        else:
            raise RuntimeError(f"{path}: every document must be a mapping")
    if not out:
        raise RuntimeError(f"{path} holds no manifests")
    return out


def valid(path: str, *, need_spec: bool) -> list[dict[str, Any]]:
    """Every manifest in `path`, each checked before any is written (all or nothing)."""
    docs = load(path)
    for doc in docs:
        objects.validate_manifest(doc, need_spec=need_spec)
    return docs


def delete_targets(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(kind, name) of NAMEs (of --kind), or of what -f FILE names; checked before any delete."""
    if args.file and args.names:
        raise usage.UsageError("app delete: give NAMEs or -f FILE, not both")
    if args.file:
        return [objects.validate_manifest(d, need_spec=False) for d in load(args.file)]
    if not args.names:
        raise usage.UsageError("app delete: give the NAMEs to delete, or -f FILE")
    return [(args.kind, objects.validate_name(name, kind=args.kind)) for name in args.names]
