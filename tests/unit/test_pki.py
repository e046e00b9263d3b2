"""PKI: the CA, principal and agent certificates on disk, their modes, names and chains."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from principal import _pki as pki

pytestmark = pytest.mark.unit

BAD_NAMES = ["", "Edge", "edge_1", "-edge", "edge-", "a" * 64, "edge.1", "edge 1", "édge", "a\nb"]


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    pki.init_ca(directory)
    return directory


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """Umask 0: any mode a file gets is the mode we asked for, nothing narrowed it."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def spki(public_key: Any) -> bytes:
    return bytes(
        public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ext(cert: x509.Certificate, kind: type[Any]) -> Any:
    return cert.extensions.get_extension_for_class(kind)


def store(directory: Path) -> verification.Store:
    return verification.Store([load_cert(directory / pki.CA_CERT)])


# --- CA ------------------------------------------------------------------------------------


def test_init_ca_writes_a_p256_signing_ca(tmp_path: Path, permissive_umask: None) -> None:
    cert_path = pki.init_ca(tmp_path / "pki")

    assert cert_path == tmp_path / "pki" / "ca.crt"
    ca = load_cert(cert_path)
    key = load_key(tmp_path / "pki" / "ca.key")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert isinstance(key.curve, ec.SECP256R1)
    assert spki(key.public_key()) == spki(ca.public_key())
    constraints = ext(ca, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca
    usage = ext(ca, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3650) <= lifetime <= datetime.timedelta(days=3651)


def test_ca_key_is_0600_and_certificate_0644(tmp_path: Path, permissive_umask: None) -> None:
    pki.init_ca(tmp_path)

    assert mode(tmp_path / "ca.key") == 0o600
    assert mode(tmp_path / "ca.crt") == 0o644


def test_init_ca_refuses_to_overwrite(pki_dir: Path) -> None:
    before = (pki_dir / "ca.crt").read_bytes(), (pki_dir / "ca.key").read_bytes()

    with pytest.raises(pki.PkiError, match=r"CA already exists in .*refusing to overwrite") as err:
        pki.init_ca(pki_dir)

    assert "\n" not in str(err.value)
    assert ((pki_dir / "ca.crt").read_bytes(), (pki_dir / "ca.key").read_bytes()) == before


def test_init_ca_refuses_when_only_the_key_exists(tmp_path: Path) -> None:
    (tmp_path / "ca.key").write_bytes(b"precious")

    with pytest.raises(pki.PkiError, match=r"\(ca.key\)"):
        pki.init_ca(tmp_path)
    assert (tmp_path / "ca.key").read_bytes() == b"precious"


def test_init_ca_with_force_replaces_the_ca(pki_dir: Path) -> None:
    old = pki.fingerprint((pki_dir / "ca.crt").read_bytes())

    pki.init_ca(pki_dir, force=True)

    assert pki.fingerprint((pki_dir / "ca.crt").read_bytes()) != old
    assert mode(pki_dir / "ca.key") == 0o600


def test_keys_are_created_0600_with_o_excl(pki_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key file is born 0600 and exclusive: it is never readable by others, not briefly."""
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    pki.issue_agent(pki_dir, name="edge-1")
    monkeypatch.undo()

    key_opens = [(flags, mode) for path, flags, mode in calls if ".tls.key." in path]
    assert len(key_opens) == 1
    flags, created_mode = key_opens[0]
    assert flags & os.O_CREAT and flags & os.O_EXCL
    assert created_mode == 0o600


def test_no_temporary_files_are_left_behind(pki_dir: Path) -> None:
    folder = pki.issue_agent(pki_dir, name="edge-1")

    assert sorted(p.name for p in folder.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    assert sorted(p.name for p in pki_dir.iterdir()) == ["agents", "ca.crt", "ca.key"]


def test_missing_ca_message(tmp_path: Path) -> None:
    directory = tmp_path / "nowhere"

    with pytest.raises(pki.PkiError) as err:
        pki.issue_agent(directory, name="edge-1")

    assert str(err.value) == f"no CA in {directory}: run `mooring pki init --dir {directory}` first"
    with pytest.raises(pki.PkiError, match="no CA in"):
        pki.issue_principal(directory, name="p0", sans=[])


def test_a_garbled_ca_key_is_a_one_line_error(pki_dir: Path) -> None:
    (pki_dir / "ca.key").write_text("not a key")

    with pytest.raises(pki.PkiError, match=r"ca\.key is not an unencrypted PEM private key"):
        pki.issue_agent(pki_dir, name="edge-1")


def test_a_ca_key_that_does_not_match_the_certificate(pki_dir: Path) -> None:
    (pki_dir / "ca.key").write_bytes(pki.private_key_pem(pki.generate_key()))

    with pytest.raises(pki.PkiError, match=r"ca\.key does not match .*ca\.crt"):
        pki.issue_agent(pki_dir, name="edge-1")


# --- agents --------------------------------------------------------------------------------


def test_issue_agent_layout_and_modes(pki_dir: Path, permissive_umask: None) -> None:
    folder = pki.issue_agent(pki_dir, name="edge-1")

    assert folder == pki_dir / "agents" / "edge-1"
    assert mode(folder / "tls.key") == 0o600
    assert mode(folder / "tls.crt") == 0o644
    assert (folder / "ca.crt").read_bytes() == (pki_dir / "ca.crt").read_bytes()
    cert, key = load_cert(folder / "tls.crt"), load_key(folder / "tls.key")
    assert spki(key.public_key()) == spki(cert.public_key())


def test_agent_certificate_identity(pki_dir: Path) -> None:
    cert = load_cert(pki.issue_agent(pki_dir, name="edge-1") / "tls.crt")

    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attr.value for attr in common_names] == ["edge-1"]
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://mooring/agent/edge-1"
    ]
    assert san.get_values_for_type(x509.DNSName) == []
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, x509.BasicConstraints).value.ca is False
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=365) <= lifetime <= datetime.timedelta(days=366)


def test_agent_certificate_chains_to_the_ca_as_a_client(pki_dir: Path) -> None:
    cert = load_cert(pki.issue_agent(pki_dir, name="edge-1", days=30) / "tls.crt")

    verifier = verification.PolicyBuilder().store(store(pki_dir)).build_client_verifier()
    verified = verifier.verify(cert, [])

    assert verified.chain[-1] == load_cert(pki_dir / "ca.crt")
    assert x509.UniformResourceIdentifier("spiffe://mooring/agent/edge-1") in (
        verified.subjects or []
    )


def test_reissuing_an_agent_replaces_its_certificate(pki_dir: Path) -> None:
    first = (pki.issue_agent(pki_dir, name="edge-1") / "tls.crt").read_bytes()
    second = (pki.issue_agent(pki_dir, name="edge-1") / "tls.crt").read_bytes()

    assert pki.fingerprint(first) != pki.fingerprint(second)


# --- principals ----------------------------------------------------------------------------


def test_principal_sans_detect_ips_and_always_include_the_name(pki_dir: Path) -> None:
    folder = pki.issue_principal(
        pki_dir,
        name="p0",
        sans=["principal.example.com", "127.0.0.1", "::1", "LOCALHOST", "p0", " 10.0.0.7 "],
    )

    assert folder == pki_dir / "principals" / "p0"
    cert = load_cert(folder / "tls.crt")
    san = ext(cert, x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["p0", "principal.example.com", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.7"),
    ]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://mooring/principal/p0"
    ]
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [attr.value for attr in common_names] == ["p0"]


def test_principal_with_no_sans_still_names_itself(pki_dir: Path) -> None:
    cert = load_cert(pki.issue_principal(pki_dir, name="p0", sans=[]) / "tls.crt")

    assert ext(cert, x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["p0"]


def test_principal_eku_and_modes(pki_dir: Path, permissive_umask: None) -> None:
    folder = pki.issue_principal(pki_dir, name="p0", sans=["localhost"])

    eku = list(ext(load_cert(folder / "tls.crt"), x509.ExtendedKeyUsage).value)
    assert eku == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert mode(folder / "tls.key") == 0o600


@pytest.mark.parametrize(
    "subject",
    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
)
def test_principal_certificate_verifies_as_a_server(
    pki_dir: Path, subject: verification.Subject
) -> None:
    folder = pki.issue_principal(pki_dir, name="p0", sans=["localhost", "127.0.0.1"])

    verifier = verification.PolicyBuilder().store(store(pki_dir)).build_server_verifier(subject)
    chain = verifier.verify(load_cert(folder / "tls.crt"), [])

    assert chain[-1] == load_cert(pki_dir / "ca.crt")


def test_principal_certificate_does_not_verify_for_another_host(pki_dir: Path) -> None:
    folder = pki.issue_principal(pki_dir, name="p0", sans=["localhost"])
    verifier = (
        verification.PolicyBuilder()
        .store(store(pki_dir))
        .build_server_verifier(x509.DNSName("evil.example.com"))
    )

    with pytest.raises(verification.VerificationError):
        verifier.verify(load_cert(folder / "tls.crt"), [])


@pytest.mark.parametrize("san", ["bad_host", "-x.example.com", "a..b", "x" * 64 + ".com", "a.*.b"])
def test_bad_sans_are_rejected(pki_dir: Path, san: str) -> None:
    with pytest.raises(ValueError, match="invalid SAN") as err:
        pki.issue_principal(pki_dir, name="p0", sans=[san])
    assert "\n" not in str(err.value)
    assert not (pki_dir / "principals").exists()


# --- names ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_one_line_value_errors(pki_dir: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid name") as err:
        pki.issue_agent(pki_dir, name=name)
    assert "\n" not in str(err.value)

    with pytest.raises(ValueError, match="invalid name"):
        pki.issue_principal(pki_dir, name=name, sans=["localhost"])
    assert sorted(p.name for p in pki_dir.iterdir()) == ["ca.crt", "ca.key"]


@pytest.mark.parametrize("name", ["a", "edge-1", "0", "a" * 63, "x-1-y"])
def test_good_names(name: str) -> None:
    assert pki.validate_name(name) == name


def test_bad_names_are_checked_before_the_ca(tmp_path: Path) -> None:
    """A bad name is a usage error even where no CA exists yet."""
    with pytest.raises(ValueError, match="invalid name"):
        pki.issue_agent(tmp_path, name="Bad")


# --- fingerprints and the low-level issuer -------------------------------------------------


def test_fingerprint_is_sha256_of_der(pki_dir: Path) -> None:
    pem = (pki_dir / "ca.crt").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)

    digest = pki.fingerprint(pem)

    assert digest == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert digest == cert.fingerprint(hashes.SHA256()).hex()
    assert pki.fingerprint(pem.decode()) == digest


def test_fingerprint_of_garbage(pki_dir: Path) -> None:
    with pytest.raises(pki.PkiError, match="not a PEM certificate"):
        pki.fingerprint(b"garbage")


def test_issue_certificate_can_make_an_expired_certificate(pki_dir: Path) -> None:
    ca = pki.load_ca(pki_dir)
    now = datetime.datetime.now(datetime.UTC)
    cert, _ = pki.issue_certificate(
        common_name="edge-1",
        issuer=ca,
        uris=[pki.agent_spiffe_id("edge-1")],
        client_auth=True,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )

    assert cert.not_valid_after_utc < now
    cert.verify_directly_issued_by(ca.certificate)  # properly signed, only expired
    verifier = verification.PolicyBuilder().store(store(pki_dir)).build_client_verifier()
    with pytest.raises(verification.VerificationError, match="not valid at validation time"):
        verifier.verify(cert, [])


def test_issue_certificate_can_make_another_ca(pki_dir: Path) -> None:
    other, other_key = pki.issue_certificate(common_name=pki.CA_COMMON_NAME, is_ca=True)
    stranger, _ = pki.issue_certificate(
        common_name="edge-1",
        issuer=pki.CertificateAuthority(certificate=other, key=other_key),
        uris=[pki.agent_spiffe_id("edge-1")],
        client_auth=True,
    )

    # Same CA name, different key: only the signature tells them apart, and it does.
    assert other.subject == load_cert(pki_dir / "ca.crt").subject
    verifier = verification.PolicyBuilder().store(store(pki_dir)).build_client_verifier()
    with pytest.raises(verification.VerificationError):
        verifier.verify(stranger, [])


def test_issue_certificate_rejects_an_empty_validity() -> None:
    now = datetime.datetime.now(datetime.UTC)
    with pytest.raises(ValueError, match="must be after"):
        pki.issue_certificate(common_name="x", not_before=now, not_after=now)
