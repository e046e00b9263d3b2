"""The charts' RBAC proven on a real API server, not assumed.

A real `mooring principal serve` runs outside the cluster as the hub chart's
ServiceAccount (a TokenRequest token) and elects, renews its Leases, follows the hub's
revocation list and serves the hub store for a managed and an autonomous agent, which
the admin registered (the chart's default: replicas register no agent); a real
`mooring agent run` writes its Argo CD namespace as the agent chart's ServiceAccount. The API server's audit log then says
what each identity called: every call was allowed, and every verb the charts grant was
used, so nothing beyond what the code calls is granted. SubjectAccessReviews confirm
both, and that nothing else (Secrets, Pods, other namespaces' Leases) is allowed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from mooring import _kubeapi as kubeapi
from mooring import _services as services
from tests import _procs as procs
from tests._argocd import application
from tests._poll import wait_for
from tests._procs import mooring
from tests.charts._helm import AGENT, HUB, by_kind, render
from tests.e2e.test_sync import Cluster

HUB_NS = "rbac-hub"
ARGOCD_NS = "rbac-argocd"
BY_NAME = {("configmaps", "get"), ("configmaps", "patch")}
"""What the agent chart grants on its own bookkeeping ConfigMap only (resourceNames)."""
HUB_NAME = "rbac"  # the hub store's mooring.io/hub label: other tests' agents are not ours
REVOCATIONS = f"{HUB_NAME}-revocations"  # the hub's revocation list, a ConfigMap in HUB_NS


def project(name: str, *, description: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": name},
        "spec": {
            "description": description,
            "sourceRepos": ["*"],
            "destinations": [{"server": "*", "namespace": "*"}],
        },
    }


def granted(docs: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) the chart's Roles and ClusterRoles grant."""
    out = set()
    for doc in docs:
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        for verb in rule["verbs"]:
                            out.add((group, resource, verb))
    return out


def used(kube: kubeapi.KubeAPIServer, user: str) -> tuple[set[tuple[str, str, str]], list[str]]:
    """(apiGroup, resource, verb) `user` called, and every call that was refused."""
    calls, refused = set(), []
    for event in kube.audit_events(user):
        ref = event.get("objectRef") or {}
        if not ref.get("resource"):
            continue  # discovery and the like: not resource calls
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        calls.add((ref.get("apiGroup", ""), resource, event["verb"]))
        code = (event.get("responseStatus") or {}).get("code", 200)
        if code in (401, 403):
            refused.append(f"{event['verb']} {resource} in {ref.get('namespace', '-')}: {code}")
    return calls, refused


def allowed(
    kube: kubeapi.KubeAPIServer,
    user: str,
    namespace: str,
    group: str,
    resource: str,
    verb: str,
    name: str = "",
) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:serviceaccounts", "system:authenticated"],
            "resourceAttributes": {
                "namespace": namespace,
                "group": group,
                "resource": resource,
                "verb": verb,
                "name": name,
            },
        },
    }
    status, text = kube.request(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        body=json.dumps(review).encode(),
    )
    assert status == 201, text
    return bool(json.loads(text)["status"].get("allowed"))


def apply_objects(kube: kubeapi.KubeAPIServer, docs: list[dict[str, Any]]) -> None:
    client = kubernetes.config.new_client_from_config(str(kube.kubeconfig))
    try:
        dynamic = kubernetes.dynamic.DynamicClient(client)
        for doc in docs:
            resource = dynamic.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
            dynamic.server_side_apply(
                resource,
                body=doc,
                namespace=doc["metadata"].get("namespace"),
                field_manager="chart-test",
                force_conflicts=True,
            )
    finally:
        client.close()


def service_account_token(kube: kubeapi.KubeAPIServer, namespace: str, name: str) -> str:
    body = json.dumps({"spec": {"expirationSeconds": 3600}}).encode()
    status, text = kube.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body=body
    )
    assert status == 201, text
    return str(json.loads(text)["status"]["token"])


@pytest.fixture
def rbac_objects(
    kube_apiserver: kubeapi.KubeAPIServer, tmp_path: Path
) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The two charts' ServiceAccounts and RBAC, applied; nothing else of them is needed
    (no controllers run here) and the processes run outside as those identities."""
    hub_docs = render(
        HUB,
        {
            "tls": {"existingSecret": "x"},
            "redis": {"url": "redis://r:6379"},
            "principal": {"hub": HUB_NAME},
        },
        tmp_path,
        release="hub",
        namespace=HUB_NS,
    )
    agent_docs = render(
        AGENT,
        {
            "agent": {"name": "edge-k", "endpoints": ["hub:8443"]},
            "tls": {"existingSecret": "x"},
        },
        tmp_path,
        release="edge",
        namespace=ARGOCD_NS,
    )
    rbac_kinds = {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    for namespace in (HUB_NS, ARGOCD_NS):
        kube_apiserver.create_namespace(namespace)
    apply_objects(kube_apiserver, [d for d in hub_docs + agent_docs if d["kind"] in rbac_kinds])
    yield hub_docs, agent_docs


def test_the_charts_grant_exactly_what_the_principal_and_agent_call(
    kube_apiserver: kubeapi.KubeAPIServer,
    redis_server: services.RedisServer,
    rbac_objects: tuple[list[dict[str, Any]], list[dict[str, Any]]],
    tmp_path: Path,
) -> None:
    hub_docs, agent_docs = rbac_objects
    hub_sa = by_kind(hub_docs)["ServiceAccount"][0]["metadata"]["name"]
    agent_sa = by_kind(agent_docs)["ServiceAccount"][0]["metadata"]["name"]
    hub_user = f"system:serviceaccount:{HUB_NS}:{hub_sa}"
    agent_user = f"system:serviceaccount:{ARGOCD_NS}:{agent_sa}"
    hub_config = kube_apiserver.token_kubeconfig(
        service_account_token(kube_apiserver, HUB_NS, hub_sa), path=tmp_path / "hub.kubeconfig"
    )
    agent_config = kube_apiserver.token_kubeconfig(
        service_account_token(kube_apiserver, ARGOCD_NS, agent_sa),
        path=tmp_path / "agent.kubeconfig",
    )
    hub_store = f"kubernetes://?kubeconfig={hub_config}&hub={HUB_NAME}&namespace={HUB_NS}"
    admin_store = (
        f"kubernetes://?kubeconfig={kube_apiserver.kubeconfig}&hub={HUB_NAME}&namespace={HUB_NS}"
    )
    # One principal as the hub chart's ServiceAccount (Leases, hub store), Redis holds;
    # as the chart runs it, without --auto-register.
    cluster = Cluster(
        tmp_path,
        hub_store,
        kubernetes=(hub_config, HUB_NS),
        redis=redis_server.url,
        auto_register=False,
    )
    principal = cluster.principal

    def leading() -> bool:
        samples = procs.scrape(cluster.metrics_port)
        return samples is not None and samples.value("mooring_leader") == 1.0

    # edge-k's hub namespace exists before it registers (made by whoever runs the hub,
    # e.g. with quotas): `agent create` labels it instead of creating it.
    kube_apiserver.create_namespace("edge-k")
    for name, mode in (("edge-k", "managed"), ("edge-a", "autonomous")):
        mooring("agent", "create", name, "--mode", mode, "--store", admin_store)
    try:
        principal.start()
        wait_for(leading, timeout=30, interval=0.2, what=f"the leader lease\n{principal.output()}")
        managed = cluster.add_agent(
            "edge-k",
            "managed",
            store=f"kubernetes://?kubeconfig={agent_config}&namespace={ARGOCD_NS}",
        )
        cluster.add_agent("edge-a", "autonomous")

        for name in ("edge-k", "edge-a"):
            wait_for(
                lambda name=name: cluster.connected(name),
                timeout=30,
                interval=0.3,
                what=f"{name} connected\n{principal.output()}",
            )

        # Managed: the hub's Application and AppProject reach the workload namespace,
        # change, and go (the agent creates, patches, deletes, and keeps its ConfigMap).
        manifests = tmp_path / "managed.yaml"
        for revision in ("HEAD", "v2"):
            app = application("guestbook")
            app["spec"]["source"]["targetRevision"] = revision
            manifests.write_text(yaml.safe_dump_all([project("team", description=revision), app]))
            mooring(
                "app", "apply", "-f", str(manifests), "--agent", "edge-k", "--store", admin_store
            )
            wait_for(
                lambda revision=revision: workload_revision(kube_apiserver) == revision,
                timeout=20,
                interval=0.2,
                what=f"revision {revision} on the workload namespace\n{managed.output()}",
            )
            # Argo CD reports on it; the agent sends that on and notes it in its ConfigMap.
            report_status(kube_apiserver, revision)
            wait_for(
                lambda revision=revision: hub_status(admin_store) == revision,
                timeout=20,
                interval=0.2,
                what=f"status for {revision} at the hub\n{managed.output()}",
            )
        mooring("app", "delete", "-f", str(manifests), "--agent", "edge-k", "--store", admin_store)
        wait_for(
            lambda: workload_revision(kube_apiserver) is None,
            timeout=20,
            interval=0.2,
            what="the Application deleted from the workload namespace",
        )

        # Autonomous: the agent's own objects are mirrored on the hub, updated, deleted.
        local = tmp_path / "local.yaml"
        state = str(cluster.state("edge-a"))
        for revision in ("HEAD", "v2"):
            app = application("local")
            app["spec"]["source"]["targetRevision"] = revision
            local.write_text(yaml.safe_dump_all([project("own", description=revision), app]))
            mooring("app", "apply", "-f", str(local), "--agent-state", state)
            wait_for(
                lambda revision=revision: mirror_revision(admin_store) == revision,
                timeout=20,
                interval=0.2,
                what=f"mirror at {revision}\n{principal.output()}",
            )
        mooring("app", "delete", "-f", str(local), "--agent-state", state)
        wait_for(lambda: mirror_revision(admin_store) is None, timeout=20, what="mirror deleted")
        time.sleep(2)  # a few more lease renewals
    finally:
        cluster.stop()  # gracefully: the principal leaves the member set, releases the lease

    for user, docs in ((hub_user, hub_docs), (agent_user, agent_docs)):
        calls, refused = used(kube_apiserver, user)
        assert refused == [], f"{user} was refused calls the code makes"
        grants = granted(docs)
        assert calls <= grants, f"{user} called what the chart does not grant"
        assert grants <= calls, f"{user} is granted more than the code calls"

    # SubjectAccessReview: what is granted where, and what is not.
    for group, resource, verb in granted(hub_docs):
        namespace = HUB_NS if resource in ("leases", "configmaps") else "edge-k"
        name = REVOCATIONS if resource == "configmaps" else ""
        assert allowed(kube_apiserver, hub_user, namespace, group, resource, verb, name)
    for group, resource, verb in granted(agent_docs):
        name = "mooring-agent-edge-k" if (resource, verb) in BY_NAME else ""
        assert allowed(kube_apiserver, agent_user, ARGOCD_NS, group, resource, verb, name)
    for user, namespace, group, resource, verb in [
        (hub_user, HUB_NS, "", "secrets", "get"),
        (hub_user, HUB_NS, "", "pods", "list"),
        (hub_user, "kube-system", "coordination.k8s.io", "leases", "get"),
        (hub_user, HUB_NS, "coordination.k8s.io", "leases", "update"),
        (hub_user, "", "", "namespaces", "delete"),
        (hub_user, "", "", "namespaces", "create"),  # only with principal.autoRegister
        (hub_user, "", "", "namespaces", "patch"),
        (hub_user, HUB_NS, "", "configmaps", "get"),  # any other ConfigMap
        (hub_user, HUB_NS, "", "configmaps", "patch"),
        (hub_user, "edge-k", "argoproj.io", "applications", "deletecollection"),
        (agent_user, ARGOCD_NS, "", "secrets", "list"),
        (agent_user, "default", "argoproj.io", "applications", "list"),
        (agent_user, ARGOCD_NS, "", "configmaps", "list"),
        (agent_user, ARGOCD_NS, "argoproj.io", "applicationsets", "get"),
        (agent_user, ARGOCD_NS, "", "configmaps", "patch"),  # any other ConfigMap
    ]:
        assert not allowed(kube_apiserver, user, namespace, group, resource, verb, "argocd-cm"), (
            f"{user} may {verb} {resource} in {namespace or 'the cluster'}"
        )


def workload_revision(kube: kubeapi.KubeAPIServer) -> str | None:
    status, text = kube.request(
        "GET", f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NS}/applications/guestbook"
    )
    if status == 404:
        return None
    assert status == 200, text
    return str(json.loads(text)["spec"]["source"]["targetRevision"])


def report_status(kube: kubeapi.KubeAPIServer, revision: str) -> None:
    patch = {
        "status": {
            "sync": {"status": "Synced", "revision": revision},
            "health": {"status": "Healthy"},
        }
    }
    status, text = kube.request(
        "PATCH",
        f"/apis/argoproj.io/v1alpha1/namespaces/{ARGOCD_NS}/applications/guestbook",
        body=json.dumps(patch).encode(),
        content_type="application/merge-patch+json",
    )
    assert status == 200, text


def hub_status(store: str) -> str | None:
    listed = mooring("app", "list", "--agent", "edge-k", "--store", store, "--json")
    for item in json.loads(listed.stdout)["items"]:
        if item["kind"] == "Application" and item["name"] == "guestbook":
            return ((item.get("status_object") or {}).get("sync") or {}).get("revision")
    return None


def mirror_revision(store: str) -> str | None:
    listed = mooring("app", "list", "--agent", "edge-a", "--store", store, "--json")
    for item in json.loads(listed.stdout)["items"]:
        if item["kind"] == "Application" and item["agent_name"] == "local":
            return str(item["spec"]["source"]["targetRevision"])
    return None
