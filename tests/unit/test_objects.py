"""proto.objects: the one validator of names and manifests, and what of an object travels."""

from __future__ import annotations

from typing import Any

import pytest

from proto import objects

pytestmark = pytest.mark.unit


def app(name: Any = "guestbook", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {"name": name, **meta},
        "spec": {"project": "default"},
    }


@pytest.mark.parametrize(
    "name", ["guestbook", "a", "my-app.v2", "0-starts-with-a-digit", "x" * 253, "a.b.c"]
)
def test_kubernetes_names_are_accepted(name: str) -> None:
    assert objects.validate_manifest(app(name)) == ("Application", name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Bad_Name", "invalid Application name 'Bad_Name'"),
        ("UPPER", "invalid Application name"),
        ("a/b", "invalid Application name"),
        ("..", "invalid Application name"),
        ("-lead", "invalid Application name"),
        ("trail.", "invalid Application name"),
        ("x" * 254, "invalid Application name 'xxxxxxxx"),
        ("", "Application without metadata.name"),
        (None, "Application without metadata.name"),
        (7, "Application without metadata.name"),
        ("line\nbreak", "invalid Application name 'line\\\\nbreak'"),
    ],
)
def test_invalid_names_are_one_line_errors(name: Any, message: str) -> None:
    with pytest.raises(objects.InvalidObjectError) as caught:
        objects.validate_manifest(app(name))
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert len(str(caught.value)) < 300  # a huge name is quoted in part only


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "Application", "metadata": {"name": "a"}}, "Application a has no spec"),
        ({**app(), "spec": ["x"]}, "Application guestbook: spec must be a map"),
        ({**app(), "kind": "Deployment"}, "unsupported kind 'Deployment'"),
        ({**app(), "apiVersion": "argoproj.io/v1"}, "Application: unsupported apiVersion"),
        ({"kind": "AppProject"}, "AppProject without metadata.name"),
        (["not", "a", "map"], "a manifest must be a map, got list"),
        (app(labels={"bad key!": "x"}), "Application guestbook: metadata.labels: invalid key"),
        (app(labels={"ok": "no spaces"}), "Application guestbook: metadata.labels[ok]: invalid"),
        (app(labels={"ok": 1}), "Application guestbook: metadata.labels[ok]: invalid value"),
        (app(labels={"ok": "x" * 64}), "Application guestbook: metadata.labels[ok]: invalid"),
        (app(labels=["x"]), "Application guestbook: metadata.labels must be a map"),
        (app(annotations={"a": 1}), "metadata.annotations[a] must be a string"),
        (app(annotations={"a": "x" * 300_000}), "metadata.annotations total 300001 bytes"),
        (app(annotations={"Bad_Prefix/x": "v"}), "metadata.annotations: invalid key"),
        (app(finalizers="one"), "metadata.finalizers must be a list"),
        (app(finalizers=["not a name"]), "metadata.finalizers: invalid key 'not a name'"),
        (
            {**app(), "spec": {"info": [{"name": "x", "value": "y" * 950_000}]}},
            "Application guestbook is 950",
        ),
        ({**app(), "spec": {"bad": float("nan")}}, "not representable as JSON"),
    ],
)
def test_invalid_manifests_are_one_line_errors(doc: Any, message: str) -> None:
    with pytest.raises(objects.InvalidObjectError) as caught:
        objects.validate_manifest(doc)
    assert message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_status_report_needs_no_spec() -> None:
    report = {"kind": "Application", "metadata": {"name": "a"}, "status": {"sync": {}}}
    assert objects.validate_manifest(report, need_spec=False) == ("Application", "a")


@pytest.mark.parametrize("name", ["edge-1", "a", "x" * 63])
def test_agent_names_are_dns_labels(name: str) -> None:
    assert objects.validate_agent_name(name) == name


@pytest.mark.parametrize("name", ["Edge", "edge_1", "edge.1", "x" * 64, "", "-a", "a b"])
def test_other_agent_names_are_refused(name: str) -> None:
    with pytest.raises(objects.InvalidObjectError, match="agent"):
        objects.validate_agent_name(name)


def test_labels_annotations_finalizers_and_spec_travel_and_nothing_else() -> None:
    doc = app(
        namespace="argocd",
        labels={"team": "web", "mooring.io/agent": "edge-1"},
        annotations={
            "notifications.argoproj.io/subscribe.on-sync-succeeded.slack": "deploys",
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "mooring.io/agent-version": "7",
        },
        finalizers=["resources-finalizer.argocd.argoproj.io"],
        resourceVersion="42",
        uid="0b3b2a7c",
        generation=3,
        creationTimestamp="2026-01-01T00:00:00Z",
        managedFields=[{"manager": "kubectl"}],
        ownerReferences=[{"kind": "ApplicationSet", "name": "set"}],
    )
    doc["status"] = {"sync": {"status": "Synced"}}
    doc["operation"] = {"sync": {}}
    assert objects.synced_object(doc) == {
        "metadata": {
            "labels": {"team": "web"},
            "annotations": {
                "notifications.argoproj.io/subscribe.on-sync-succeeded.slack": "deploys"
            },
            "finalizers": ["resources-finalizer.argocd.argoproj.io"],
        },
        "spec": {"project": "default"},
    }


def test_an_object_without_finalizers_keeps_its_old_checksum_form() -> None:
    # Objects stored before finalizers travelled hash the same: empty keys are left out.
    assert objects.synced_object(app(labels={}, finalizers=[])) == {
        "metadata": {},
        "spec": {"project": "default"},
    }
