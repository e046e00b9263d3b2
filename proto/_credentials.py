"""mTLS credential helpers: a `--tls-dir` folder -> gRPC server/channel credentials, peer identity.

A TLS folder holds `tls.crt` (this side's certificate chain), `tls.key` (its private
key) and `ca.crt` (the CA that peers must chain to): Kubernetes TLS-secret names,
as `mooring pki issue` writes them. Every file is checked here, so a bad folder
fails with one line naming the file instead of an opaque handshake failure later.

The server always requires and verifies a client certificate against `ca.crt`;
an agent's identity is read from that verified certificate only (`peer_identity`),
never from a message.

Rotation without restart. Both sides reread the folder when its files change: the
server at every new connection (grpc calls `server_credentials`' fetcher before each
TLS handshake; measured on grpcio 1.85: once per connection, not per RPC, on C-core
threads), the agent at every dial (`ReloadingCredentials.current`). Each check is three
`stat` calls (mtime, size, inode); only a change rereads and validates the files, and
new connections then use them while open ones keep the pair they were made with. New
files that are invalid or half-written (a key that does not match its certificate yet)
leave the previous pair in use: one warning per distinct state of the files, counted in
`mooring_certificate_reload_failures_total`. `ca.crt` may hold several roots (a bundle,
for a CA rotation); every one is trusted.

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
import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from proto import _errors as errors
from proto import _logfields as logfields

__all__ = [
    "AGENT_SPIFFE_PREFIX",
    "CA_CERT",
    "MIN_TLS_VERSION",
    "SPIFFE_TRUST_DOMAIN_PREFIX",
    "TLS_CERT",
    "TLS_KEY",
    "CertificateId",
    "CredentialsError",
    "ReloadingCredentials",
    "TlsFiles",
    "TlsReloader",
    "certificate_id",
    "certificate_id_from_auth_context",
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
_AUTH_PEM_CERT = "x509_pem_cert"

logger = logging.getLogger(__name__)

MIN_TLS_VERSION = (1, 3)
"""Peers that negotiated an older TLS version get no identity (see the module docstring)."""
_TLS_VERSION_RE = re.compile(r"TLSv(\d+)(?:\.(\d+))?")


class CredentialsError(errors.ProtoError):
    """A TLS folder is missing, unreadable or holds something that is not what it should be."""


@dataclasses.dataclass(frozen=True, slots=True)
class CertificateId:
    """What names one certificate in a revocation list."""

    serial: str  # lowercase hex without leading zeros
    fingerprint: str  # SHA-256 of the DER encoding, lowercase hex


def certificate_id(certificate: x509.Certificate) -> CertificateId:
    der = certificate.public_bytes(serialization.Encoding.DER)
    return CertificateId(format(certificate.serial_number, "x"), hashlib.sha256(der).hexdigest())


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


T = TypeVar("T")

_Stamp = tuple[tuple[int, int, int] | str, ...]


def _stamp(paths: tuple[str, ...]) -> _Stamp:
    """What changes when one of the files is rewritten or replaced: each one's
    (mtime_ns, size, inode), following symlinks (a Kubernetes secret volume swaps a
    `..data` link), or the error that kept it from being stat'ed."""
    stamps: list[tuple[int, int, int] | str] = []
    for path in paths:
        try:
            st = os.stat(path)
        except (OSError, ValueError) as err:  # ValueError: a NUL in the path
            stamps.append(f"{type(err).__name__}: {err}")
        else:
            stamps.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(stamps)


def _contents(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    return files.certificate_chain, files.private_key, files.root_certificates


def _describe(files: TlsFiles) -> tuple[str, str, int]:
    """The leaf's serial (as CertificateId has it) and not-after, and how many CAs are trusted."""
    leaf = x509.load_pem_x509_certificate(files.certificate_chain)
    roots = x509.load_pem_x509_certificates(files.root_certificates)
    expires = leaf.not_valid_after_utc.isoformat().replace("+00:00", "Z")
    return certificate_id(leaf).serial, expires, len(roots)


class TlsReloader(Generic[T]):
    """A TLS folder and what is built from it (`build`), rebuilt when the files change.

    `poll` is cheap enough for every handshake: it stats the three files and rereads
    them only when a stamp changed. New files that do not load (`load_tls_dir`'s
    CredentialsError, or anything `build` raises) leave the previous value in use; that
    is logged once per distinct state of the files, and `on_failure` is called once.
    `poll` never raises, and may be called from any thread (grpc calls a server's
    fetcher on its own threads). The first load, in the constructor, raises
    CredentialsError as `load_tls_dir` does: a process must not start without its files.
    """

    def __init__(
        self,
        tls_dir: str | os.PathLike[str],
        *,
        build: Callable[[TlsFiles], T],
        role: str,
        on_failure: Callable[[], object] | None = None,
    ) -> None:
        self.directory = Path(tls_dir)
        self.role = role  # "serving" | "client": what tls.crt is to this process
        self.generation = 0
        """Incremented each time new files are taken into use."""
        self._build = build
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._paths = tuple(str(self.directory / name) for name in (TLS_CERT, TLS_KEY, CA_CERT))
        self._stamp = _stamp(self._paths)  # before reading: a later write shows as a change
        self._failed: _Stamp | None = None
        self.files = load_tls_dir(self.directory)
        self._value = build(self.files)

    def current(self) -> T:
        """The value built from the newest good files (polling them first)."""
        self.poll()
        return self._value

    def poll(self) -> T | None:
        """The value built from new files when they changed and load, else None."""
        with self._lock:
            stamp = _stamp(self._paths)
            if stamp in (self._stamp, self._failed):
                return None
            try:
                files = load_tls_dir(self.directory)
                if _contents(files) == _contents(self.files):  # rewritten, same bytes
                    self._stamp, self._failed = stamp, None
                    return None
                value = self._build(files)
                serial, expires, roots = _describe(files)
            except Exception as err:  # anything at all: this may run inside grpc's handshake
                self._failed = stamp
                self._reload_failed(err)
                return None
            self._stamp, self._failed = stamp, None
            self.files, self._value = files, value
            self.generation += 1
        logger.info(
            "TLS files in %s reloaded: %s certificate serial %s, valid until %s; %d CA"
            " certificate(s) trusted",
            self.directory,
            self.role,
            serial,
            expires,
            roots,
            extra=logfields.of(reason="certificate_reloaded"),
        )
        return value

    def _reload_failed(self, err: Exception) -> None:
        error = str(err).splitlines()[0] if str(err) else type(err).__name__
        logger.warning(
            "TLS files in %s changed but cannot be used, keeping the previous ones: %s",
            self.directory,
            error,
            extra=logfields.of(reason="certificate_reload_failed", error=error),
        )
        if self._on_failure is not None:
            try:
                self._on_failure()
            except Exception:  # a metric must not break a handshake either
                logger.exception("TLS reload failure callback failed")


def _server_configuration(files: TlsFiles) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.private_key, files.certificate_chain)], root_certificates=files.root_certificates
    )


def server_credentials(
    tls_dir: str | os.PathLike[str], *, on_reload_failure: Callable[[], object] | None = None
) -> grpc.ServerCredentials:
    """Server side of mTLS: present tls.crt, require a client certificate that chains to ca.crt.

    The files are reread when they change (see `TlsReloader`): grpc asks for them before
    every new connection's handshake; `on_reload_failure` counts new files it cannot use.
    """
    reloader = TlsReloader(
        tls_dir, build=_server_configuration, role="serving", on_failure=on_reload_failure
    )
    return grpc.dynamic_ssl_server_credentials(
        reloader.current(), reloader.poll, require_client_authentication=True
    )


def _channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=files.root_certificates,
        private_key=files.private_key,
        certificate_chain=files.certificate_chain,
    )


def channel_credentials(tls_dir: str | os.PathLike[str]) -> grpc.ChannelCredentials:
    """Client side of mTLS: trust only ca.crt, present tls.crt as the client certificate.

    Read once; a long-lived client that should follow rotated files uses
    `ReloadingCredentials` instead."""
    return _channel_credentials(load_tls_dir(tls_dir))


class ReloadingCredentials(TlsReloader[grpc.ChannelCredentials]):
    """Channel credentials that follow the TLS folder: `current()` at each dial.

    A channel keeps the credentials it was made with for all its connections, so a
    client compares `generation` with the one its channels were made under and
    makes new channels when it changed (a connection already open goes on)."""

    def __init__(
        self, tls_dir: str | os.PathLike[str], *, on_failure: Callable[[], object] | None = None
    ) -> None:
        super().__init__(tls_dir, build=_channel_credentials, role="client", on_failure=on_failure)


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


def certificate_id_from_auth_context(
    auth_context: Mapping[str, Iterable[bytes | str]],
) -> CertificateId | None:
    """The serial and fingerprint of the peer's verified certificate (grpc puts its PEM
    in the auth context), None when there is none or it cannot be read."""
    pems = [p.encode() if isinstance(p, str) else p for p in auth_context.get(_AUTH_PEM_CERT, ())]
    if len(pems) != 1:
        return None
    try:
        return certificate_id(x509.load_pem_x509_certificate(pems[0]))
    except ValueError:
        return None


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
