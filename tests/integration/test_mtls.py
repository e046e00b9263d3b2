"""mTLS against a real grpc.aio server on loopback: who gets in, who is who, and which TLS.

The server is the real thing (`proto._credentials.server_credentials`) with a generic
unary handler that answers `<peer_identity>|<negotiated TLS version>`; no generated
stubs are involved. A raw `ssl` client (with a hand-written HTTP/2 request) shows what
grpc negotiates with a client capped at TLS 1.2, since grpcio cannot set a minimum.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from principal import _pki as pki
from proto import _credentials as credentials

SERVICE = "mooring.test.Probe"
METHOD = f"/{SERVICE}/Whoami"
AGENT = "edge-1"
TIMEOUT = 5.0


# --- fixtures: one PKI, one server per test ------------------------------------------------


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory)
    pki.issue_principal(directory, name="p0", sans=["localhost", "127.0.0.1", "::1"])
    pki.issue_agent(directory, name=AGENT)
    ca = pki.load_ca(directory)
    now = datetime.datetime.now(datetime.UTC)

    expired, key = pki.issue_certificate(
        common_name="late",
        issuer=ca,
        uris=[pki.agent_spiffe_id("late")],
        client_auth=True,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
    )
    pki.write_tls_dir(
        directory / "expired", certificate=expired, key=key, ca_certificate=ca.certificate
    )

    # Another CA with the very same subject name; its agent trusts our CA, so the client
    # side of the handshake is happy and only the server's verification can say no.
    other_cert, other_key = pki.issue_certificate(common_name=pki.CA_COMMON_NAME, is_ca=True)
    other = pki.CertificateAuthority(certificate=other_cert, key=other_key)
    stranger, key = pki.issue_certificate(
        common_name=AGENT, issuer=other, uris=[pki.agent_spiffe_id(AGENT)], client_auth=True
    )
    pki.write_tls_dir(
        directory / "stranger", certificate=stranger, key=key, ca_certificate=ca.certificate
    )

    server_only, key = pki.issue_certificate(
        common_name="srv", issuer=ca, uris=[pki.agent_spiffe_id("srv")], server_auth=True
    )
    pki.write_tls_dir(
        directory / "server-only", certificate=server_only, key=key, ca_certificate=ca.certificate
    )

    plain_cn, key = pki.issue_certificate(common_name="legacy-7", issuer=ca, client_auth=True)
    pki.write_tls_dir(
        directory / "plain-cn", certificate=plain_cn, key=key, ca_certificate=ca.certificate
    )
    return directory


class Probe:
    """A real grpc.aio server whose one method reports what the server saw of its caller."""

    def __init__(self) -> None:
        self.calls = 0
        self.port = 0
        self.server = grpc.aio.server()

    async def whoami(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        self.calls += 1
        auth = context.auth_context()
        version = b"".join(auth.get("ssl_tls_version", [])).decode()
        return f"{credentials.peer_identity(context) or ''}|{version}".encode()

    async def start(self, tls_dir: Path) -> None:
        handler = grpc.unary_unary_rpc_method_handler(self.whoami)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler(SERVICE, {"Whoami": handler})]
        )
        self.port = self.server.add_secure_port(
            "127.0.0.1:0", credentials.server_credentials(tls_dir)
        )
        await self.server.start()


@pytest.fixture
async def probe(pki_dir: Path) -> AsyncIterator[Probe]:
    probe = Probe()
    await probe.start(pki_dir / "principals" / "p0")
    try:
        yield probe
    finally:
        await probe.server.stop(None)


async def call(port: int, channel_credentials: grpc.ChannelCredentials) -> str:
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials) as channel:
        reply: bytes = await channel.unary_unary(METHOD)(b"", timeout=TIMEOUT)
        return reply.decode()


# --- gRPC clients --------------------------------------------------------------------------


@pytest.mark.integration
async def test_a_good_agent_is_identified_by_name_over_tls13(probe: Probe, pki_dir: Path) -> None:
    creds = credentials.channel_credentials(pki_dir / "agents" / AGENT)

    assert await call(probe.port, creds) == f"{AGENT}|TLSv1.3"


@pytest.mark.integration
async def test_a_cn_only_certificate_is_identified_by_its_cn(probe: Probe, pki_dir: Path) -> None:
    creds = credentials.channel_credentials(pki_dir / "plain-cn")

    assert await call(probe.port, creds) == "legacy-7|TLSv1.3"


@pytest.mark.integration
async def test_a_principal_certificate_is_no_agent(probe: Probe, pki_dir: Path) -> None:
    """Valid client certificate, but its SPIFFE ID says principal: connected, no identity."""
    creds = credentials.channel_credentials(pki_dir / "principals" / "p0")

    assert await call(probe.port, creds) == "|TLSv1.3"


def no_client_certificate(pki_dir: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=(pki_dir / "ca.crt").read_bytes())


def folder(name: str) -> Callable[[Path], grpc.ChannelCredentials]:
    return lambda pki_dir: credentials.channel_credentials(pki_dir / name)


@pytest.mark.integration
@pytest.mark.parametrize(
    "make_credentials",
    [no_client_certificate, folder("stranger"), folder("expired"), folder("server-only")],
    ids=["no-client-certificate", "another-ca", "expired", "no-client-auth-eku"],
)
async def test_rejected_at_the_tls_layer(
    probe: Probe,
    pki_dir: Path,
    make_credentials: Callable[[Path], grpc.ChannelCredentials],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call(probe.port, make_credentials(pki_dir))

    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == 0  # never reached the application


@pytest.mark.integration
async def test_client_refuses_a_server_from_another_ca(pki_dir: Path, tmp_path: Path) -> None:
    other = pki.init_ca(tmp_path).parent
    probe = Probe()
    await probe.start(pki.issue_principal(other, name="p0", sans=["127.0.0.1"]))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call(probe.port, credentials.channel_credentials(pki_dir / "agents" / AGENT))
    finally:
        await probe.server.stop(None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert probe.calls == 0


# --- raw TLS: what the server negotiates ---------------------------------------------------


def tls_client(pki_dir: Path, *, maximum: ssl.TLSVersion, cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
    context.maximum_version = maximum
    if cert:
        agent = pki_dir / "agents" / AGENT
        context.load_cert_chain(agent / "tls.crt", agent / "tls.key")
    context.set_alpn_protocols(["h2"])
    return context


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload
    )


def _literal(name: bytes, value: bytes) -> bytes:
    """HPACK literal header field without indexing, new name, no Huffman (short strings)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


def _read_exact(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


def grpc_call_over(context: ssl.SSLContext, port: int) -> tuple[str, str]:
    """One unary gRPC call over a plain `ssl` socket: (negotiated TLS version, reply)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.selected_alpn_protocol() == "h2"
        version = sock.version() or ""
        headers = b"\x83\x87"  # :method POST, :scheme https (HPACK static table)
        headers += _literal(b":path", METHOD.encode()) + _literal(b":authority", b"localhost")
        headers += _literal(b"content-type", b"application/grpc") + _literal(b"te", b"trailers")
        sock.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(0x4, 0, 0)  # SETTINGS
            + _frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
            + _frame(0x0, 0x1, 1, b"\x00" + (0).to_bytes(4, "big"))  # DATA: empty message
        )
        body = b""
        while True:
            header = _read_exact(sock, 9)
            length, kind, flags = int.from_bytes(header[:3], "big"), header[3], header[4]
            stream = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
            payload = _read_exact(sock, length)
            if kind == 0x4 and not flags & 0x1:
                sock.sendall(_frame(0x4, 0x1, 0))  # SETTINGS ACK
            elif kind == 0x0 and stream == 1:
                body += payload
            if (
                stream == 1 and (flags & 0x1 or kind == 0x3)
            ) or kind == 0x7:  # END_STREAM/RST/GOAWAY
                break
        return version, body[5:].decode()


@pytest.mark.integration
async def test_server_negotiates_tls13_with_a_modern_client(probe: Probe, pki_dir: Path) -> None:
    context = tls_client(pki_dir, maximum=ssl.TLSVersion.MAXIMUM_SUPPORTED)

    version, reply = await asyncio.to_thread(grpc_call_over, context, probe.port)

    assert (version, reply) == ("TLSv1.3", f"{AGENT}|TLSv1.3")


@pytest.mark.integration
async def test_tls12_client_handshakes_but_gets_no_identity(probe: Probe, pki_dir: Path) -> None:
    """The documented limit: grpcio cannot refuse TLS 1.2 in the handshake (no minimum-version
    setting in Python); `peer_identity` refuses such a peer instead. When this test fails
    because the handshake is refused, grpcio has grown the setting: use it in _credentials."""
    context = tls_client(pki_dir, maximum=ssl.TLSVersion.TLSv1_2)

    version, reply = await asyncio.to_thread(grpc_call_over, context, probe.port)

    assert version == "TLSv1.2"  # grpc's default policy: TLS 1.2 minimum
    assert reply == "|TLSv1.2"  # the server saw TLS 1.2 and gave the agent no identity
    assert probe.calls == 1


def handshake_and_read(context: ssl.SSLContext, port: int) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0))
        return sock.recv(1024)


@pytest.mark.integration
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_no_client_certificate_gets_no_http2_at_all(
    probe: Probe, pki_dir: Path, maximum: ssl.TLSVersion
) -> None:
    """Without a client certificate the server ends the TLS session before any HTTP/2:
    in TLS 1.2 the handshake itself fails; in 1.3 the client finishes first, then the
    server's alert (or close) arrives instead of the server's SETTINGS frame."""
    context = tls_client(pki_dir, maximum=maximum, cert=False)

    try:
        received = await asyncio.to_thread(handshake_and_read, context, probe.port)
    except (ssl.SSLError, ConnectionError):
        received = b""
    assert received == b""
    assert probe.calls == 0


# --- the TLS folder ------------------------------------------------------------------------


def test_load_tls_dir_reads_the_three_files(pki_dir: Path) -> None:
    agent = pki_dir / "agents" / AGENT

    files = credentials.load_tls_dir(agent)

    assert files.directory == agent
    assert files.certificate_chain == (agent / "tls.crt").read_bytes()
    assert files.private_key == (agent / "tls.key").read_bytes()
    assert files.root_certificates == (agent / "ca.crt").read_bytes()


def copy_agent(pki_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "tls"
    target.mkdir()
    for name in ("tls.crt", "tls.key", "ca.crt"):
        (target / name).write_bytes((pki_dir / "agents" / AGENT / name).read_bytes())
    return target


@pytest.mark.parametrize("name", ["tls.crt", "tls.key", "ca.crt"])
def test_a_missing_file_is_named(pki_dir: Path, tmp_path: Path, name: str) -> None:
    tls_dir = copy_agent(pki_dir, tmp_path)
    (tls_dir / name).unlink()

    with pytest.raises(credentials.CredentialsError) as err:
        credentials.server_credentials(tls_dir)

    assert str(err.value) == f"TLS file {tls_dir / name} is missing"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("tls.crt", b"garbage", "is not a PEM certificate"),
        ("ca.crt", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "is not a"),
        ("tls.key", b"garbage", "is not a PEM private key"),
        ("tls.key", b"", "is empty"),
    ],
)
def test_a_garbled_file_is_named(
    pki_dir: Path, tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    tls_dir = copy_agent(pki_dir, tmp_path)
    (tls_dir / name).write_bytes(content)

    with pytest.raises(credentials.CredentialsError) as err:
        credentials.channel_credentials(tls_dir)

    assert str(err.value).startswith(f"TLS file {tls_dir / name} {message}")
    assert "\n" not in str(err.value)


def test_an_unreadable_file_is_named(pki_dir: Path, tmp_path: Path) -> None:
    tls_dir = copy_agent(pki_dir, tmp_path)
    (tls_dir / "tls.key").unlink()
    (tls_dir / "tls.key").mkdir()  # unreadable as a file, whoever runs the test (even root)

    with pytest.raises(credentials.CredentialsError, match=r"cannot read TLS file .*tls\.key"):
        credentials.load_tls_dir(tls_dir)


def test_a_key_from_another_certificate_is_named(pki_dir: Path, tmp_path: Path) -> None:
    tls_dir = copy_agent(pki_dir, tmp_path)
    (tls_dir / "tls.key").write_bytes(pki.private_key_pem(pki.generate_key()))

    with pytest.raises(credentials.CredentialsError, match=r"tls\.key does not match"):
        credentials.load_tls_dir(tls_dir)


def test_a_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(credentials.CredentialsError, match=r"TLS directory .*nope does not exist"):
        credentials.load_tls_dir(tmp_path / "nope")


# --- identity from an auth context ---------------------------------------------------------


def auth(**properties: list[bytes]) -> dict[str, list[bytes]]:
    return {"transport_security_type": [b"ssl"], "ssl_tls_version": [b"TLSv1.3"], **properties}


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        (auth(peer_uri=[b"spiffe://mooring/agent/edge-1"], x509_common_name=[b"x"]), "edge-1"),
        (auth(x509_subject_alternative_name=[b"spiffe://mooring/agent/edge-1"]), "edge-1"),
        (auth(x509_common_name=[b"edge-2"]), "edge-2"),
        (auth(peer_uri=[b"https://example.com/"], x509_common_name=[b"edge-2"]), "edge-2"),
        (auth(peer_uri=[b"spiffe://mooring/principal/p0"], x509_common_name=[b"p0"]), None),
        (auth(peer_uri=[b"spiffe://mooring/agent/a", b"spiffe://mooring/agent/b"]), None),
        (auth(peer_uri=[b"spiffe://mooring/agent/Bad_Name"]), None),
        (auth(peer_uri=[b"spiffe://mooring/agent/a/b"]), None),
        (auth(x509_common_name=[b"Not A Name"]), None),
        (auth(x509_common_name=[b"a", b"b"]), None),
        (auth(), None),
        ({"x509_common_name": [b"edge-1"]}, None),  # not a TLS connection
        ({**auth(x509_common_name=[b"edge-1"]), "ssl_tls_version": [b"TLSv1.2"]}, None),
        ({**auth(x509_common_name=[b"edge-1"]), "ssl_tls_version": [b"weird"]}, None),
        ({**auth(x509_common_name=[b"edge-1"]), "ssl_tls_version": []}, "edge-1"),
    ],
)
def test_identity_from_auth_context(context: dict[str, list[bytes]], expected: str | None) -> None:
    assert credentials.identity_from_auth_context(context) == expected
