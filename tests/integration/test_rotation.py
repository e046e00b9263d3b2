"""Certificate rotation without restart, on real parts: a principal replica in this process
on the session's etcd, real mTLS, real agents, and a plain `ssl` client that reads the
certificate a replica presents to a new connection.

- A replica rereads its `--tls-dir` before each new connection's handshake: new
  connections get the new pair, sessions already open go on where they are.
- An agent rereads its own at each dial and drops the channels made with the old files,
  so its next handshake presents the new certificate.
- `ca.crt` may be a bundle of several CAs, on both sides: the order for a CA rotation is
  to add the new CA to every bundle, reissue the leaves, then drop the old CA. Once the
  old CA is dropped, a new handshake with an old-CA certificate is refused, while a
  session opened before goes on over its connection (TLS does not check a peer again;
  nor does a later session an agent opens on that same cached connection).
- New files that cannot be used (half-written, a key that does not match yet) leave the
  previous pair in use, with one warning per state of the files and a counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Sequence
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent import _client as agent_client
from mooring import _services as services
from principal import _pki as pki
from principal import _server as server
from proto import _credentials as credentials
from tests import _argocd as argocd
from tests import _poll as poll
from tests.election._helpers import until
from tests.integration import _agents as agents
from tests.integration._agents import rejected, serving

pytestmark = pytest.mark.integration

LOGGER = "proto._credentials"  # where reloads and refused reloads are logged


# --- a PKI per test (its files are rewritten) ----------------------------------------------


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    """CA, replica p1 (serving 127.0.0.1) and agent `edge`, as `mooring pki` writes them."""
    root = tmp_path / "pki"
    pki.init_ca(root)
    pki.issue_principal(root, name="p1", sans=["127.0.0.1", "localhost"])
    pki.issue_agent(root, name="edge")
    return root


@pytest.fixture
def root() -> str:
    return f"/rotation-{uuid.uuid4().hex[:8]}/"


def new_pair(ca: pki.CertificateAuthority, name: str, *, principal: bool = False) -> bytes:
    """A fresh certificate and key from `ca` for replica or agent `name`: tls.crt's PEM,
    with the key's PEM after it (split by `install`)."""
    if principal:
        cert, key = pki.issue_certificate(
            common_name=name,
            issuer=ca,
            dns_names=[name, "localhost"],
            ip_addresses=[ipaddress.ip_address("127.0.0.1")],
            uris=[pki.principal_spiffe_id(name)],
            server_auth=True,
            client_auth=True,
        )
    else:
        cert, key = pki.issue_certificate(
            common_name=name, issuer=ca, uris=[pki.agent_spiffe_id(name)], client_auth=True
        )
    return pki.certificate_pem(cert) + pki.private_key_pem(key)


def replace(path: Path, data: bytes) -> None:
    """Replace a file as the docs recommend: a temporary file beside it, renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def install(
    folder: Path, *, pair: bytes | None = None, cas: Sequence[pki.CertificateAuthority] = ()
) -> None:
    """Rotate files in a TLS folder in place: the key, then its certificate; the CA bundle."""
    if pair is not None:
        cert, _, key = pair.partition(b"-----END CERTIFICATE-----\n")
        replace(folder / credentials.TLS_KEY, key)
        replace(folder / credentials.TLS_CERT, cert + b"-----END CERTIFICATE-----\n")
    if cas:
        replace(
            folder / credentials.CA_CERT, b"".join(pki.certificate_pem(c.certificate) for c in cas)
        )


def serial(pem: bytes) -> str:
    return credentials.certificate_id(x509.load_pem_x509_certificate(pem)).serial


def until_iso(pem: bytes) -> str:
    expires = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    return expires.isoformat().replace("+00:00", "Z")


def presented(port: int, client: Path) -> str:
    """The serial of the certificate the replica presents to a new TLS connection: a plain
    `ssl` client with `client`'s certificate, verifying the replica against its ca.crt."""
    context = ssl.create_default_context(cafile=str(client / credentials.CA_CERT))
    context.load_cert_chain(client / credentials.TLS_CERT, client / credentials.TLS_KEY)
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return credentials.certificate_id(x509.load_der_x509_certificate(der)).serial


def running(
    replica: server.Replica, name: str, tls_dir: Path, state: Path
) -> contextlib.AbstractAsyncContextManager[agent_client.Agent]:
    """Agent `name` with the files in `tls_dir`, quick to retry, until the block ends."""
    return agents.running(
        replica,
        name,
        tls_dir,
        state / f"{name}.db",
        backoff_base=0.05,
        backoff_cap=0.5,
        endpoint_cooldown=0.1,
    )


async def welcomed(agent: agent_client.Agent) -> None:
    await asyncio.wait_for(agent.welcomed.wait(), 10)


def tls_errors(agent: agent_client.Agent) -> float:
    return float(agent.metrics.connect_errors.labels("tls")._value.get())


async def receives(replica: server.Replica, agent: agent_client.Agent, name: str) -> None:
    """A new Application for `agent` on the hub reaches its local store."""
    await replica.desired.apply_desired(agent.settings.name, argocd.application(name))
    await poll.eventually(
        lambda: agent.store.get("Application", name),
        until=lambda got: got is not None,
        what=f"{agent.settings.name} to receive {name}",
    )


def reload_failures(counter: object) -> float:
    return float(counter._value.get())  # type: ignore[attr-defined]


def messages(caplog: pytest.LogCaptureFixture, folder: Path, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == level and f" {folder}" in r.getMessage()
    ]


# --- the replica's own pair ----------------------------------------------------------------


async def test_a_new_replica_pair_serves_new_connections_while_open_sessions_go_on(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ca = pki.load_ca(pki_dir)
    p1, edge = pki_dir / "principals" / "p1", pki_dir / "agents" / "edge"
    first = serial((p1 / "tls.crt").read_bytes())
    async with (
        serving(pki_dir, etcd, root=root, auto_register=True) as replica,
        running(replica, "edge", edge, tmp_path) as agent,
    ):
        await welcomed(agent)
        session = agent.session_id
        assert await asyncio.to_thread(presented, replica.port, edge) == first

        pair = new_pair(ca, "p1", principal=True)
        install(p1, pair=pair)

        # The next handshake presents the new certificate, no restart.
        assert await asyncio.to_thread(presented, replica.port, edge) == serial(pair)
        # The session opened before goes on: same session, still receiving changes.
        await receives(replica, agent, "after-rotation")
        assert agent.welcomed.is_set() and agent.session_id == session
        assert agent.sessions_opened == 1
        # A new agent's gRPC handshake gets in with the new pair.
        second = pki.issue_agent(pki_dir, name="edge-2")
        async with running(replica, "edge-2", second, tmp_path) as other:
            await welcomed(other)
        assert reload_failures(replica.metrics.certificate_reload_failures) == 0

    assert messages(caplog, p1, logging.INFO) == [
        f"TLS files in {p1} reloaded: serving certificate serial {serial(pair)}, valid until"
        f" {until_iso(pair)}; 1 CA certificate(s) trusted"
    ]
    assert messages(caplog, p1, logging.WARNING) == []


async def test_half_written_or_mismatched_files_leave_the_previous_pair_in_use(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ca = pki.load_ca(pki_dir)
    p1, edge = pki_dir / "principals" / "p1", pki_dir / "agents" / "edge"
    first = serial((p1 / "tls.crt").read_bytes())
    pair = new_pair(ca, "p1", principal=True)
    cert, _, key = pair.partition(b"-----END CERTIFICATE-----\n")
    cert += b"-----END CERTIFICATE-----\n"
    async with (
        serving(pki_dir, etcd, root=root, auto_register=True) as replica,
        running(replica, "edge", edge, tmp_path) as agent,
    ):
        await welcomed(agent)
        session = agent.session_id
        failures = replica.metrics.certificate_reload_failures

        # The new key is in place, its certificate not yet: three handshakes, one warning.
        replace(p1 / "tls.key", key)
        for _ in range(3):
            assert await asyncio.to_thread(presented, replica.port, edge) == first
        assert messages(caplog, p1, logging.WARNING) == [
            f"TLS files in {p1} changed but cannot be used, keeping the previous ones:"
            f" TLS file {p1 / 'tls.key'} does not match the certificate in {p1 / 'tls.crt'}"
        ]
        assert reload_failures(failures) == 1

        # The certificate written in place, half of it so far: another state, one more.
        with (p1 / "tls.crt").open("wb") as half:
            half.write(cert[: len(cert) // 2])
            half.flush()
            for _ in range(2):
                assert await asyncio.to_thread(presented, replica.port, edge) == first
            warned = messages(caplog, p1, logging.WARNING)
            assert len(warned) == 2
            assert warned[1].endswith(f"TLS file {p1 / 'tls.crt'} is not a PEM certificate")
            assert reload_failures(failures) == 2
            half.write(cert[len(cert) // 2 :])

        # Complete: the next handshake takes the new pair, and says so once.
        assert await asyncio.to_thread(presented, replica.port, edge) == serial(pair)
        assert await asyncio.to_thread(presented, replica.port, edge) == serial(pair)
        assert len(messages(caplog, p1, logging.INFO)) == 1
        assert len(messages(caplog, p1, logging.WARNING)) == 2
        # Through all of it the agent's session went on.
        await receives(replica, agent, "still-here")
        assert agent.session_id == session


# --- CA rotation with a bundle -------------------------------------------------------------


async def test_a_ca_rotates_through_a_bundle(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    old_ca = pki.load_ca(pki_dir)
    pki.init_ca(tmp_path / "pki-new")
    new_ca = pki.load_ca(tmp_path / "pki-new")
    p1 = pki_dir / "principals" / "p1"
    first = serial((p1 / "tls.crt").read_bytes())
    old_edge = pki_dir / "agents" / "edge"  # an old-CA certificate
    late = pki.issue_agent(pki_dir, name="late")  # another, dialling only later
    fresh = pki.issue_agent(tmp_path / "pki-new", name="fresh")  # a new-CA certificate
    install(fresh, cas=[old_ca, new_ca])  # it must trust the replica's old-CA certificate

    async with (
        serving(pki_dir, etcd, root=root, auto_register=True) as replica,
        running(replica, "edge", old_edge, tmp_path) as old_agent,
    ):
        await welcomed(old_agent)
        session = old_agent.session_id

        async with running(replica, "fresh", fresh, tmp_path) as new_agent:
            # Before: the replica trusts the old CA only, a new-CA certificate is refused.
            await until(lambda: tls_errors(new_agent) >= 1, within=10, what="a TLS refusal")
            assert not new_agent.welcomed.is_set()

            # 1. The new CA joins every bundle (replica and agents), no restart.
            install(p1, cas=[old_ca, new_ca])
            for folder in (old_edge, late):
                install(folder, cas=[old_ca, new_ca])
            await welcomed(new_agent)
        async with running(replica, "late", late, tmp_path) as agent:
            await welcomed(agent)  # an old-CA certificate still gets in

        # 2. The replica's leaf is reissued from the new CA; agents trusting both accept it.
        pair = new_pair(new_ca, "p1", principal=True)
        install(p1, pair=pair)
        assert await asyncio.to_thread(presented, replica.port, fresh) == serial(pair)
        for name, folder in (("late", late), ("fresh", fresh)):
            async with running(replica, name, folder, tmp_path) as agent:
                await welcomed(agent)

        # 3. The old CA is dropped from the replica's bundle.
        install(p1, cas=[new_ca])
        async with running(replica, "late", late, tmp_path) as agent:
            # A new handshake with an old-CA certificate is refused...
            await until(lambda: tls_errors(agent) >= 2, within=10, what="TLS refusals")
            assert not agent.welcomed.is_set()
        async with running(replica, "fresh", fresh, tmp_path) as agent:
            await welcomed(agent)  # ...a new-CA one gets in...
        # ...and the old-CA session opened before step 3 goes on over its connection.
        await receives(replica, old_agent, "old-ca-session")
        assert old_agent.welcomed.is_set() and old_agent.session_id == session

    said = [m.split(" reloaded: ", 1)[1] for m in messages(caplog, p1, logging.INFO)]
    assert [(m.split(",")[0], m.rsplit("; ", 1)[1]) for m in said] == [
        (f"serving certificate serial {first}", "2 CA certificate(s) trusted"),  # 1
        (f"serving certificate serial {serial(pair)}", "2 CA certificate(s) trusted"),  # 2
        (f"serving certificate serial {serial(pair)}", "1 CA certificate(s) trusted"),  # 3
    ]
    assert messages(caplog, p1, logging.WARNING) == []


# --- the agent's own pair ------------------------------------------------------------------


async def test_an_agents_new_pair_is_presented_at_its_next_dial(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    ca = pki.load_ca(pki_dir)
    edge = pki_dir / "agents" / "edge"
    first = serial((edge / "tls.crt").read_bytes())
    async with (
        serving(pki_dir, etcd, root=root, auto_register=True) as replica,
        running(replica, "edge", edge, tmp_path) as agent,
    ):
        await welcomed(agent)
        session = agent.session_id
        opened = replica.sessions.sessions["edge"]
        assert opened.certificate is not None and opened.certificate.serial == first

        pair = new_pair(ca, "edge")
        install(edge, pair=pair)
        # The open session goes on, with the certificate it was opened with.
        await receives(replica, agent, "before-redial")
        assert agent.session_id == session

        # Revoke the old certificate: the replica closes that session, and the agent's
        # next dial is a new handshake with the new certificate (a cached channel would
        # still carry the old one, and be refused as revoked).
        await replica.desired.revoke(serial=first, reason="rotated", agent="edge")
        await until(
            lambda: agent.welcomed.is_set() and agent.session_id != session,
            within=10,
            what="a new session",
        )
        now = replica.sessions.sessions["edge"]
        assert now.certificate is not None and now.certificate.serial == serial(pair)
        assert rejected(replica, "revoked") == 0  # its first redial already had the new one
        assert agent.refused is None
        await receives(replica, agent, "after-redial")

    assert messages(caplog, edge, logging.INFO) == [
        f"TLS files in {edge} reloaded: client certificate serial {serial(pair)}, valid until"
        f" {until_iso(pair)}; 1 CA certificate(s) trusted"
    ]


async def test_an_agent_keeps_its_pair_while_new_files_are_bad(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    edge = pki_dir / "agents" / "edge"
    failures: list[None] = []
    creds = credentials.ReloadingCredentials(edge, on_failure=lambda: failures.append(None))
    before = creds.current()
    replace(edge / "tls.key", pki.private_key_pem(pki.generate_key()))  # another key

    async with serving(pki_dir, etcd, root=root) as replica:
        for _ in range(3):  # three dials: the old credentials, one warning
            assert creds.current() is before
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{replica.port}", creds.current()
            ) as channel:
                got = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                assert got.status == health_pb2.HealthCheckResponse.SERVING
    assert creds.generation == 0
    assert len(failures) == 1
    assert messages(caplog, edge, logging.WARNING) == [
        f"TLS files in {edge} changed but cannot be used, keeping the previous ones:"
        f" TLS file {edge / 'tls.key'} does not match the certificate in {edge / 'tls.crt'}"
    ]
    # Rewritten with the same bytes as in use: nothing to reload, nothing to say.
    replace(edge / "tls.key", creds.files.private_key)
    assert creds.current() is before and creds.generation == 0
    assert messages(caplog, edge, logging.INFO) == []


def test_a_reload_never_raises_into_its_caller(
    pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """grpc calls the server's fetcher inside a handshake: whatever goes wrong, poll says
    None (keep what you have) and warns once per state of the files."""
    edge = pki_dir / "agents" / "edge"
    built: list[credentials.TlsFiles] = []

    def build(files: credentials.TlsFiles) -> credentials.TlsFiles:
        if built:
            raise RuntimeError("cannot build that")
        built.append(files)
        return files

    def failing_metric() -> None:
        raise RuntimeError("metric down")

    reloader = credentials.TlsReloader(edge, build=build, role="client", on_failure=failing_metric)
    install(edge, pair=new_pair(pki.load_ca(pki_dir), "edge"))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert [reloader.poll() for _ in range(3)] == [None, None, None]
    assert reloader.current() is built[0] and reloader.generation == 0
    assert messages(caplog, edge, logging.WARNING) == [
        f"TLS files in {edge} changed but cannot be used, keeping the previous ones:"
        " cannot build that"
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "TLS reload failure callback failed"
    ]
