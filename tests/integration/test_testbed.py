"""The test bed itself: what the Kubernetes tests rely on, checked on the real processes.

The apiserver reports the version it was built from, serves Argo CD's CRDs with their
schema, authorizes by RBAC (an identity without a grant is refused, with one it is not),
and issues service-account tokens through TokenRequest; the etcd beside it is 3.6.
prometheus-operator's and cert-manager's CRDs are the definitions asked for, and the
apiserver accepts and serves them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from mooring import _kubeapi as kubeapi
from tests import _testbed as testbed
from tests._poll import wait_for

GROUP, VERSION = "argoproj.io", "v1alpha1"
# CRD set -> {kind: (group, scope)}; every one of them serves and stores v1 only
MORE_CRDS = {
    "prometheus-operator": {
        "ServiceMonitor": ("monitoring.coreos.com", "Namespaced"),
        "PrometheusRule": ("monitoring.coreos.com", "Namespaced"),
    },
    "cert-manager": {
        "Certificate": ("cert-manager.io", "Namespaced"),
        "Issuer": ("cert-manager.io", "Namespaced"),
        "ClusterIssuer": ("cert-manager.io", "Cluster"),
    },
}


def required_version(module: str, gomod: Path) -> str:
    for line in gomod.read_text().splitlines():
        words = line.split("//")[0].split()
        if module in words:
            return words[words.index(module) + 1]
    raise AssertionError(f"{module} not required in {gomod}")


@pytest.fixture
def namespace(kube_apiserver: kubeapi.KubeAPIServer) -> str:
    name = f"tb-{uuid.uuid4().hex[:8]}"
    kube_apiserver.create_namespace(name)
    return name


@pytest.fixture
def admin(kube_apiserver: kubeapi.KubeAPIServer) -> Iterator[Any]:
    client = kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig))
    try:
        yield client
    finally:
        client.close()


def application(name: str, *, spec: bool = True) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Application",
        "metadata": {"name": name},
    }
    if spec:
        doc["spec"] = {
            "project": "default",
            "source": {"repoURL": "https://git.example/apps.git", "path": name},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        }
    return doc


def test_the_apiserver_reports_the_version_it_was_built_from(
    kube_apiserver: kubeapi.KubeAPIServer,
) -> None:
    status, body = kube_apiserver.request("GET", "/version")
    assert status == 200
    wanted = required_version("k8s.io/kubernetes", testbed.ROOT / "testbed/kube-apiserver/go.mod")
    assert json.loads(body)["gitVersion"] == wanted


def test_etcd_beside_it_is_3_6(kube_apiserver: kubeapi.KubeAPIServer) -> None:
    url = f"http://{kube_apiserver.etcd.endpoints[0]}/version"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert json.load(resp)["etcdserver"].startswith("3.6.")


def test_argo_cd_crds_are_served_with_their_schema(admin: Any, namespace: str) -> None:
    api = kubernetes.client.CustomObjectsApi(admin)
    created = api.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "applications", application("guestbook")
    )
    assert created["spec"]["source"]["path"] == "guestbook"
    with pytest.raises(ApiException) as refused:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "applications", application("nospec", spec=False)
        )
    assert refused.value.status == 422 and "spec" in str(refused.value.body)
    projects = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "appprojects")
    assert projects["items"] == []


def pinned(name: str) -> str:
    for line in (testbed.ROOT / "testbed/versions.env").read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.partition("=")[2].strip()
    raise AssertionError(f"{name} not in testbed/versions.env")


def definitions(crd_set: str) -> dict[str, tuple[Path, dict[str, Any]]]:
    """kind -> (file, its CustomResourceDefinition) of one CRD set of the test bed."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 10x faster on 300 KB
    found = {}
    for path in testbed.crd_files(crd_set):
        doc = yaml.load(path.read_text(), Loader=loader)  # a safe loader either way
        found[doc["spec"]["names"]["kind"]] = (path, doc)
    return found


@pytest.mark.parametrize("crd_set", sorted(MORE_CRDS))
def test_prometheus_operator_and_cert_manager_crds_are_the_definitions_asked_for(
    crd_set: str,
) -> None:
    testbed.require(crd_sets=[crd_set])
    crds = {kind: doc for kind, (_, doc) in definitions(crd_set).items()}
    assert set(crds) == set(MORE_CRDS[crd_set])
    for kind, (group, scope) in MORE_CRDS[crd_set].items():
        crd = crds[kind]
        assert (crd["apiVersion"], crd["kind"]) == (
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
        )
        spec = crd["spec"]
        assert (spec["group"], spec["scope"]) == (group, scope)
        assert crd["metadata"]["name"] == f"{spec['names']['plural']}.{group}"
        versions = [(v["name"], v["served"], v["storage"]) for v in spec["versions"]]
        assert versions == [("v1", True, True)]
        assert spec["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    if crd_set == "prometheus-operator":  # the operator stamps its version on its CRDs
        stamped = {
            crd["metadata"]["annotations"]["operator.prometheus.io/version"]
            for crd in crds.values()
        }
        assert stamped == {pinned("PROMETHEUS_OPERATOR_VERSION").removeprefix("v")}


def test_rbac_refuses_an_identity_without_a_grant_and_honours_one(
    kube_apiserver: kubeapi.KubeAPIServer, admin: Any, namespace: str, tmp_path: Path
) -> None:
    user = f"reader-{namespace}"
    config = kube_apiserver.identity(user, path=tmp_path / "reader.kubeconfig")
    client = kubernetes.config.new_client_from_config(str(config))
    try:
        api = kubernetes.client.CustomObjectsApi(client)
        with pytest.raises(ApiException) as refused:
            api.list_namespaced_custom_object(GROUP, VERSION, namespace, "applications")
        assert refused.value.status == 403
        rbac = kubernetes.client.RbacAuthorizationV1Api(admin)
        rbac.create_namespaced_role(
            namespace,
            {
                "metadata": {"name": "read-apps"},
                "rules": [{"apiGroups": [GROUP], "resources": ["applications"], "verbs": ["list"]}],
            },
        )
        rbac.create_namespaced_role_binding(
            namespace,
            {
                "metadata": {"name": "read-apps"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Role",
                    "name": "read-apps",
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            },
        )

        # The authorizer learns of the binding through its watch: allowed within moments.
        def allowed() -> dict[str, Any] | None:
            try:
                return api.list_namespaced_custom_object(GROUP, VERSION, namespace, "applications")
            except ApiException as err:
                if err.status != 403:
                    raise
                return None

        listed = wait_for(allowed, timeout=10, interval=0.1, what="the grant honoured")
        assert listed["items"] == []
        with pytest.raises(ApiException) as still:
            api.list_namespaced_custom_object(GROUP, VERSION, namespace, "appprojects")
        assert still.value.status == 403
    finally:
        client.close()


def test_token_request_issues_a_service_account_identity(
    kube_apiserver: kubeapi.KubeAPIServer, admin: Any, namespace: str, tmp_path: Path
) -> None:
    core = kubernetes.client.CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "principal"}})
    token = core.create_namespaced_service_account_token(
        "principal", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    config = kube_apiserver.token_kubeconfig(token, path=tmp_path / "sa.kubeconfig")
    client = kubernetes.config.new_client_from_config(str(config))
    try:
        review = kubernetes.client.AuthenticationV1Api(client).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:principal"
    finally:
        client.close()


def test_without_the_test_bed_kubernetes_tests_skip_with_the_way_to_build_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MOORING_TESTBED", str(tmp_path / "nothing-here"))
    monkeypatch.delenv("CI", raising=False)
    testbed.directory.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception, match=r"bash scripts/testbed.sh"):
            testbed.require("kube-apiserver", crds=True)
        monkeypatch.setenv("CI", "true")
        with pytest.raises(pytest.fail.Exception, match=r"kube-apiserver, Argo CD CRDs"):
            testbed.require("kube-apiserver", crds=True)
        with pytest.raises(pytest.fail.Exception, match=r"lacks prometheus-operator CRDs, cert"):
            testbed.require(crd_sets=["prometheus-operator", "cert-manager"])
    finally:
        testbed.directory.cache_clear()


def test_the_launcher_names_a_binary_that_does_not_start(tmp_path: Path) -> None:
    testbed.require("etcd")
    fake = tmp_path / "kube-apiserver"
    fake.write_text("#!/bin/sh\necho 'flag provided but not defined' >&2\nexit 1\n")
    fake.chmod(0o755)
    server = kubeapi.KubeAPIServer(
        tmp_path / "kube", binary=str(fake), etcd_binary=str(testbed.binary("etcd"))
    )
    with pytest.raises(kubeapi.KubeAPIError, match="exited with 1: flag provided"):
        server.start(timeout=20)
    assert server.etcd.members[0].proc is None  # the etcd it started is stopped again


def test_a_new_folder_links_the_binaries_an_older_one_built_from_the_same_recipe(
    tmp_path: Path,
) -> None:
    """A new CRD version (or any new folder) must not cost a kube-apiserver build."""
    binaries = ("kube-apiserver", "etcd", "helm")
    testbed.require(*binaries, crds=True, crd_sets=sorted(MORE_CRDS))
    go = shutil.which("go")
    if go is None:
        pytest.skip("needs Go (the CRDs come from the Go module proxy)")
    older = tmp_path / "mooring-testbed" / "older" / "bin"
    older.mkdir(parents=True)
    for name in binaries:
        stamp = testbed.binary(name).with_name(f"{name}.recipe")
        if not stamp.is_file():
            pytest.skip(f"{stamp} is missing: rebuild with `bash scripts/testbed.sh`")
        os.link(testbed.binary(name), older / name)  # one file system: the cache's
        shutil.copy(stamp, older / stamp.name)
    gocache = subprocess.run([go, "env", "GOCACHE"], capture_output=True, text=True).stdout
    env = os.environ | {"XDG_CACHE_HOME": str(tmp_path), "GOCACHE": gocache.strip()}
    env.pop("MOORING_TESTBED", None)
    run = subprocess.run(
        ["bash", str(testbed.SCRIPT)], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr
    folder = Path(run.stdout.strip())
    assert folder.parent == tmp_path / "mooring-testbed"
    assert folder.name == testbed.directory().name
    for name in binaries:
        assert f"testbed: {name} reused from {older.parent}" in run.stderr
        assert (folder / "bin" / name).samefile(testbed.binary(name))
    for crd_set in testbed.CRD_SETS:
        made = sorted(path.name for path in (folder / "crds" / crd_set).glob("*.yaml"))
        assert made == [path.name for path in testbed.crd_files(crd_set)]


def served(server: kubeapi.KubeAPIServer, doc: dict[str, Any], *, timeout: float = 60.0) -> str:
    """Wait until an applied CRD is Established and its list answers; return the URL path
    of its resources (the namespace left as {ns} when namespaced)."""
    spec, name = doc["spec"], doc["metadata"]["name"]
    resources = f"/apis/{spec['group']}/v1"
    if spec["scope"] == "Namespaced":
        resources += "/namespaces/{ns}"
    resources += f"/{spec['names']['plural']}"

    def look() -> tuple[list[dict[str, Any]], int | None]:
        """The CRD's conditions, and once it is Established, its list's HTTP status."""
        status, text = server.request(
            "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        )
        crd = json.loads(text) if status == 200 else {}
        conditions = (crd.get("status") or {}).get("conditions") or []  # null until accepted
        if not any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return conditions, None
        return conditions, server.request("GET", resources.format(ns="default") + "?limit=1")[0]

    wait_for(
        look, until=lambda got: got[1] == 200, timeout=timeout, interval=0.1, what=f"CRD {name}"
    )
    return resources


def test_the_apiserver_serves_prometheus_operator_and_cert_manager_crds(
    kube_apiserver: kubeapi.KubeAPIServer, namespace: str
) -> None:
    # Last in the file: installing 700 KB of CRDs keeps the apiserver busy (OpenAPI) for a
    # while, which can delay when a fresh RoleBinding takes effect for a test right after.
    testbed.require(crd_sets=sorted(MORE_CRDS))
    crds = {kind: crd for crd_set in MORE_CRDS for kind, crd in definitions(crd_set).items()}
    for path, _ in crds.values():
        kube_apiserver.apply_crd(path)
    urls = {kind: served(kube_apiserver, doc) for kind, (_, doc) in crds.items()}
    objects: dict[str, dict[str, Any]] = {
        "ServiceMonitor": {
            "apiVersion": "monitoring.coreos.com/v1",
            "spec": {
                "selector": {"matchLabels": {"app": "mooring"}},
                "endpoints": [{"port": "metrics", "interval": "15s"}],
            },
        },
        "PrometheusRule": {
            "apiVersion": "monitoring.coreos.com/v1",
            "spec": {
                "groups": [{"name": "mooring", "rules": [{"alert": "Down", "expr": "up == 0"}]}]
            },
        },
        "Issuer": {"apiVersion": "cert-manager.io/v1", "spec": {"selfSigned": {}}},
        "Certificate": {
            "apiVersion": "cert-manager.io/v1",
            "spec": {
                "secretName": "mooring-tls",
                "dnsNames": ["mooring.example"],
                "issuerRef": {"name": "mooring", "kind": "Issuer"},
            },
        },
    }
    for kind, doc in objects.items():
        doc |= {"kind": kind, "metadata": {"name": "mooring"}}
        url = urls[kind].format(ns=namespace)
        status, text = kube_apiserver.request("POST", url, body=json.dumps(doc).encode())
        assert status == 201, f"{kind}: HTTP {status}: {text[:300]}"
        status, text = kube_apiserver.request("GET", f"{url}/mooring")
        assert status == 200 and json.loads(text)["spec"] == doc["spec"]
    # the schemas are enforced: a Certificate must name its Secret
    lacking = objects["Certificate"] | {"metadata": {"name": "nosecret"}}
    lacking["spec"] = {k: v for k, v in lacking["spec"].items() if k != "secretName"}
    url = urls["Certificate"].format(ns=namespace)
    status, text = kube_apiserver.request("POST", url, body=json.dumps(lacking).encode())
    assert status == 422 and "secretName" in text
    status, text = kube_apiserver.request("GET", urls["ClusterIssuer"] + "?limit=1")
    assert status == 200 and isinstance(json.loads(text)["items"], list)
