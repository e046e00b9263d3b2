"""`mooring pki revoke` and `mooring pki revocations`: the hub's certificate revocation list.

A revoked agent certificate is refused at its next hello (`revoked`) by every replica,
and its open session is closed within a few seconds: the replicas follow the list in
the hub store (`principal/_revocations.py`). The list is found as the other hub
commands find the hub store (`--store`, `--coordination`, or a local cluster's `--dir`).

A certificate is named by its serial (`openssl x509 -noout -serial`), its SHA-256
fingerprint (`openssl x509 -noout -fingerprint -sha256`), or its PEM file (`--cert`:
both, and the agent it names). Nothing here needs the CA key: revoking is a write to
the hub store, and whoever may write there may revoke.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mooring import _hubstore as hubstore
from mooring import _output as output
from mooring import _usage as usage

if TYPE_CHECKING:
    from cryptography import x509

    import principal
    from principal import hub

__all__ = ["add_parsers", "cmd_revocations", "cmd_revoke"]


def add_parsers(p_pki: Any) -> None:
    """`pki revoke` and `pki revocations` beside `pki init|issue`."""
    p = p_pki.add_parser(
        "revoke",
        help="revoke a certificate: its agent is refused by every replica, its session closed",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", metavar="HEX", help="the certificate's serial number (hex)")
    which.add_argument(
        "--fingerprint", metavar="SHA256", help="the certificate's SHA-256 fingerprint (hex)"
    )
    which.add_argument(
        "--cert", metavar="FILE", type=Path, help="the certificate's PEM file (e.g. tls.crt)"
    )
    p.add_argument("--reason", default="", metavar="TEXT", help="why, for the list")
    hubstore.add_store_flags(p)

    p = p_pki.add_parser("revocations", help="the certificates revoked on the hub")
    p.add_argument(
        "-o",
        "--output",
        choices=("wide", "json", "yaml"),
        help="wide: whole fingerprints and the time of each revocation",
    )
    hubstore.add_store_flags(p)


def _from_cert(path: Path) -> dict[str, str]:
    """serial, fingerprint and agent of the PEM certificate at `path` (RuntimeError when
    it cannot be read or is not one)."""
    from cryptography import x509

    from proto import credentials

    try:
        data = path.read_bytes()
    except OSError as err:
        raise RuntimeError(f"cannot read {path}: {err.strerror or err}") from err
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise RuntimeError(f"{path} is not a PEM certificate") from None
    ids = credentials.certificate_id(certificate)
    return {"serial": ids.serial, "fingerprint": ids.fingerprint, "agent": _agent(certificate)}


def _agent(certificate: x509.Certificate) -> str:
    """The agent a certificate names (its SPIFFE ID, else its CN), "" for none."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    from principal import pki

    try:
        sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = sans.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    for uri in uris:
        if uri.startswith(pki.AGENT_SPIFFE_PREFIX):
            return str(uri.removeprefix(pki.AGENT_SPIFFE_PREFIX))
    if any(uri.startswith("spiffe://mooring/") for uri in uris):
        return ""  # a principal's certificate, say
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else ""


def _target(args: argparse.Namespace) -> dict[str, str]:
    """What to revoke, checked before the store is opened."""
    from principal import hub

    try:
        if args.serial is not None:
            return {"serial": hub.parse_serial(args.serial)}
        if args.fingerprint is not None:
            return {"fingerprint": hub.parse_fingerprint(args.fingerprint)}
    except ValueError as err:
        raise usage.UsageError(f"pki revoke: {err}") from err
    return _from_cert(args.cert)


def _described(entry: hub.Revocation) -> str:
    parts = [f"serial {entry.serial}"] if entry.serial else []
    parts += [f"fingerprint {entry.fingerprint}"] if entry.fingerprint else []
    parts += [f"agent {entry.agent}"] if entry.agent else []
    return ", ".join(parts)


def cmd_revoke(args: argparse.Namespace) -> int:
    if "\n" in args.reason or len(args.reason) > 256:
        raise usage.UsageError("pki revoke: --reason is one line of at most 256 characters")
    target = _target(args)

    async def work(desired: principal.HubStore) -> int:
        entry, added = await desired.revoke(**target, reason=args.reason)
        if added:
            print(f"certificate revoked ({_described(entry)})")
        else:
            print(f"certificate already revoked ({_described(entry)}; since {entry.revoked_at})")
        return 0

    return asyncio.run(hubstore.with_store(args, work))


def cmd_revocations(args: argparse.Namespace) -> int:
    async def work(desired: principal.HubStore) -> int:
        entries = await desired.list_revocations()
        if args.output in ("json", "yaml"):
            output.emit({"items": [e.to_data() for e in entries]}, args.output)
            return 0
        if not entries:
            print("no certificates revoked", file=sys.stderr)
            return 0
        wide = args.output == "wide"
        rows = [
            {
                "serial": e.serial or "-",
                "fingerprint": (e.fingerprint if wide else e.fingerprint[:16]) or "-",
                "agent": e.agent or "-",
                "age": output.age(e.revoked_at),
                "revoked": e.revoked_at or "-",
                "reason": e.reason or "-",
            }
            for e in entries
        ]
        columns = ["serial", "fingerprint", "agent", "age"]
        output.print_table(rows, columns + (["revoked"] if wide else []) + ["reason"])
        return 0

    return asyncio.run(hubstore.with_store(args, work))
