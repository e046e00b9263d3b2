"""Fixtures for integration tests: a PKI and one real principal replica on the session etcd."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from principal import _pki as pki
from principal import _server as server
from principal import _session as session
from principal import _settings as settings
from tests._procs import free_port

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    pki.init_ca(root)
    pki.issue_principal(root, name="p1", sans=["127.0.0.1", "localhost"])
    for name in ("steady", "agent-a", "agent-b"):
        pki.issue_agent(root, name=name)
    ca = pki.load_ca(root)
    now = datetime.datetime.now(datetime.UTC)
    cert, key = pki.issue_certificate(
        common_name="late",
        issuer=ca,
        uris=[pki.agent_spiffe_id("late")],
        client_auth=True,
        not_before=now - datetime.timedelta(days=10),
        not_after=now - datetime.timedelta(days=1),
    )
    pki.write_tls_dir(root / "expired", certificate=cert, key=key, ca_certificate=ca.certificate)
    other_ca_cert, other_ca_key = pki.issue_certificate(common_name="rogue CA", is_ca=True)
    other = pki.CertificateAuthority(certificate=other_ca_cert, key=other_ca_key)
    cert, key = pki.issue_certificate(
        common_name="agent-a", issuer=other, uris=[pki.agent_spiffe_id("agent-a")], client_auth=True
    )
    pki.write_tls_dir(root / "foreign", certificate=cert, key=key, ca_certificate=ca.certificate)
    return root


@pytest.fixture
async def replica(pki_dir: Path, etcd) -> AsyncIterator[server.Replica]:
    listen = f"127.0.0.1:{free_port()}"
    cfg = settings.PrincipalSettings(
        replica_id="p1",
        listen=listen,
        advertise=listen,
        coordination=etcd.url,
        tls_dir=pki_dir / "principals" / "p1",
        session=session.SessionSettings(max_message_bytes=LIMIT),
        auto_register=True,  # these tests' agents register by connecting
    )
    rep = server.Replica(cfg)
    await rep.start()
    try:
        yield rep
    finally:
        await rep.stop()
