"""mTLS credential helpers: a `--tls-dir` folder -> gRPC server/channel credentials, peer identity.

A TLS folder holds `tls.crt` (this side's certificate chain), `tls.key` (its private
key) and `ca.crt` (the CA that peers must chain to): Kubernetes TLS-secret names,
as `mooring pki issue` writes them. Every file is checked here, so a bad folder
fails with one line naming the file instead of an opaque handshake failure later.

The server always requires and verifies a client certificate against `ca.crt`;
an agent's identity is read from that verified certificate only (`peer_identity`),
never from a message.

TLS versions. grpcio (checked on 1.85) cannot set a minimum TLS version from
Python: `grpc.ssl_server_credentials` and `grpc.ssl_channel_credentials` have no
version parameter, and no channel argument or `GRPC_*` environment variable sets
one. C-core has the knob (`grpc_tls_credentials_options_set_min_tls_version`, and
the legacy `grpc_ssl_server_credentials_options` path is getting one), but the
Python binding does not reach it; the upstream request is grpc/grpc#37305 and the
Python work is in open pull requests grpc/grpc#43045 (channel) and #43080 (server).
The handshake policy is therefore C-core's default: **TLS 1.2 minimum, TLS 1.3
maximum**. Two gRPC peers negotiate TLS 1.3; a client capped at TLS 1.2 still
completes the handshake (measured: ECDHE-ECDSA-AES256-GCM-SHA384, client
certificate verified as usual).

What we can do, we do one step later: grpc reports the negotiated version in the
auth context (`ssl_tls_version`), and `peer_identity` gives no identity to a peer
below TLS 1.3, so such a connection can open but no agent RPC is ever served on
it. `tests/integration/test_mtls.py` pins both facts down; the day grpcio exposes
the setting, that test fails and tells us to set it here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

__all__ = [
    "AGENT_SPIFFE_PREFIX",
    "CA_CERT",
    "MIN_TLS_VERSION",
    "SPIFFE_TRUST_DOMAIN_PREFIX",
    "TLS_CERT",
    "TLS_KEY",
    "CredentialsError",
    "TlsFiles",
    "channel_credentials",
    "identity_from_auth_context",
    "load_tls_dir",
    "peer_identity",
    "server_credentials",
    "tls_version_ok",
]

TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
CA_CERT = "ca.crt"

SPIFFE_TRUST_DOMAIN_PREFIX = "spiffe://mooring/"
AGENT_SPIFFE_PREFIX = SPIFFE_TRUST_DOMAIN_PREFIX + "agent/"

_NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")

# grpc auth-context property names (grpc C-core, src/core/tsi/ssl_transport_security.h).
_AUTH_SECURITY_TYPE = "transport_security_type"
_AUTH_COMMON_NAME = "x509_common_name"
_AUTH_URI = "peer_uri"
_AUTH_SAN = "x509_subject_alternative_name"
_AUTH_TLS_VERSION = "ssl_tls_version"

MIN_TLS_VERSION = (1, 3)
"""Peers that negotiated an older TLS version get no identity (see the module docstring)."""
_TLS_VERSION_RE = re.compile(r"TLSv(\d+)(?:\.(\d+))?")


class CredentialsError(Exception):
    """A TLS folder is missing, unreadable or holds something that is not what it should be."""


@dataclasses.dataclass(frozen=True, slots=True)
class TlsFiles:
    """The PEM contents of one TLS folder, checked for shape and for key/certificate match."""

    directory: Path
    certificate_chain: bytes
    private_key: bytes
    root_certificates: bytes


def _read(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise CredentialsError(f"TLS file {path} is missing") from err
    except OSError as err:
        raise CredentialsError(f"cannot read TLS file {path}: {err.strerror or err}") from err
    if not data.strip():
        raise CredentialsError(f"TLS file {path} is empty")
    return data


def _certificates(path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as err:
        raise CredentialsError(f"TLS file {path} is not a PEM certificate") from err


def load_tls_dir(tls_dir: str | os.PathLike[str]) -> TlsFiles:
    """Read TLS_DIR/{tls.crt,tls.key,ca.crt}; CredentialsError names the first bad file."""
    directory = Path(tls_dir)
    if not directory.is_dir():
        raise CredentialsError(f"TLS directory {directory} does not exist or is not a directory")
    cert_path, key_path, ca_path = directory / TLS_CERT, directory / TLS_KEY, directory / CA_CERT
    chain_pem, key_pem, ca_pem = _read(cert_path), _read(key_path), _read(ca_path)
    leaf = _certificates(cert_path, chain_pem)[0]
    _certificates(ca_path, ca_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError as err:  # encrypted: grpc cannot use it
        raise CredentialsError(
            f"TLS file {key_path} is encrypted; an unencrypted key is needed"
        ) from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CredentialsError(f"TLS file {key_path} is not a PEM private key") from err
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != leaf.public_key().public_bytes(*spki):
        raise CredentialsError(f"TLS file {key_path} does not match the certificate in {cert_path}")
    return TlsFiles(
        directory=directory,
        certificate_chain=chain_pem,
        private_key=key_pem,
        root_certificates=ca_pem,
    )


def not_after(path: str | os.PathLike[str], *, chain: bool = False) -> float:
    """When the PEM certificate at `path` stops being valid (Unix time): the first one,
    or with `chain` the earliest of all (a CA bundle). Read each time, so a rotated file
    shows at once; NaN when it cannot be read (a metric says "unknown", never a guess)."""
    try:
        certs = _certificates(Path(path), _read(Path(path)))
    except CredentialsError:
        return math.nan
    return min(c.not_valid_after_utc.timestamp() for c in (certs if chain else certs[:1]))


def server_credentials(tls_dir: str | os.PathLike[str]) -> grpc.ServerCredentials:
    """Server side of mTLS: present tls.crt, require a client certificate that chains to ca.crt."""
    files = load_tls_dir(tls_dir)
    return grpc.ssl_server_credentials(
        [(files.private_key, files.certificate_chain)],
        root_certificates=files.root_certificates,
        require_client_auth=True,
    )


def channel_credentials(tls_dir: str | os.PathLike[str]) -> grpc.ChannelCredentials:
    """Client side of mTLS: trust only ca.crt, present tls.crt as the client certificate."""
    files = load_tls_dir(tls_dir)
    return grpc.ssl_channel_credentials(
        root_certificates=files.root_certificates,
        private_key=files.private_key,
        certificate_chain=files.certificate_chain,
    )


def _valid_name(name: str) -> str | None:
    return name if _NAME_RE.fullmatch(name) else None


def _texts(values: Iterable[bytes | str] | None) -> list[str]:
    out: list[str] = []
    for value in values or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        out.append(text)
    return out


def tls_version_ok(auth_context: Mapping[str, Iterable[bytes | str]]) -> bool:
    """False when the auth context reports a TLS version below MIN_TLS_VERSION (or garbage).

    A context without the property (a grpc that does not report it) passes: there
    is nothing to judge, and the handshake policy is grpc's default either way.
    """
    versions = _texts(auth_context.get(_AUTH_TLS_VERSION))
    for version in versions:
        match = _TLS_VERSION_RE.fullmatch(version)
        if match is None:
            return False
        if (int(match[1]), int(match[2] or 0)) < MIN_TLS_VERSION:
            return False
    return True


def identity_from_auth_context(auth_context: Mapping[str, Iterable[bytes | str]]) -> str | None:
    """The agent name in a gRPC auth context, or None; see `peer_identity`."""
    if "ssl" not in _texts(auth_context.get(_AUTH_SECURITY_TYPE)):
        return None
    if not tls_version_ok(auth_context):
        return None
    uris = set(_texts(auth_context.get(_AUTH_URI)))
    uris |= {san for san in _texts(auth_context.get(_AUTH_SAN)) if "://" in san}
    ours = {uri for uri in uris if uri.startswith(SPIFFE_TRUST_DOMAIN_PREFIX)}
    if ours:
        # A certificate in our trust domain is judged by its SPIFFE ID alone: a principal
        # certificate (spiffe://mooring/principal/N) is not an agent, whatever its CN.
        if len(ours) != 1:
            return None
        (uri,) = ours
        if not uri.startswith(AGENT_SPIFFE_PREFIX):
            return None
        return _valid_name(uri.removeprefix(AGENT_SPIFFE_PREFIX))
    common_names = _texts(auth_context.get(_AUTH_COMMON_NAME))
    if len(common_names) != 1:
        return None
    return _valid_name(common_names[0])


def peer_identity(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The calling agent's name, from its verified client certificate; None if there is none.

    Prefers the SPIFFE URI SAN `spiffe://mooring/agent/NAME`; a certificate without
    any `spiffe://mooring/` URI falls back to its subject CN. A certificate whose
    SPIFFE IDs are not exactly one agent ID, or whose name is not a valid agent name,
    has no identity; nor has a peer that negotiated TLS below 1.3. The auth context
    only carries certificate properties that grpc verified against ca.crt, because
    `server_credentials` requires client auth.
    """
    return identity_from_auth_context(context.auth_context())
