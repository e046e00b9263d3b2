"""Revoked certificates and unregistered agents, on real parts: a principal replica in this
process on the session's etcd, real mTLS, real agents, and the real `mooring` CLI.

- `mooring pki revoke` puts a certificate on the hub's revocation list; the replica closes
  the open session of that certificate within seconds and refuses its reconnects
  (`revoked`, a refusal the agent knows no retry cures), while other agents go on.
- Without `auto_register` (the default) an agent nobody registered is refused
  (`not_registered`) until `mooring agent create` names it; with it, it registers itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from mooring import _services as services
from principal import _pki as pki
from principal import _server as server
from proto import _credentials as credentials
from tests import _procs as procs
from tests.election._helpers import until
from tests.integration._agents import rejected, running, serving

pytestmark = pytest.mark.integration

RETRY = 1.0  # the agents' refused_retry_interval, seconds


def replica_on(
    pki_dir: Path, etcd: services.EtcdCluster, root: str, *, auto_register: bool = False
) -> contextlib.AbstractAsyncContextManager[server.Replica]:
    return serving(pki_dir, etcd, root=root, auto_register=auto_register)


@pytest.fixture
def root() -> str:
    return f"/revocation-{uuid.uuid4().hex[:8]}/"


def closed(replica: server.Replica, reason: str) -> float:
    return replica.metrics.sessions_closed.labels(reason)._value.get()


async def cli(
    etcd: services.EtcdCluster, root: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {"MOORING_STORE": etcd.url, "MOORING_STORE_ROOT": root}
    return await asyncio.to_thread(procs.mooring, *args, check=check, env=env)


def ids(tls_dir: Path) -> credentials.CertificateId:
    from cryptography import x509

    return credentials.certificate_id(
        x509.load_pem_x509_certificate((tls_dir / "tls.crt").read_bytes())
    )


async def test_a_revoked_certificates_session_is_closed_and_its_reconnects_refused(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with replica_on(pki_dir, etcd, root) as replica:
        for name in ("agent-a", "agent-b"):
            await replica.desired.register_agent(name, mode="managed")
        agents = pki_dir / "agents"
        async with (
            running(
                replica, "agent-a", agents / "agent-a", tmp_path / "a.db", interval=RETRY
            ) as leaked,
            running(
                replica, "agent-b", agents / "agent-b", tmp_path / "b.db", interval=RETRY
            ) as other,
        ):
            await asyncio.wait_for(leaked.welcomed.wait(), 10)
            await asyncio.wait_for(other.welcomed.wait(), 10)
            kept = other.session_id
            before = rejected(replica, "revoked")
            caplog.set_level(logging.INFO)

            cert = ids(agents / "agent-a")
            said = await cli(
                etcd, root, "pki", "revoke", "--cert", str(agents / "agent-a" / "tls.crt"),
                "--reason", "laptop lost",
            )  # fmt: skip
            revoked_at = time.monotonic()
            assert said.stdout == (
                f"certificate revoked (serial {cert.serial}, fingerprint {cert.fingerprint},"
                " agent agent-a)\n"
            )
            # The open session is closed (the agent hears why), within a second or two.
            await until(
                lambda: closed(replica, "revoked") == 1, within=5, what="the session closed"
            )
            took = time.monotonic() - revoked_at
            assert took < 3.0, took
            # Its redials are refused for good: `revoked`, with the fix, every RETRY seconds.
            await until(
                lambda: leaked.refused == "revoked" and rejected(replica, "revoked") >= before + 2,
                within=5 * RETRY,
                what="the agent refused as revoked, twice",
            )
            assert "agent-a" not in replica.sessions.sessions
            [error] = [
                r.getMessage()
                for r in caplog.records
                if r.name == "agent._refusals" and r.levelno == logging.ERROR
            ]
            assert (
                f"(revoked: UNAUTHENTICATED: certificate revoked (serial {cert.serial}, revoked "
                in error
            )
            assert error.endswith(
                "): laptop lost); to fix: the certificate was revoked: issue a new one with"
                " `mooring pki issue agent --name agent-a`; retrying every 1s"
            )
            closing = [r.getMessage() for r in caplog.records if r.name == "principal._revocations"]
            assert closing and closing[0].startswith("agent agent-a: closing session ")
            # The other agent goes on in the session it had.
            assert other.welcomed.is_set() and other.session_id == kept
            assert "agent-b" in replica.sessions.sessions

            # The list, as people read it.
            table = (await cli(etcd, root, "pki", "revocations")).stdout.splitlines()
            assert table[0].split() == ["SERIAL", "FINGERPRINT", "AGENT", "AGE", "REASON"]
            assert table[1].split()[:3] == [cert.serial, cert.fingerprint[:16], "agent-a"]
            assert table[1].endswith("laptop lost")
            listed = json.loads((await cli(etcd, root, "pki", "revocations", "-o", "json")).stdout)
            assert [(e["serial"], e["fingerprint"], e["reason"]) for e in listed["items"]] == [
                (cert.serial, cert.fingerprint, "laptop lost")
            ]


async def test_a_certificate_revoked_by_serial_is_refused_at_its_first_hello(
    pki_dir: Path, etcd: services.EtcdCluster, root: str, tmp_path: Path
) -> None:
    name = f"serial-{uuid.uuid4().hex[:6]}"
    tls_dir = pki.issue_agent(pki_dir, name=name)
    cert = ids(tls_dir)
    colons = ":".join(f"{int(cert.serial, 16):040x}"[i : i + 2] for i in range(0, 40, 2))
    said = await cli(etcd, root, "pki", "revoke", "--serial", colons.upper())
    assert said.stdout == f"certificate revoked (serial {cert.serial})\n"
    again = await cli(etcd, root, "pki", "revoke", "--serial", cert.serial)
    assert again.stdout.startswith(f"certificate already revoked (serial {cert.serial}; since ")
    async with replica_on(pki_dir, etcd, root) as replica:
        await replica.desired.register_agent(name, mode="managed")
        async with running(replica, name, tls_dir, tmp_path / "s.db", interval=RETRY) as agent:
            await until(lambda: agent.refused == "revoked", within=5, what="refused as revoked")
            assert not agent.welcomed.is_set()


async def test_an_unregistered_agent_is_refused_until_it_is_created(
    pki_dir: Path,
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    async with replica_on(pki_dir, etcd, root) as replica:
        tls_dir = pki_dir / "agents" / "steady"
        async with running(
            replica, "steady", tls_dir, tmp_path / "u.db", mode="autonomous", interval=RETRY
        ) as agent:
            await until(
                lambda: agent.refused == "not_registered", within=5, what="refused, unregistered"
            )
            assert rejected(replica, "not_registered") >= 1
            assert await replica.desired.get_agent("steady") is None  # nothing registered
            [error] = [
                r.getMessage()
                for r in caplog.records
                if r.name == "agent._refusals" and r.levelno == logging.ERROR
            ]
            assert "(not_registered: PERMISSION_DENIED: agent steady is not registered" in error
            assert (
                "to fix: register it with `mooring agent create steady --mode autonomous`" in error
            )
            await cli(etcd, root, "agent", "create", "steady", "--mode", "autonomous")
            await asyncio.wait_for(agent.welcomed.wait(), RETRY + 5)
            assert agent.refused is None


async def test_with_auto_registration_an_unknown_agent_registers_by_connecting(
    pki_dir: Path, etcd: services.EtcdCluster, root: str, tmp_path: Path
) -> None:
    async with replica_on(pki_dir, etcd, root, auto_register=True) as replica:
        tls_dir = pki_dir / "agents" / "steady"
        async with running(replica, "steady", tls_dir, tmp_path / "r.db", interval=RETRY) as agent:
            await asyncio.wait_for(agent.welcomed.wait(), 10)
        record = await replica.desired.get_agent("steady")
        assert record is not None and record.mode == "managed"


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (["--serial", "not-hex"], 2, "mooring: pki revoke: bad serial 'not-hex': expected"),
        (["--fingerprint", "abcd"], 2, "mooring: pki revoke: bad fingerprint 'abcd': expected"),
        ([], 2, "mooring: pki revoke: one of the arguments --serial --fingerprint --cert is"),
        (["--serial", "1", "--cert", "x"], 2, "mooring: pki revoke: argument --cert: not allowed"),
        (["--cert", "/nonexistent/tls.crt"], 1, "mooring: error: cannot read /nonexistent/tls.crt"),
        (["--cert", "NOT_PEM"], 1, "is not a PEM certificate"),
    ],
)
async def test_bad_revocations_are_one_line_and_write_nothing(
    etcd: services.EtcdCluster,
    root: str,
    tmp_path: Path,
    args: list[str],
    code: int,
    error: str,
) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("hello\n")
    args = [str(junk) if a == "NOT_PEM" else a for a in args]
    said = await cli(etcd, root, "pki", "revoke", *args, check=False)
    assert (said.returncode, said.stdout) == (code, "")
    assert len(said.stderr.splitlines()) == 1, said.stderr
    assert error in said.stderr
    listed = await cli(etcd, root, "pki", "revocations")
    assert (listed.stdout, listed.stderr) == ("", "no certificates revoked\n")
