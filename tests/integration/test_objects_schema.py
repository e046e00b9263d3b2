"""proto.objects against the real apiserver with Argo CD's CRDs: the two agree.

Names and metadata that Mooring accepts are those the apiserver accepts, and what Mooring
syncs of Argo CD's documented full examples is an object its CRD schema accepts.
Every create here is a server-side dry run: nothing is stored.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes.client
import kubernetes.config
import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from mooring import _kubeapi as kubeapi
from proto import objects
from tests import _testbed as testbed

GROUP, VERSION = "argoproj.io", "v1alpha1"
PLURALS = {"Application": "applications", "AppProject": "appprojects"}


@pytest.fixture(scope="module")
def namespace(kube_apiserver: kubeapi.KubeAPIServer) -> str:
    name = f"schema-{uuid.uuid4().hex[:8]}"
    kube_apiserver.create_namespace(name)
    return name


@pytest.fixture(scope="module")
def api(kube_apiserver: kubeapi.KubeAPIServer) -> Iterator[Any]:
    client = kubernetes.config.new_client_from_config(str(kube_apiserver.kubeconfig))
    try:
        yield kubernetes.client.CustomObjectsApi(client)
    finally:
        client.close()


def server_accepts(api: Any, namespace: str, doc: dict[str, Any]) -> bool:
    try:
        api.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[doc["kind"]], doc, dry_run="All"
        )
    except ApiException as err:
        if err.status in (400, 422):
            return False
        raise
    return True


def mooring_accepts(doc: dict[str, Any]) -> bool:
    try:
        objects.validate_manifest(doc)
    except objects.InvalidObjectError:
        return False
    return True


def application(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Application",
        "metadata": {"name": name, **meta},
        "spec": {
            "project": "default",
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "x"},
        },
    }


CASES = [
    application("guestbook"),
    application("my-app.v2"),
    application("x" * 253),
    application("x" * 254),
    application("Bad_Name"),
    application("UPPER"),
    application("-lead"),
    application("trail-"),
    application("a..b"),
    application("ok", labels={"app.kubernetes.io/name": "web"}),
    application("ok", labels={"a": "b c"}),
    application("ok", labels={"a": "x" * 63}),
    application("ok", labels={"a": "x" * 64}),
    application("ok", labels={"bad key": "v"}),
    application("ok", labels={"Bad_Prefix.io/k": "v"}),
    application("ok", annotations={"example.com/anything": "any text\nat all"}),
    application("ok", annotations={"a": "x" * 262_144}),
    application("ok", finalizers=["resources-finalizer.argocd.argoproj.io"]),
    application("ok", finalizers=["resources-finalizer.argocd.argoproj.io/background"]),
    application("ok", finalizers=["not a finalizer"]),
]


@pytest.mark.parametrize("doc", CASES, ids=lambda d: str(d["metadata"])[:60])
def test_mooring_and_the_apiserver_agree(api: Any, namespace: str, doc: dict[str, Any]) -> None:
    assert mooring_accepts(doc) == server_accepts(api, namespace, doc)


@pytest.mark.parametrize("example", ["application.yaml", "project.yaml"])
def test_what_mooring_syncs_of_the_documented_examples_fits_the_crd(
    api: Any, namespace: str, example: str
) -> None:
    testbed.require(examples=True)
    doc = yaml.safe_load(testbed.argocd_example(example).read_text())
    kind, name = objects.validate_manifest(doc)
    synced = objects.synced_object(doc)
    rebuilt = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {**copy.deepcopy(synced["metadata"]), "name": name},
        "spec": synced["spec"],
    }
    assert synced["metadata"]["finalizers"] == doc["metadata"]["finalizers"]
    assert server_accepts(api, namespace, rebuilt)
