"""The test bed itself: what the Kubernetes tests rely on, checked on the real processes.

The apiserver reports the version it was built from, serves Argo CD's CRDs with their
schema, authorizes by RBAC (an identity without a grant is refused, with one it is not),
and issues service-account tokens through TokenRequest; the etcd beside it is 3.6.
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
from kubernetes.client.exceptions import ApiException

from mooring import _kubeapi as kubeapi
from tests import _testbed as testbed

GROUP, VERSION = "argoproj.io", "v1alpha1"


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
        listed = api.list_namespaced_custom_object(GROUP, VERSION, namespace, "applications")
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
