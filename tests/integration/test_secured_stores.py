"""Secured stores on real servers: etcd 3.6 over TLS with client certificates, etcd 3.6
over TLS with users (`auth enable`), and Redis 7 over TLS with an ACL user.

- `EtcdKV` reads, writes, transacts and watches over TLS; a user's token that etcd has
  let lapse is renewed, for calls and for watches (aetcd alone never renews it).
- A full replica serves an agent with its coordination and hub store on TLS + auth
  etcd and its holds on rediss:// with an ACL user; `mooring status` and `mooring agent
  list` read that cluster with the `--etcd-*` flags.
- Each refusal (wrong CA, no or a foreign client certificate, a wrong name, a wrong
  password, no user, no role, plaintext on either side) is one line naming etcd and the
  endpoint; bad flag values are usage errors (exit 2).
- No password reaches a log record, a metric, the status document or an error.

Certificates are made with principal/_pki.py; etcd's users and roles are created over
its JSON gateway before `auth enable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import json
import logging
import sys
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from election import _errors as errors
from election import _etcd as etcd
from mooring import _cli as cli
from mooring import _services as services
from principal import _pki as pki
from principal import _registry as registry
from principal import _server as server
from tests import _argocd as argocd
from tests import _procs as procs
from tests import _testbed as testbed
from tests._poll import answered, eventually
from tests.integration._agents import running

pytestmark = pytest.mark.integration

ETCD_PASSWORD = "etcd-Pw-7f3a9c"
REDIS_PASSWORD = "redis-Pw-41d2e8"
ROOT_PASSWORD = "root-Pw-90b1"
TOKEN_TTL = 2
"""Seconds etcd keeps an idle token (--auth-token-ttl; etcd's default is 300)."""


@dataclasses.dataclass(frozen=True)
class Files:
    ca: Path  # signed every server and the good client certificate
    other_ca: Path  # signed nothing these servers know
    server: Path  # tls.crt, tls.key: names 127.0.0.1 and localhost
    client: Path  # tls.crt, tls.key: clientAuth, from `ca`
    foreign: Path  # tls.crt, tls.key: clientAuth, from `other_ca`
    etcd_password: Path
    redis_password: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("secured")
    ca_cert, ca_key = pki.issue_certificate(common_name="stores CA", is_ca=True)
    ca = pki.CertificateAuthority(certificate=ca_cert, key=ca_key)
    other_cert, other_key = pki.issue_certificate(common_name="stores CA", is_ca=True)
    other = pki.CertificateAuthority(certificate=other_cert, key=other_key)
    cert, key = pki.issue_certificate(
        common_name="stores",
        issuer=ca,
        dns_names=["localhost"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
        server_auth=True,
    )
    pki.write_tls_dir(root / "server", certificate=cert, key=key, ca_certificate=ca_cert)
    cert, key = pki.issue_certificate(common_name="mooring-client", issuer=ca, client_auth=True)
    pki.write_tls_dir(root / "client", certificate=cert, key=key, ca_certificate=ca_cert)
    cert, key = pki.issue_certificate(common_name="mooring-client", issuer=other, client_auth=True)
    pki.write_tls_dir(root / "foreign", certificate=cert, key=key, ca_certificate=other_cert)
    (root / "other-ca.crt").write_bytes(pki.certificate_pem(other_cert))
    (root / "etcd-password").write_text(ETCD_PASSWORD + "\n")  # as `echo` writes it
    (root / "redis-password").write_text(REDIS_PASSWORD)
    return Files(
        ca=root / "server" / "ca.crt",
        other_ca=root / "other-ca.crt",
        server=root / "server",
        client=root / "client",
        foreign=root / "foreign",
        etcd_password=root / "etcd-password",
        redis_password=root / "redis-password",
    )


def server_tls(files: Files, *, client_certificates: bool) -> services.ServerTLS:
    return services.ServerTLS(
        cert=files.server / "tls.crt",
        key=files.server / "tls.key",
        ca=files.ca,
        client_ca=files.ca if client_certificates else None,
    )


@pytest.fixture(scope="module")
def etcd_mtls(
    files: Files, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[services.EtcdCluster]:
    """etcd 3.6 that takes TLS clients with a certificate from `files.ca` only."""
    testbed.require("etcd")
    cluster = services.EtcdCluster(
        tmp_path_factory.mktemp("etcd-mtls"),
        binary=str(testbed.binary("etcd")),
        tls=server_tls(files, client_certificates=True),
    ).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def etcd_auth(
    files: Files, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[services.EtcdCluster]:
    """etcd 3.6 over TLS (no client certificates) with auth on: root, and user `mooring`
    whose role may read and write the /mooring/ prefix only. Tokens lapse after TOKEN_TTL
    seconds without a request."""
    testbed.require("etcd")
    cluster = services.EtcdCluster(
        tmp_path_factory.mktemp("etcd-auth"),
        binary=str(testbed.binary("etcd")),
        tls=server_tls(files, client_certificates=False),
        extra_args=("--auth-token-ttl", str(TOKEN_TTL)),
    ).start()
    auth = services.EtcdAuth(cluster.root / "auth")
    auth.directory.mkdir()
    auth.root_password_file.write_text(ROOT_PASSWORD)
    auth.password_file.write_text(ETCD_PASSWORD)
    try:
        cluster.enable_auth(auth)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def redis_acl(files: Files, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Redis 7 over TLS only, user `mooring` (the default user is off): its URL."""
    server_ = services.RedisServer(
        tmp_path_factory.mktemp("redis-acl"),
        tls=server_tls(files, client_certificates=False),
        user="mooring",
        password=REDIS_PASSWORD,
    ).start()
    try:
        yield server_.url
    finally:
        server_.stop()


def mtls_url(cluster: services.EtcdCluster, files: Files) -> str:
    return f"{cluster.url}&cert={files.client}/tls.crt&key={files.client}/tls.key"


def user_url(cluster: services.EtcdCluster, files: Files) -> str:
    return f"{cluster.url}&user=mooring&password-file={files.etcd_password}"


async def watching(
    kv: etcd.EtcdKV, prefix: bytes, into: list[etcd.WatchEvent]
) -> asyncio.Task[None]:
    """A task collecting every change under prefix from now on (from the next revision,
    so that none is missed while the watch is being created)."""
    start = await kv.revision(prefix) + 1

    async def collect() -> None:
        async for event in kv.watch_prefix(prefix, start_revision=start):
            into.append(event)

    return asyncio.create_task(collect())


# --- etcd over TLS ---------------------------------------------------------------------------


async def test_tls_with_a_client_certificate_reads_writes_and_watches(
    etcd_mtls: services.EtcdCluster, files: Files
) -> None:
    async with etcd.EtcdKV.open(mtls_url(etcd_mtls, files), timeout=3.0, env={}) as kv:
        events: list[etcd.WatchEvent] = []
        watch = await watching(kv, b"/tls/", events)
        try:
            revision = await kv.put(b"/tls/a", b"1")
            got = await kv.get(b"/tls/a")
            assert got is not None and got.value == b"1" and got.mod_revision == revision
            created = await kv.create(b"/tls/b", b"x")
            assert created is not None and await kv.create(b"/tls/b", b"y") is None
            assert await kv.update(b"/tls/b", b"z", mod_revision=created) is not None
            items, at = await kv.get_prefix(b"/tls/")
            assert [(i.key, i.value) for i in items] == [(b"/tls/a", b"1"), (b"/tls/b", b"z")]
            assert await kv.revision(b"/tls/a") == at
            await eventually(lambda: len(events), until=lambda n: n >= 3, what="three watch events")
            assert [(e.kind, e.key) for e in events[:3]] == [
                (etcd.WatchKind.PUT, b"/tls/a"),
                (etcd.WatchKind.PUT, b"/tls/b"),
                (etcd.WatchKind.PUT, b"/tls/b"),
            ]
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch


async def test_several_tls_members_are_one_connection_that_survives_the_loss_of_one(
    files: Files, tmp_path: Path
) -> None:
    """Several members are one gRPC channel (an `ipv4:` target): every certificate is
    checked against one name, the first endpoint's host (here 127.0.0.1, an IP SAN)."""
    testbed.require("etcd")
    cluster = services.EtcdCluster(
        tmp_path / "etcd3",
        members=3,
        binary=str(testbed.binary("etcd")),
        tls=server_tls(files, client_certificates=False),
    ).start()
    try:
        assert cluster.url.startswith("etcds://" + ",".join(cluster.endpoints) + "?ca=")
        async with etcd.EtcdKV.open(cluster.url, timeout=3.0, env={}) as kv:
            await kv.put(b"/three/a", b"1")
            cluster.kill_member(2)
            await eventually(  # a call in flight to the dead member may time out: try again
                lambda: kv.put(b"/three/a", b"2"),
                until=answered,
                retrying=(errors.StoreUnavailableError,),
                timeout=15,
                interval=0,
                what="a put once a member is gone",
            )
            got = await kv.get(b"/three/a")
            assert got is not None and got.value == b"2"
    finally:
        cluster.stop()


# --- etcd with a user ------------------------------------------------------------------------


async def test_a_user_outlives_its_token_for_calls_and_watches(
    etcd_auth: services.EtcdCluster, files: Files
) -> None:
    async with etcd.EtcdKV.open(user_url(etcd_auth, files), timeout=3.0, env={}) as kv:
        early: list[etcd.WatchEvent] = []
        first = await watching(kv, b"/mooring/lapse/", early)
        await kv.put(b"/mooring/lapse/a", b"1")
        await eventually(lambda: len(early), until=lambda n: n == 1, what="the first watch's event")
        # The token lapses after TOKEN_TTL s without a request: only real idle time does
        # that (a request would renew it), so this sleep cannot be a wait on a condition.
        await asyncio.sleep(TOKEN_TTL + 1.0)
        got = await kv.get(b"/mooring/lapse/a")  # refused once ("invalid auth token"), renewed
        assert got is not None and got.value == b"1"
        await asyncio.sleep(TOKEN_TTL + 1.0)
        # A new watch on the old stream is refused silently (id -1): a new token and stream.
        later: list[etcd.WatchEvent] = []
        second = await watching(kv, b"/mooring/lapse/", later)
        await kv.put(b"/mooring/lapse/b", b"2")
        await eventually(lambda: len(later), until=lambda n: n >= 1, what="the new watch's event")
        assert later[-1].key == b"/mooring/lapse/b"
        # The first watch lived on the old stream: it ended, as after any broken stream.
        with pytest.raises(errors.StoreUnavailableError, match="new auth token"):
            await asyncio.wait_for(first, 5)
        second.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await second


async def test_the_password_may_come_from_the_environment(
    etcd_auth: services.EtcdCluster,
) -> None:
    url = f"{etcd_auth.url}&user=mooring"
    env = {"MOORING_ETCD_PASSWORD": ETCD_PASSWORD}
    async with etcd.EtcdKV.open(url, timeout=3.0, env=env) as kv:
        await kv.put(b"/mooring/env", b"1")
    with pytest.raises(ValueError, match="etcd user mooring needs a password"):
        etcd.EtcdKV.open(url, timeout=3.0, env={})


async def test_keys_outside_the_users_roles_are_refused_in_one_line(
    etcd_auth: services.EtcdCluster, files: Files
) -> None:
    endpoint = etcd_auth.endpoints[0]
    expected = (
        f"etcd {endpoint}: permission denied for user mooring: its roles must grant"
        " readwrite on Mooring's key prefix (--store-root, default /mooring/)"
    )
    async with etcd.EtcdKV.open(user_url(etcd_auth, files), timeout=3.0, env={}) as kv:
        for attempt in (kv.get(b"/elsewhere"), kv.put(b"/elsewhere", b"1")):
            with pytest.raises(errors.StoreUnavailableError) as refused:
                await attempt
            assert str(refused.value) == expected
        with pytest.raises(errors.StoreUnavailableError) as refused:
            async for _ in kv.watch_prefix(b"/elsewhere/"):
                pass
        assert str(refused.value) == expected


# --- refusals, one line each -----------------------------------------------------------------


def _refusals() -> list[tuple[str, str, str]]:
    """(case, URL template, expected line); {mtls}, {auth}, {plain} are endpoints,
    {ca} etc. files (see `test_each_refusal_is_one_line_naming_etcd_and_the_endpoint`)."""
    cert = "cert={client}/tls.crt&key={client}/tls.key"
    return [
        (
            "a CA that did not sign the server",
            "etcds://{mtls}?ca={other_ca}&" + cert,
            "etcd {mtls}: TLS: the server's certificate is not signed by {other_ca}"
            " (ca=, --etcd-ca)",
        ),
        (
            "no client certificate",
            "etcds://{mtls}?ca={ca}",
            "etcd {mtls}: TLS: the server closed the connection: it requires a client"
            " certificate issued by a CA it trusts (cert= and key=, --etcd-cert and --etcd-key)",
        ),
        (
            "a client certificate of another CA",
            "etcds://{mtls}?ca={ca}&cert={foreign}/tls.crt&key={foreign}/tls.key",
            "etcd {mtls}: TLS: the server closed the connection: it did not accept the client"
            " certificate {foreign}/tls.crt (not issued by a CA it trusts, or not for client"
            " auth?)",
        ),
        (
            "a name the server's certificate does not carry",
            "etcds://{mtls}?ca={ca}&server-name=etcd.example&" + cert,
            "etcd {mtls}: TLS: the server's certificate does not name etcd.example"
            " (server-name=, --etcd-server-name, checks another name it carries)",
        ),
        (
            "plaintext to a TLS server",
            "etcd://{mtls}",
            "etcd {mtls}: the server closed the connection at once (if it serves TLS, use"
            " etcds://)",
        ),
        (
            "TLS to a plaintext server",
            "etcds://{plain}?ca={ca}",
            "etcd {plain}: TLS: the server did not answer the TLS handshake (if it serves"
            " plaintext, use etcd://)",
        ),
        (
            "a wrong password",
            "etcds://{auth}?ca={ca}&user=mooring&password-file={wrong_password}",
            "etcd {auth}: authentication failed for user mooring: wrong user name or password",
        ),
        (
            "no user",
            "etcds://{auth}?ca={ca}",
            "etcd {auth}: the server requires authentication: give user=NAME (--etcd-user)"
            " and its password (--etcd-password-file FILE or MOORING_ETCD_PASSWORD)",
        ),
    ]


@pytest.fixture(scope="module")
def places(
    files: Files,
    etcd_mtls: services.EtcdCluster,
    etcd_auth: services.EtcdCluster,
    etcd: services.EtcdCluster,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, str]:
    wrong = tmp_path_factory.mktemp("wrong") / "password"
    wrong.write_text("not-the-password")
    return {
        "mtls": etcd_mtls.endpoints[0],
        "auth": etcd_auth.endpoints[0],
        "plain": etcd.endpoints[0],
        "ca": str(files.ca),
        "other_ca": str(files.other_ca),
        "client": str(files.client),
        "foreign": str(files.foreign),
        "wrong_password": str(wrong),
    }


@pytest.mark.parametrize(("case", "template", "line"), _refusals(), ids=[r[0] for r in _refusals()])
async def test_each_refusal_is_one_line_naming_etcd_and_the_endpoint(
    case: str, template: str, line: str, places: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kv = etcd.EtcdKV.open(template.format(**places), timeout=3.0, env={})
    try:
        with pytest.raises(errors.StoreUnavailableError) as refused:
            await kv.connect()
            await kv.get(b"/mooring/x")
    finally:
        await kv.close()
    assert str(refused.value) == line.format(**places)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not-the-password" not in logged and ETCD_PASSWORD not in logged


def fails(*argv: str, code: int = 1) -> str:
    """The one line `mooring ARGV` prints on stderr as it exits `code`."""
    result = procs.mooring("--log-level", "ERROR", *argv, check=False)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


async def test_the_cli_says_it_in_one_line_and_exits_1(
    places: dict[str, str], files: Files, pki_dir: Path
) -> None:
    mtls, auth, ca = places["mtls"], places["auth"], places["ca"]
    # A hub command, the TLS files as flags.
    line = await asyncio.to_thread(
        fails, "agent", "list", "--coordination", f"etcds://{mtls}", "--etcd-ca", ca
    )
    assert line == (
        f"mooring: error: etcd {mtls}: TLS: the server closed the connection: it requires a"
        " client certificate issued by a CA it trusts (cert= and key=, --etcd-cert and"
        " --etcd-key)"
    )
    # A replica that cannot start, the password wrong.
    wrong = places["wrong_password"]
    url = f"etcds://{auth}"
    settings = procs.replica_settings(
        "p1",
        listen="127.0.0.1:0",
        advertise="127.0.0.1:9",
        coordination=url,
        tls_dir=pki_dir / "principals" / "p1",
    )
    flags = ["--etcd-ca", ca, "--etcd-user", "mooring", "--etcd-password-file", wrong]
    line = await asyncio.to_thread(fails, *procs.serve(settings), *flags)
    shown = f"{url}?ca={ca}&user=mooring&password-file={wrong}"
    assert line == (
        f"mooring: error: cannot reach the coordination store {shown} (etcd {auth}:"
        " authentication failed for user mooring: wrong user name or password)"
    )


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            ["--coordination", "etcds://127.0.0.1:2379", "--etcd-ca", "/no/such/ca.crt"],
            "mooring: --etcd-ca: cannot read etcd CA file /no/such/ca.crt: No such file or"
            " directory",
        ),
        (
            ["--coordination", "etcds://127.0.0.1:2379?ca=/no/such/ca.crt"],
            "mooring: --coordination: cannot read etcd CA file /no/such/ca.crt: No such file or"
            " directory",
        ),
        (
            ["--coordination", "etcd://127.0.0.1:2379", "--etcd-ca", "{ca}"],
            "mooring: --etcd-ca needs TLS: --coordination must be an etcds:// URL",
        ),
        (
            ["--coordination", "etcds://127.0.0.1:2379", "--etcd-cert", "{ca}"],
            "mooring: --coordination: a client certificate needs both cert=FILE and key=FILE",
        ),
        (
            ["--coordination", "etcds://127.0.0.1:2379", "--etcd-ca", "{password}"],
            "mooring: --etcd-ca: etcd CA file {password} is not PEM (no '-----BEGIN"
            " CERTIFICATE' line)",
        ),
        (
            ["--coordination", "etcds://127.0.0.1:2379", "--etcd-user", "mooring"],
            "mooring: --coordination: etcd user mooring needs a password: give"
            " --etcd-password-file FILE (password-file=FILE) or set MOORING_ETCD_PASSWORD",
        ),
        (
            ["--coordination", "etcds://127.0.0.1:2379?ca={ca}", "--etcd-ca", "/elsewhere.crt"],
            "mooring: --coordination: ca= is {ca} in the URL but /elsewhere.crt in a flag",
        ),
        (
            ["--coordination", "kubernetes", "--etcd-user", "mooring"],
            "mooring: --etcd-user: no etcd URL to apply to (give --coordination or --store"
            " etcds://...)",
        ),
        (
            ["--coordination", f"etcds://mooring:{ETCD_PASSWORD}@127.0.0.1:2379"],
            "mooring: principal serve: bad --coordination 'etcds://mooring:***@127.0.0.1:2379':"
            " an etcd URL takes no user info (a password in it would show in `ps` and logs):"
            " give user=NAME (--etcd-user) and --etcd-password-file FILE or"
            " MOORING_ETCD_PASSWORD",
        ),
        (
            ["--coordination", "etcds://127.0.0.1:2379?pasword-file=/x"],
            "mooring: principal serve: bad --coordination 'etcds://127.0.0.1:2379?pasword-file"
            "=/x': unknown etcd URL option 'pasword-file'; expected ca, cert, key, server-name,"
            " user, password-file",
        ),
        (
            ["--coordination", "etcd://127.0.0.1:2379", "--redis-password-file", "{password}"],
            "mooring: --redis-password-file needs --redis",
        ),
        (
            ["--coordination", "etcd://127.0.0.1:2379", "--redis", "redis://h:1?ssl_ca_certs=/c"],
            "mooring: principal serve: bad --redis: ssl_ca_certs= is a TLS option: use rediss://",
        ),
        (
            [
                *("--coordination", "etcd://127.0.0.1:2379", "--redis", "rediss://u:pw@h:1"),
                *("--redis-password-file", "{password}"),
            ],
            "mooring: --redis-password-file: --redis already holds a password",
        ),
    ],
)
def test_bad_values_are_usage_errors(
    flags: list[str], line: str, files: Files, capsys: pytest.CaptureFixture[str]
) -> None:
    names = {"ca": str(files.ca), "password": str(files.etcd_password)}
    argv = ["principal", "serve", "--id", "p1", "--listen", "127.0.0.1:8443", "--tls-dir", "/t"]
    argv += [flag.format(**names) for flag in flags]
    assert cli.main(argv, env={}) == 2
    err = capsys.readouterr().err
    assert err == line.format(**names) + "\n"
    assert ETCD_PASSWORD not in err


# --- a whole replica on secured stores -------------------------------------------------------


@contextlib.asynccontextmanager
async def replica_on(
    pki_dir: Path, coordination: str, redis: str, root: str
) -> AsyncIterator[server.Replica]:
    replica = server.Replica(
        procs.replica_settings(
            "p1",
            coordination=coordination,
            redis=redis,
            store_root=root,
            tls_dir=pki_dir / "principals" / "p1",
            auto_register=True,
        )
    )
    await replica.start()
    try:
        yield replica
    finally:
        await replica.stop()


async def test_a_replica_serves_an_agent_on_secured_etcd_and_redis(
    pki_dir: Path,
    etcd_auth: services.EtcdCluster,
    redis_acl: str,
    files: Files,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    root = f"/mooring/{uuid.uuid4().hex[:8]}/"
    coordination = user_url(etcd_auth, files)
    assert REDIS_PASSWORD in redis_acl and redis_acl.startswith("rediss://mooring:")
    async with (
        replica_on(pki_dir, coordination, redis_acl, root) as replica,
        running(replica, "agent-a", pki_dir / "agents" / "agent-a", tmp_path / "a.db") as agent,
    ):
        await asyncio.wait_for(agent.welcomed.wait(), 15)
        await replica.desired.apply_desired("agent-a", argocd.application("web"))

        await eventually(
            lambda: agent.store.get("Application", "web"),
            until=lambda got: got is not None,
            what="the Application delivered to the agent",
        )
        # Idle past the token's TTL: the hub store's next calls renew it.
        await asyncio.sleep(TOKEN_TTL + 1.0)
        await replica.desired.apply_desired("agent-a", argocd.application("api"))

        await eventually(
            lambda: agent.store.get("Application", "api"),
            until=lambda got: got is not None,
            what="a second Application, after the token lapsed",
        )

        # The CLI reads this cluster with the same files and users, as flags.
        endpoint = etcd_auth.endpoints[0]
        redis_user_only = redis_acl.replace(f":{REDIS_PASSWORD}@", "@")
        status = await asyncio.to_thread(
            procs.mooring,
            "status", "--json", "--coordination", f"etcds://{endpoint}",
            "--etcd-ca", str(files.ca), "--etcd-user", "mooring",
            "--etcd-password-file", str(files.etcd_password), "--store-root", root,
            "--redis", redis_user_only, "--redis-password-file", str(files.redis_password),
        )  # fmt: skip
        document = json.loads(status.stdout)
        assert [(a["name"], a["connected_to"]) for a in document["agents"]] == [("agent-a", "p1")]
        assert document["redis_live"] is True
        assert document["redis"] == redis_acl.replace(f":{REDIS_PASSWORD}@", ":***@")
        listed = await asyncio.to_thread(
            procs.mooring,
            "agent", "list", "--coordination", f"etcds://{endpoint}", "--store-root", root,
            "--etcd-ca", str(files.ca), "--etcd-user", "mooring",
            env={"MOORING_ETCD_PASSWORD": ETCD_PASSWORD},
        )  # fmt: skip
        assert listed.stdout.splitlines()[1].split()[:2] == ["agent-a", "managed"]
        exposition = prometheus_client.generate_latest(replica.registry).decode()
    for shown in (status.stdout, status.stderr, listed.stdout, listed.stderr, exposition):
        assert ETCD_PASSWORD not in shown and REDIS_PASSWORD not in shown
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert ETCD_PASSWORD not in logged and REDIS_PASSWORD not in logged
    assert repr(replica.settings).count(REDIS_PASSWORD) == 0


# --- Redis over TLS with an ACL user ---------------------------------------------------------


async def test_redis_over_tls_with_an_acl_user_holds_entries(redis_acl: str) -> None:
    reg = registry.SessionRegistry(redis_acl, prefix=f"t-{uuid.uuid4().hex[:8]}:")
    try:
        assert await reg.ping()
        reg.beat_blocking("p1", ttl=5.0)
        taken, holder, token, _ = await reg.acquire("edge-1", replica="p1", epoch=1, session="s")
        assert taken and holder == "p1" and token > 0
        assert list(await reg.entries()) == ["edge-1"]
    finally:
        reg.close_blocking()
        await reg.close()


@pytest.mark.parametrize(
    ("case", "change", "said"),
    [
        (
            "a wrong password",
            lambda url: url.replace(REDIS_PASSWORD, "not-the-password"),
            "invalid username-password pair",
        ),
        (
            "a CA that did not sign the server",
            lambda url: url.rpartition("=")[0] + "=" + "{other_ca}",
            "certificate verify failed",
        ),
        (
            "plaintext to a TLS server",
            lambda url: url.replace("rediss://", "redis://").partition("?")[0],
            "",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_redis_refusals_name_no_password(
    case: str, change: Any, said: str, redis_acl: str, files: Files
) -> None:
    url = change(redis_acl).replace("{other_ca}", str(files.other_ca))
    reg = registry.SessionRegistry(url, timeout=1.0, prefix="t:")
    try:
        with pytest.raises(registry.RegistryError) as refused:
            await reg.entries()
    finally:
        await reg.close()
    text = str(refused.value)
    assert text.startswith("redis: ") and said in text, text
    assert REDIS_PASSWORD not in text and "not-the-password" not in text


TRIES = 60


def test_refused_connections_are_closed_before_their_event_loop_ends(redis_acl: str) -> None:
    """redis-py drops a connection refused at AUTH without waiting for its TLS close; the
    socket outlived a short-lived event loop (1 in 8-35 tries) and was reported unclosed
    by the garbage collector, in whatever test ran next (it failed a CI run so). TRIES
    refusals, each in an event loop of its own, leave none (the old code leaked within
    the first few)."""
    url = redis_acl.replace(REDIS_PASSWORD, "not-the-password")

    async def refused() -> None:
        reg = registry.SessionRegistry(url, timeout=1.0, prefix="t:")
        try:
            with pytest.raises(registry.RegistryError, match="invalid username-password"):
                await reg.entries()
        finally:
            await reg.close()

    unclosed: list[str] = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda raised: unclosed.append(repr(raised.exc_value)[:200])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # as pytest's filter: each is one "unraisable"
            for _ in range(TRIES):
                asyncio.run(refused())
                gc.collect(1)  # the young generations hold them: a full collection costs 80 ms
                if unclosed:
                    break
    finally:
        sys.unraisablehook = hook
    assert unclosed == [], unclosed[:3]


def test_a_redis_url_is_never_echoed_in_errors(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["principal", "serve", "--id", "p1", "--listen", "127.0.0.1:8443", "--tls-dir", "/t"]
    argv += ["--coordination", "etcd://127.0.0.1:2379", "--redis", f"http://u:{REDIS_PASSWORD}@h"]
    assert cli.main(argv, env={}) == 2
    err = capsys.readouterr().err
    assert err.startswith("mooring: principal serve: bad --redis: expected redis://")
    assert REDIS_PASSWORD not in err
