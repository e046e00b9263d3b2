"""A real kube-apiserver on loopback, on an etcd of its own, with CRDs installed.

Used by the test fixtures (and meant for `mooring up --kubernetes`): the
binaries come from the test bed (`scripts/testbed.sh`), which builds them from
the Go module proxy. Started the way envtest starts one: secure port on
127.0.0.1, serving certificate and client CA of our own, service-account keys
for TokenRequest, RBAC authorization, the ServiceAccount admission plugin off
(no controller manager creates tokens here), and an admin identity in
`system:masters` by client certificate.

This module talks plain HTTPS (urllib); only the adapter modules import the
`kubernetes` client.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mooring import _errors as errors
from mooring import _processes as processes
from mooring import _services as services
from principal import pki

__all__ = ["KubeAPIError", "KubeAPIServer", "testbed_parts"]

ADMIN = "mooring-admin"
ADMIN_GROUP = "system:masters"
FIELD_MANAGER = "mooring-testbed"


class KubeAPIError(errors.MooringError, RuntimeError):
    """The apiserver did not start, or refused a request of the launcher."""


def testbed_parts(env: Mapping[str, str] | None = None) -> tuple[str, str, list[Path]]:
    """(kube-apiserver, etcd 3.6, Argo CD's CRD files) of the test bed: $MOORING_TESTBED,
    else the folder `scripts/testbed.sh --path` names in this checkout. One-line
    KubeAPIError saying how to build them when they are not there."""
    env = os.environ if env is None else env
    folder = env.get("MOORING_TESTBED")
    script = Path(__file__).resolve().parents[1] / "scripts" / "testbed.sh"
    if not folder and script.exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            folder = subprocess.run(
                ["bash", str(script), "--path"], capture_output=True, text=True, check=True
            ).stdout.strip()
    hint = "build them with `bash scripts/testbed.sh` (Go 1.26+), or set MOORING_TESTBED"
    if not folder:
        raise KubeAPIError(f"--kubernetes needs kube-apiserver and etcd 3.6: {hint}")
    root = Path(folder)
    apiserver, etcd = root / "bin" / "kube-apiserver", root / "bin" / "etcd"
    crds = sorted((root / "crds" / "argocd").glob("*.yaml"))
    missing = [str(p) for p in (apiserver, etcd) if not p.is_file()] + ([] if crds else ["CRDs"])
    if missing:
        raise KubeAPIError(f"--kubernetes: {', '.join(missing)} not there: {hint}")
    return str(apiserver), str(etcd), crds


class KubeAPIServer:
    """kube-apiserver + etcd, both real processes, under `root`."""

    def __init__(
        self,
        root: Path,
        *,
        binary: str,
        etcd_binary: str,
        crds: Sequence[Path] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.root = Path(root)
        self.binary = binary
        self.host = host
        self.port = services.free_port(host)
        self.crds = list(crds)
        self.etcd = services.EtcdCluster(self.root / "etcd", members=1, binary=etcd_binary)
        self.pki_dir = self.root / "pki"
        self.log_path = self.root / "kube-apiserver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.handle: processes.Handle | None = None  # the apiserver's, for cluster.json
        self._context: ssl.SSLContext | None = None
        self._ca: pki.CertificateAuthority | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def ca_path(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig (group system:masters)."""
        return self.root / "admin.kubeconfig"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, *, timeout: float = 90.0) -> KubeAPIServer:
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self.etcd.start()
        try:
            self._start_apiserver()
            self._wait_ready(timeout=timeout)
            self._user_kubeconfig(self._admin_files()[0].parent, self.kubeconfig)
            self.install_crds(self.crds, timeout=timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _write_pki(self) -> None:
        shutil.rmtree(self.pki_dir / "users", ignore_errors=True)  # issued by an older CA
        pki.init_ca(self.pki_dir, force=True)
        self._ca = pki.load_ca(self.pki_dir)
        cert, key = pki.issue_certificate(
            common_name="kube-apiserver",
            issuer=self._ca,
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
            ip_addresses=[ipaddress.ip_address(self.host)],
            server_auth=True,
        )
        pki.write_tls_dir(
            self.pki_dir / "serving", certificate=cert, key=key, ca_certificate=self._ca.certificate
        )
        signing = pki.generate_key()
        (self.pki_dir / "sa.key").write_bytes(pki.private_key_pem(signing))
        (self.pki_dir / "sa.pub").write_bytes(pki.public_key_pem(signing.public_key()))

    def _start_apiserver(self) -> None:
        serving = self.pki_dir / "serving"
        cmd = [
            self.binary,
            f"--etcd-servers=http://{self.etcd.endpoints[0]}",
            f"--secure-port={self.port}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--cert-dir={self.root / 'certs'}",
            f"--tls-cert-file={serving / pki.TLS_CERT}",
            f"--tls-private-key-file={serving / pki.TLS_KEY}",
            f"--client-ca-file={self.ca_path}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.pki_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={self.pki_dir / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--authorization-mode=RBAC",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--endpoint-reconciler-type=none",  # no "kubernetes" Endpoints for a loopback address
            f"--audit-policy-file={self._audit_policy()}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",  # an event is on disk before its answer is sent
        ]
        self.proc, self.handle = processes.spawn(cmd, log=self.log_path)

    # -- audit -------------------------------------------------------------------------

    @property
    def audit_log(self) -> Path:
        """Every request's metadata (user, verb, resource, namespace, status), JSON lines."""
        return self.root / "audit.log"

    def _audit_policy(self) -> Path:
        path = self.root / "audit-policy.yaml"
        policy = {
            "apiVersion": "audit.k8s.io/v1",
            "kind": "Policy",
            "omitStages": ["RequestReceived"],
            "rules": [{"level": "Metadata"}],
        }
        path.write_text(json.dumps(policy))
        return path

    def audit_events(self, user: str) -> list[dict[str, Any]]:
        """The audit events of requests made by `user` (e.g. a ServiceAccount's
        system:serviceaccount:NS:NAME), in order."""
        events = []
        with contextlib.suppress(FileNotFoundError), self.audit_log.open() as lines:
            for line in lines:
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("user", {}).get("username") == user:
                        events.append(event)
        return events

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise KubeAPIError(
                    f"kube-apiserver exited with {self.proc.returncode}: {self._log_tail()}"
                )
            try:
                status, body = self.request("GET", "/readyz")
                if status == 200:
                    return
                last = f"HTTP {status}: {body[-200:]!r}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise KubeAPIError(f"kube-apiserver not ready after {timeout:.0f}s ({last})")

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-3:])

    def restart(self, *, timeout: float = 90.0) -> None:
        """Stop the apiserver (its etcd runs on) and start it again on the same port: its
        watch cache starts afresh from etcd, as after any apiserver restart."""
        services.stop_process(self.proc)
        self._start_apiserver()
        self._wait_ready(timeout=timeout)
        for crd in self.crds:
            self._wait_established(crd, timeout=timeout)

    def pause(self) -> None:
        """SIGSTOP the apiserver: every request hangs until `resume`."""
        if self.proc is not None and self.proc.poll() is None:
            processes.stop_signal(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            processes.stop_signal(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        self.resume()
        services.stop_process(self.proc)
        self.proc = None
        self.etcd.stop()

    # -- identities --------------------------------------------------------------------

    def _admin_files(self) -> tuple[Path, Path]:
        folder = self.pki_dir / "users" / ADMIN
        if not (folder / pki.TLS_CERT).exists():
            self._issue_user(ADMIN, group=ADMIN_GROUP)
        return folder / pki.TLS_CERT, folder / pki.TLS_KEY

    def _issue_user(self, name: str, *, group: str | None) -> Path:
        assert self._ca is not None, "start() first"
        cert, key = pki.issue_certificate(
            common_name=name,
            issuer=self._ca,
            organization=group or "",
            client_auth=True,
        )
        return pki.write_tls_dir(
            self.pki_dir / "users" / name,
            certificate=cert,
            key=key,
            ca_certificate=self._ca.certificate,
        )

    def identity(
        self, name: str, *, group: str | None = None, path: Path | None = None, namespace: str = ""
    ) -> Path:
        """Write a kubeconfig for user `name` (client certificate; `group` becomes its O)."""
        folder = self._issue_user(name, group=group)
        return self._user_kubeconfig(folder, path or self.root / f"{name}.kubeconfig", namespace)

    def _user_kubeconfig(self, folder: Path, path: Path, namespace: str = "") -> Path:
        user = {
            "client-certificate": str(folder / pki.TLS_CERT),
            "client-key": str(folder / pki.TLS_KEY),
        }
        return self.write_kubeconfig(path, user, namespace)

    def token_kubeconfig(self, token: str, *, path: Path, namespace: str = "") -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. from TokenRequest)."""
        return self.write_kubeconfig(path, {"token": token}, namespace)

    def write_kubeconfig(self, path: Path, user: dict[str, str], namespace: str = "") -> Path:
        context: dict[str, str] = {"cluster": "testbed", "user": "user"}
        if namespace:
            context["namespace"] = namespace
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_path)},
                }
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "testbed", "context": context}],
            "current-context": "testbed",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        path.chmod(0o600)
        return path

    # -- raw requests (launcher only) --------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        timeout: float = 10.0,
    ) -> tuple[int, str]:
        """One HTTPS request as the admin; returns (status, body text)."""
        if self._context is None:  # one TLS context (CA and admin key read once)
            self._context = ssl.create_default_context(cafile=str(self.ca_path))
            certfile, keyfile = self._admin_files()
            self._context.load_cert_chain(str(certfile), str(keyfile))
        context = self._context
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def create_namespace(self, name: str) -> None:
        """Create namespace `name` unless it exists."""
        body = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        status, text = self.request("POST", "/api/v1/namespaces", body=body.encode())
        if status not in (201, 409):
            raise KubeAPIError(f"namespace {name} refused: HTTP {status}: {text[:300]}")

    def apply_crd(self, path: Path) -> None:
        """Server-side apply of one CRD file (they are too large for client-side apply)."""
        name = _crd_name(path)
        status, text = self.request(
            "PATCH",
            f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            f"?fieldManager={FIELD_MANAGER}&force=true",
            body=path.read_bytes(),
            content_type="application/apply-patch+yaml",
            timeout=60,
        )
        if status not in (200, 201):
            raise KubeAPIError(f"CRD {name} from {path} refused: HTTP {status}: {text[:300]}")

    def install_crds(self, paths: Sequence[Path], *, timeout: float = 60.0) -> None:
        """Server-side apply CRD files and wait until each is Established and served."""
        for path in paths:
            self.apply_crd(path)
        for path in paths:
            self._wait_established(path, timeout=timeout)

    def _wait_established(self, path: Path, *, timeout: float) -> None:
        name = _crd_name(path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, text = self.request(
                "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            )
            if status == 200 and _established(json.loads(text)):
                break
            time.sleep(0.1)
        else:
            raise KubeAPIError(f"CRD {name} not Established after {timeout:.0f}s")
        # Established is not yet served: until its watch cache is up, lists answer
        # 429 "storage is (re)initializing". Wait for a list to succeed.
        crd = json.loads(text)
        served = f"/apis/{crd['spec']['group']}/{crd['spec']['versions'][0]['name']}"
        served += f"/{crd['spec']['names']['plural']}?limit=1"
        while time.monotonic() < deadline:
            status, _ = self.request("GET", served)
            if status == 200:
                return
            time.sleep(0.1)
        raise KubeAPIError(f"CRD {name} not served after {timeout:.0f}s (HTTP {status})")


def _crd_name(path: Path) -> str:
    import yaml

    with path.open() as handle:
        doc = yaml.safe_load(handle)
    try:
        return str(doc["metadata"]["name"])
    except (KeyError, TypeError) as err:
        raise KubeAPIError(f"{path} is not a CustomResourceDefinition") from err


def _established(crd: dict[str, Any]) -> bool:
    with contextlib.suppress(KeyError, TypeError):
        for condition in crd["status"]["conditions"]:
            if condition["type"] == "Established" and condition["status"] == "True":
                return True
    return False
