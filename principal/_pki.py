"""PKI: the Mooring CA, principal and agent certificates, fingerprints.

Files follow Kubernetes TLS-secret names (DESIGN.md, "CLI contract")::

    DIR/ca.crt, DIR/ca.key                      init_ca
    DIR/principals/NAME/{tls.crt,tls.key,ca.crt}  issue_principal
    DIR/agents/NAME/{tls.crt,tls.key,ca.crt}      issue_agent

Every key is ECDSA P-256. Every file is written atomically (a temporary file in
the same folder, then `os.replace`); key files are created 0600 with
`O_CREAT | O_EXCL` and `fchmod` before a byte is written, so a key is never
readable by others, not even for an instant.

An agent's identity is its SPIFFE URI SAN `spiffe://mooring/agent/NAME` (and,
for tools that only read the subject, CN = NAME). A principal certificate
carries `spiffe://mooring/principal/NAME`, so a principal certificate can never
pass for an agent whose name happens to equal the principal's CN.

`issue_certificate` is the low-level primitive behind all of this; tests use it
directly for expired certificates and certificates from another CA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import ipaddress
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from principal import _errors as errors

__all__ = [
    "AGENTS_DIR",
    "AGENT_SPIFFE_PREFIX",
    "CA_CERT",
    "CA_COMMON_NAME",
    "CA_DAYS",
    "CA_KEY",
    "PRINCIPALS_DIR",
    "PRINCIPAL_SPIFFE_PREFIX",
    "TLS_CERT",
    "TLS_KEY",
    "CertificateAuthority",
    "PkiError",
    "agent_spiffe_id",
    "certificate_pem",
    "fingerprint",
    "generate_key",
    "init_ca",
    "issue_agent",
    "issue_certificate",
    "issue_principal",
    "load_ca",
    "principal_spiffe_id",
    "private_key_pem",
    "validate_name",
    "write_tls_dir",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
PRINCIPALS_DIR = "principals"
AGENTS_DIR = "agents"

AGENT_SPIFFE_PREFIX = "spiffe://mooring/agent/"
PRINCIPAL_SPIFFE_PREFIX = "spiffe://mooring/principal/"

CA_DAYS = 3650
"""CA validity, days (10 years)."""
CA_COMMON_NAME = "Mooring CA"
ORGANIZATION = "mooring"
BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start this long before "now", so modest clock skew between hosts is harmless."""

_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_DNS_LABEL_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_CERT_MODE = 0o644
_KEY_MODE = 0o600


class PkiError(errors.PrincipalError):
    """Root of every PKI error about files: a missing or unreadable CA, a write that failed."""


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


# --- names -----------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """Return `name` if it is a DNS-1123 label (lowercase alnum and '-', <= 63); else ValueError."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(
            f"invalid name {name!r}: use 1-63 lowercase letters, digits or '-',"
            " starting and ending with a letter or digit"
        )
    return name


def agent_spiffe_id(name: str) -> str:
    return AGENT_SPIFFE_PREFIX + validate_name(name)


def principal_spiffe_id(name: str) -> str:
    return PRINCIPAL_SPIFFE_PREFIX + validate_name(name)


def _parse_san(value: str) -> str | ipaddress.IPv4Address | ipaddress.IPv6Address:
    """One `--san` entry -> an IP address if it parses as one, else a validated DNS name."""
    text = value.strip()
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    host = text.lower().rstrip(".")
    labels = host.split(".")
    if labels and labels[0] == "*":  # a wildcard is allowed as the leftmost label only
        labels = labels[1:]
    if not host or len(host) > 253 or not labels or not all(map(_DNS_LABEL_RE.fullmatch, labels)):
        raise ValueError(f"invalid SAN {value!r}: expected a DNS name or an IP address")
    return host


# --- keys, certificates, PEM -----------------------------------------------------------------


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def certificate_pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def fingerprint(cert_pem: bytes | str) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex without separators."""
    data = cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as err:
        raise PkiError(f"not a PEM certificate: {err}") from err
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def issue_certificate(
    *,
    common_name: str,
    issuer: CertificateAuthority | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
    is_ca: bool = False,
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    uris: Iterable[str] = (),
    organization: str = ORGANIZATION,
    server_auth: bool = False,
    client_auth: bool = False,
    days: int = 365,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Build and sign one certificate; no file is touched.

    Without `issuer` the certificate is self-signed (use with `is_ca=True` for a root).
    Validity runs from `not_before` (default: now - BACKDATE) to `not_after` (default:
    now + `days`); pass a `not_after` in the past to get an expired certificate.
    Returns the certificate and its private key (`key`, or a fresh P-256 key).
    `organization` is the subject's O, left out when empty (Kubernetes reads it as the
    client's group).
    """
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    now = datetime.datetime.now(datetime.UTC)
    start = not_before if not_before is not None else now - BACKDATE
    end = not_after if not_after is not None else now + datetime.timedelta(days=days)
    if end <= start:
        raise ValueError(f"not_after ({end.isoformat()}) must be after not_before")
    key = key if key is not None else generate_key()
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    subject = x509.Name(attributes)
    signer_key = issuer.key if issuer is not None else key
    issuer_name = issuer.certificate.subject if issuer is not None else subject
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), critical=True
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if issuer is not None:
        issuer_ski = issuer.certificate.extensions.get_extension_for_class(
            x509.SubjectKeyIdentifier
        ).value
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(issuer_ski),
            critical=False,
        )
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] * server_auth
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] * client_auth
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(address) for address in ip_addresses]
    names += [x509.UniformResourceIdentifier(uri) for uri in uris]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer_key, hashes.SHA256()), key


# --- files -----------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, *, mode: int) -> None:
    """Write `data` to `path` through a same-folder temporary file created with `mode`.

    The temporary file is created with O_CREAT | O_EXCL and its mode is fixed with
    fchmod before anything is written, so a key is never readable by others.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed it; never widen past `mode`
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise PkiError(f"cannot write {path}: {err.strerror or err}") from err


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PkiError(f"cannot create {path}: {err.strerror or err}") from err


def write_tls_dir(
    folder: Path,
    *,
    certificate: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    ca_certificate: x509.Certificate,
) -> Path:
    """Write FOLDER/{tls.crt,tls.key,ca.crt} (the layout `--tls-dir` takes); returns FOLDER."""
    folder = Path(folder)
    _mkdir(folder)
    _write_atomic(folder / TLS_KEY, private_key_pem(key), mode=_KEY_MODE)
    _write_atomic(folder / TLS_CERT, certificate_pem(certificate), mode=_CERT_MODE)
    _write_atomic(folder / CA_CERT, certificate_pem(ca_certificate), mode=_CERT_MODE)
    return folder


def init_ca(directory: Path, *, force: bool = False) -> Path:
    """Create the CA: DIR/ca.crt and DIR/ca.key (ECDSA P-256, 10 years); returns DIR/ca.crt.

    Refuses to replace an existing CA unless `force`: a new CA invalidates every
    certificate issued by the old one.
    """
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    existing = [path.name for path in (cert_path, key_path) if path.exists()]
    if existing and not force:
        raise PkiError(
            f"a CA already exists in {directory} ({', '.join(existing)}): refusing to"
            " overwrite it; --force replaces it, and every certificate it issued stops working"
        )
    certificate, key = issue_certificate(common_name=CA_COMMON_NAME, is_ca=True, days=CA_DAYS)
    _mkdir(directory)
    _write_atomic(key_path, private_key_pem(key), mode=_KEY_MODE)
    _write_atomic(cert_path, certificate_pem(certificate), mode=_CERT_MODE)
    return cert_path


def load_ca(directory: Path) -> CertificateAuthority:
    """Read DIR/ca.crt and DIR/ca.key; PkiError when missing, unreadable or mismatched."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.exists() and not key_path.exists():
        raise PkiError(f"no CA in {directory}: run `mooring pki init --dir {directory}` first")
    try:
        cert_data = cert_path.read_bytes()
        key_data = key_path.read_bytes()
    except OSError as err:
        raise PkiError(f"cannot read {err.filename}: {err.strerror or err}") from err
    try:
        certificate = x509.load_pem_x509_certificate(cert_data)
    except ValueError as err:
        raise PkiError(f"{cert_path} is not a PEM certificate") from err
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError) as err:
        raise PkiError(f"{key_path} is not an unencrypted PEM private key") from err
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path} is not an ECDSA key")
    if _spki(key.public_key()) != _spki(certificate.public_key()):
        raise PkiError(f"{key_path} does not match {cert_path}")
    return CertificateAuthority(certificate=certificate, key=key)


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def issue_principal(directory: Path, *, name: str, sans: Sequence[str], days: int = 365) -> Path:
    """Issue DIR/principals/NAME/{tls.crt,tls.key,ca.crt}; returns that folder.

    EKU serverAuth + clientAuth (replicas also dial each other). `sans` entries that
    parse as IP addresses become IP SANs, the rest DNS SANs; NAME is always a DNS SAN.
    """
    validate_name(name)
    parsed = [_parse_san(san) for san in sans if san.strip()]
    dns_names = [name] + [san for san in parsed if isinstance(san, str)]
    ips = [san for san in parsed if not isinstance(san, str)]
    ca = load_ca(directory)
    certificate, key = issue_certificate(
        common_name=name,
        issuer=ca,
        dns_names=list(dict.fromkeys(dns_names)),
        ip_addresses=list(dict.fromkeys(ips)),
        uris=[principal_spiffe_id(name)],
        server_auth=True,
        client_auth=True,
        days=days,
    )
    folder = Path(directory) / PRINCIPALS_DIR / name
    return write_tls_dir(folder, certificate=certificate, key=key, ca_certificate=ca.certificate)


def issue_agent(directory: Path, *, name: str, days: int = 365) -> Path:
    """Issue DIR/agents/NAME/{tls.crt,tls.key,ca.crt}; returns that folder.

    CN = NAME, EKU clientAuth, URI SAN `spiffe://mooring/agent/NAME`.
    """
    validate_name(name)
    ca = load_ca(directory)
    certificate, key = issue_certificate(
        common_name=name,
        issuer=ca,
        uris=[agent_spiffe_id(name)],
        client_auth=True,
        days=days,
    )
    folder = Path(directory) / AGENTS_DIR / name
    return write_tls_dir(folder, certificate=certificate, key=key, ca_certificate=ca.certificate)
