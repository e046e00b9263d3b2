"""`mooring agent create|list|get|delete|set-mode` and `mooring app apply|list` on the hub,
through the CLI's entry point, on real etcd (and the test bed's kube-apiserver where the
backend decides what happens): output, exit codes, and what the store holds after."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

import principal
from mooring import _cli as cli
from mooring import _kubeapi as kubeapi
from mooring import _services as services
from principal import _hub as hub_
from principal import _pki as pki
from tests import _argocd as argocd

pytestmark = pytest.mark.integration


class Hub:
    """The CLI pointed at one hub store of the test's own."""

    def __init__(self, url: str, root: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.root = root
        self.env = {"MOORING_STORE": url, "MOORING_STORE_ROOT": root}
        self.capsys = capsys

    def run(self, *argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of `mooring ARGV`."""
        self.capsys.readouterr()
        code = cli.main(list(argv), env=self.env if env is None else env)
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str) -> str:
        code, out, err = self.run(*argv)
        assert code == 0, err
        return out

    def fails(self, *argv: str, code: int = 1) -> str:
        """The one line of a failure's stderr."""
        got, out, err = self.run(*argv)
        assert got == code, (out, err)
        assert err.count("\n") == 1 and err.startswith("mooring: "), err
        return err.strip()

    def store(self, work: Any) -> Any:
        async def go() -> Any:
            store = principal.open_hub_store(self.url, root=self.root, timeout=5.0)
            await store.connect()
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(go())


@pytest.fixture
def hub(etcd: services.EtcdCluster, prefix: str, capsys: pytest.CaptureFixture[str]) -> Hub:
    return Hub(etcd.url, f"{prefix}/", capsys)


@pytest.fixture(params=["etcd", "kubernetes"])
def any_hub(
    request: pytest.FixtureRequest, prefix: str, capsys: pytest.CaptureFixture[str]
) -> Iterator[Hub]:
    if request.param == "kubernetes":
        apiserver: kubeapi.KubeAPIServer = request.getfixturevalue("kube_apiserver")
        name = prefix.strip("/")
        url = f"kubernetes://?kubeconfig={apiserver.kubeconfig}&hub={name}&namespace-prefix={name}-"
        yield Hub(url, "/mooring/", capsys)
    else:
        yield Hub(request.getfixturevalue("etcd").url, f"{prefix}/", capsys)


def project(name: str) -> dict[str, Any]:
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AppProject",
            "metadata": {"name": name}, "spec": {"description": name}}  # fmt: skip


def manifests(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def test_create_is_idempotent_and_never_changes_a_mode(hub: Hub) -> None:
    assert hub.ok("agent", "create", "edge-1") == "agent edge-1 created (managed)\n"
    assert hub.ok("agent", "create", "edge-1") == "agent edge-1 unchanged (managed)\n"
    assert hub.fails("agent", "create", "edge-1", "--mode", "autonomous") == (
        "mooring: error: agent edge-1 is registered as managed, not autonomous:"
        " `mooring agent set-mode edge-1 autonomous` changes it"
    )
    assert hub.ok("agent", "create", "edge-0", "--mode", "autonomous") == (
        "agent edge-0 created (autonomous)\n"
    )
    assert hub.ok("agent", "list").splitlines() == [
        "NAME    MODE",
        "edge-0  autonomous",
        "edge-1  managed",
    ]


def test_list_and_get_print_tables_json_and_yaml(hub: Hub, tmp_path: Path) -> None:
    assert hub.run("agent", "list")[1:] == ("", "no agents registered\n")
    hub.ok("agent", "create", "edge-1")
    hub.ok("agent", "create", "edge-2", "--mode", "autonomous")
    hub.ok("app", "apply", "-f", manifests(tmp_path / "a.yaml", argocd.application("web")),
           "--agent", "edge-1")  # fmt: skip
    assert hub.ok("agent", "list", "-o", "wide").splitlines() == [
        "NAME    MODE        RESOURCES",
        "edge-1  managed     1",
        "edge-2  autonomous  0",
    ]
    listed = {"items": [
        {"name": "edge-1", "mode": "managed", "resources": 1},
        {"name": "edge-2", "mode": "autonomous", "resources": 0},
    ]}  # fmt: skip
    assert json.loads(hub.ok("agent", "list", "-o", "json")) == listed
    assert yaml.safe_load(hub.ok("agent", "list", "-o", "yaml")) == listed
    got = {
        "name": "edge-1",
        "mode": "managed",
        "resources": [{"kind": "Application", "name": "web", "origin": "principal"}],
    }
    assert json.loads(hub.ok("agent", "get", "edge-1", "-o", "json")) == got
    assert yaml.safe_load(hub.ok("agent", "get", "edge-1", "-o", "yaml")) == got
    assert hub.ok("agent", "get", "edge-2").splitlines() == [
        "NAME    MODE        RESOURCES",
        "edge-2  autonomous  0",
    ]
    assert hub.fails("agent", "get", "edge-9") == (
        "mooring: error: agent edge-9 is not registered (`mooring agent list` shows those that are)"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["agent", "create", "Edge_1"],
        ["agent", "get", "Edge_1"],
        ["agent", "delete", "Edge_1"],
        ["agent", "set-mode", "Edge_1", "managed"],
    ],
)
def test_agent_names_are_dns_labels_or_a_usage_error(hub: Hub, argv: list[str]) -> None:
    line = hub.fails(*argv, code=2)
    assert line.startswith(
        f"mooring: agent {argv[1]}: argument NAME: invalid agent name 'Edge_1': at most 63"
    )
    assert hub.store(lambda s: s.list_agents()) == []


def test_set_mode_needs_a_known_agent_and_a_valid_mode(hub: Hub) -> None:
    assert hub.fails("agent", "set-mode", "edge-1", "autonomous").endswith(
        "agent edge-1 is not registered (`mooring agent list` shows those that are)"
    )
    hub.ok("agent", "create", "edge-1")
    assert hub.fails("agent", "set-mode", "edge-1", "both", code=2).startswith(
        "mooring: agent set-mode: argument MODE: invalid choice: 'both'"
    )
    assert hub.ok("agent", "set-mode", "edge-1", "managed") == "agent edge-1 unchanged (managed)\n"


def test_set_mode_keeps_resources_only_with_force(any_hub: Hub, tmp_path: Path) -> None:
    hub = any_hub
    hub.ok("agent", "create", "edge-1")
    code, out, err = hub.run("agent", "set-mode", "edge-1", "autonomous")
    assert (code, out) == (0, "agent edge-1 mode changed: managed -> autonomous\n")
    assert err == (
        "note: restart agent edge-1 with --mode autonomous, and a new --state file (a SQLite"
        " store keeps the mode it was made for). Until its session ends it runs as managed;"
        " then every connect with --mode managed is refused (mode_conflict)\n"
    )
    assert json.loads(hub.ok("agent", "get", "edge-1", "-o", "json"))["mode"] == "autonomous"
    path = manifests(tmp_path / "a.yaml", argocd.application("web"))
    assert "agent edge-1 is autonomous" in hub.fails(
        "app", "apply", "-f", path, "--agent", "edge-1"
    )

    hub.ok("agent", "set-mode", "edge-1", "managed")
    hub.ok("app", "apply", "-f", path, "--agent", "edge-1")
    assert hub.fails("agent", "set-mode", "edge-1", "autonomous") == (
        "mooring: error: agent edge-1 has 1 resource(s) on the hub (the hub's desired state),"
        " which a mode change keeps as they are: delete them first (`mooring app delete`),"
        " or pass --force"
    )
    assert json.loads(hub.ok("agent", "get", "edge-1", "-o", "json"))["mode"] == "managed"
    hub.ok("agent", "set-mode", "edge-1", "autonomous", "--force")
    got = json.loads(hub.ok("agent", "get", "edge-1", "-o", "json"))
    assert got["mode"] == "autonomous" and len(got["resources"]) == 1


def test_delete_refuses_while_it_has_resources_unless_cascade(any_hub: Hub, tmp_path: Path) -> None:
    hub = any_hub
    hub.ok("agent", "create", "edge-1")
    docs = [argocd.application("web"), argocd.application("api"), project("team")]
    hub.ok("app", "apply", "-f", manifests(tmp_path / "a.yaml", *docs), "--agent", "edge-1")
    assert hub.fails("agent", "delete", "edge-1") == (
        "mooring: error: agent edge-1 still has 3 resource(s) on the hub (AppProject team,"
        " Application api, Application web): delete them with `mooring app delete`,"
        " or pass --cascade"
    )
    assert len(json.loads(hub.ok("agent", "get", "edge-1", "-o", "json"))["resources"]) == 3
    out = hub.ok("agent", "delete", "edge-1", "--cascade")
    assert sorted(out.splitlines()[:-1]) == [
        "AppProject team deleted",
        "Application api deleted",
        "Application web deleted",
    ]
    assert out.splitlines()[-1] == "agent edge-1 deleted"
    assert hub.run("agent", "list")[1] == ""
    assert hub.store(lambda s: s.list_resources("edge-1"))[0] == []
    assert hub.fails("agent", "delete", "edge-1").endswith("agent edge-1 is not registered"
                                                            " (`mooring agent list` shows those that are)")  # fmt: skip
    hub.ok("agent", "create", "edge-2")
    assert hub.ok("agent", "delete", "edge-2") == "agent edge-2 deleted\n"  # nothing to cascade


def test_issue_cert_writes_the_agents_certificate_with_the_ca(hub: Hub, tmp_path: Path) -> None:
    ca_dir = tmp_path / "pki"
    pki.init_ca(ca_dir)
    out = hub.ok("agent", "create", "edge-c", "--issue-cert", "--pki-dir", str(ca_dir))
    folder = ca_dir / "agents" / "edge-c"
    assert out.splitlines() == [
        "agent edge-c created (managed)",
        f"certificate written to {folder} (tls.crt, tls.key, ca.crt: its --tls-dir)",
    ]
    cert = x509.load_pem_x509_certificate((folder / "tls.crt").read_bytes())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [
        pki.agent_spiffe_id("edge-c")
    ]
    first = (folder / "tls.crt").read_bytes()
    out = hub.ok("agent", "create", "edge-c", "--issue-cert", "--pki-dir", str(ca_dir))
    assert out.splitlines()[1] == f"certificate kept in {folder} (already issued)"
    assert (folder / "tls.crt").read_bytes() == first

    # A local cluster's state dir names both the hub store and the CA.
    state = tmp_path / "cluster"
    state.mkdir()
    (state / "cluster.json").write_text(json.dumps({"store": hub.url, "pki": str(ca_dir)}))
    env = {"MOORING_STORE_ROOT": hub.root}
    code, out, _ = hub.run(
        "agent", "create", "edge-d", "--issue-cert", "--dir", str(state), env=env
    )
    assert code == 0 and (ca_dir / "agents" / "edge-d" / "tls.crt").exists()

    # Without a CA to use, nothing is registered.
    line = hub.fails("agent", "create", "edge-e", "--issue-cert", code=2)
    assert line == (
        "mooring: agent create: --issue-cert needs --pki-dir (the CA folder of `mooring pki"
        " init`) or --dir of a local cluster"
    )
    line = hub.fails("agent", "create", "edge-e", "--issue-cert", "--pki-dir", str(tmp_path / "no"))
    assert line.startswith("mooring: error: ")
    assert hub.store(lambda s: s.get_agent("edge-e")) is None


def test_apply_to_an_unregistered_agent_fails_unless_create_agent(hub: Hub, tmp_path: Path) -> None:
    path = manifests(tmp_path / "a.yaml", argocd.application("web"), project("team"))
    assert hub.fails("app", "apply", "-f", path, "--agent", "edge-99") == (
        "mooring: error: agent edge-99 is not registered: `mooring agent create edge-99`"
        " registers it (or pass --create-agent)"
    )
    assert hub.store(lambda s: s.list_agents()) == []
    assert hub.store(lambda s: s.list_resources("edge-99"))[0] == []
    out = hub.ok("app", "apply", "-f", path, "--agent", "edge-99", "--create-agent")
    assert out.splitlines() == [
        "agent edge-99 created (managed)",
        "Application web created for agent edge-99",
        "AppProject team created for agent edge-99",
    ]
    changed = manifests(tmp_path / "b.yaml", argocd.application("web", path="v2"), project("team"))
    assert hub.ok("app", "apply", "-f", changed, "--agent", "edge-99").splitlines() == [
        "Application web configured for agent edge-99",
        "AppProject team unchanged for agent edge-99",
    ]


def test_app_list_shows_every_agents_resources_with_sync_and_health(
    hub: Hub, tmp_path: Path
) -> None:
    hub.ok("agent", "create", "edge-1")
    hub.ok("agent", "create", "edge-2", "--mode", "autonomous")
    hub.ok("agent", "create", "edge-3")  # nothing yet
    path = manifests(tmp_path / "a.yaml", argocd.application("web"), argocd.application("api"))
    hub.ok("app", "apply", "-f", path, "--agent", "edge-1")

    async def report(store: principal.HubStore) -> None:  # what the replicas write
        web = await store.get_resource("edge-1", "Application", "web")
        status = {"sync": {"status": "Synced"}, "health": {"status": "Healthy"}}
        await store.put_status("edge-1", "Application", "web", status=status,
                               spec_version=web.version)  # fmt: skip
        mirrored = {"sync": {"status": "OutOfSync"}, "health": {"status": "Progressing"}}
        obj = {"metadata": {}, "spec": argocd.application("local")["spec"]}
        await store.mirror_upsert("edge-2", "Application", "local", obj=obj, version=1,
                                  status=mirrored)  # fmt: skip
        # edge-1 applied web; it answered about an older api than the current one.
        api = await store.get_resource("edge-1", "Application", "api")
        await store.put_deliveries("edge-1", {
            ("Application", "web"): hub_.Delivery(web.checksum, web.version, True, "T1"),
            ("Application", "api"): hub_.Delivery("0" * 64, api.version - 1, True, "T0"),
        })  # fmt: skip

    hub.store(report)
    age = r"\d+s"  # written in this test: seconds ago
    assert_lines(
        hub.ok("app", "list"),
        "AGENT   KIND         NAME          MODE        DELIVERED   SYNC       HEALTH       AGE",
        rf"edge-1  Application  api           managed     pending {age} -          -            {age}",
        rf"edge-1  Application  web           managed     yes         Synced     Healthy      {age}",
        rf"edge-2  Application  edge-2-local  autonomous  -           OutOfSync  Progressing  {age}",
    )
    assert_lines(
        hub.ok("app", "list", "--agent", "edge-2"),
        "AGENT   KIND         NAME          MODE        DELIVERED  SYNC       HEALTH       AGE",
        rf"edge-2  Application  edge-2-local  autonomous  -          OutOfSync  Progressing  {age}",
    )
    wide = hub.ok("app", "list", "-o", "wide").splitlines()
    assert wide[0].split() == [
        "AGENT", "KIND", "NAME", "MODE", "DELIVERED", "SYNC", "HEALTH", "AGE", "VERSION",
        "CHECKSUM", "ORIGIN",
    ]  # fmt: skip
    assert wide[3].split()[-1] == "agent" and wide[3].split()[-3] == "1"

    data = json.loads(hub.ok("app", "list", "-o", "json"))
    assert [(i["agent"], i["name"], i["sync"], i["health"]) for i in data["items"]] == [
        ("edge-1", "api", "-", "-"),
        ("edge-1", "web", "Synced", "Healthy"),
        ("edge-2", "edge-2-local", "OutOfSync", "Progressing"),
    ]
    api, web, mirror = (i["delivery"] for i in data["items"])
    assert web == {"state": "yes", "at": "T1"} and mirror == {"state": "-"}
    assert api["state"] == "pending" and api["last_answer"]["at"] == "T0"
    assert api["since"] == data["items"][0]["updated_at"] != ""
    assert yaml.safe_load(hub.ok("app", "list", "-o", "yaml")) == data
    one = json.loads(hub.ok("app", "list", "--agent", "edge-1", "--json"))  # the old flag
    assert (one["agent"], one["mode"]) == ("edge-1", "managed")
    assert one == json.loads(hub.ok("app", "list", "--agent", "edge-1", "-o", "json"))
    assert [i["name"] for i in one["items"]] == ["api", "web"]

    assert hub.run("app", "list", "--agent", "edge-3") == (
        0,
        "",
        "no resources found for agent edge-3\n",
    )
    assert hub.run("app", "list", "--agent", "edge-4")[2] == (
        "no resources found for agent edge-4 (it is not registered)\n"
    )


def assert_lines(text: str, *patterns: str) -> None:
    lines = text.splitlines()
    assert len(lines) == len(patterns), text
    for line, pattern in zip(lines, patterns, strict=True):
        assert re.fullmatch(re.sub(" +", r"\\s+", pattern.rstrip()), line), (line, pattern)


def test_app_get_shows_one_object_whole_with_its_delivery(hub: Hub, tmp_path: Path) -> None:
    hub.ok("agent", "create", "edge-1")
    path = manifests(tmp_path / "a.yaml", argocd.application("web"), project("team"))
    hub.ok("app", "apply", "-f", path, "--agent", "edge-1")
    table = hub.ok("app", "get", "web", "--agent", "edge-1").splitlines()
    assert table[0].split() == [
        "AGENT",
        "KIND",
        "NAME",
        "MODE",
        "DELIVERED",
        "SYNC",
        "HEALTH",
        "AGE",
    ]
    assert table[1].split()[:5] == ["edge-1", "Application", "web", "managed", "pending"]
    doc = yaml.safe_load(hub.ok("app", "get", "web", "--agent", "edge-1", "-o", "yaml"))
    assert doc == json.loads(hub.ok("app", "get", "web", "--agent", "edge-1", "-o", "json"))
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == (
        "argoproj.io/v1alpha1", "Application", "web"
    )  # fmt: skip
    assert doc["spec"] == argocd.application("web")["spec"]
    assert doc["metadata"]["creationTimestamp"] and doc["mooring"]["agent"] == "edge-1"
    assert doc["mooring"]["delivered"]["state"] == "pending"
    team = json.loads(
        hub.ok("app", "get", "team", "--kind", "AppProject", "--agent", "edge-1", "-o", "json")
    )
    assert team["kind"] == "AppProject"
    assert hub.fails("app", "get", "api", "--agent", "edge-1") == (
        "mooring: error: Application api not found for agent edge-1"
        " (`mooring app list --agent edge-1` shows what it has)"
    )
    assert "is not registered" in hub.fails("app", "get", "web", "--agent", "edge-9")
    assert "app get: the following arguments are required: NAME" in hub.fails(
        "app", "get", "--agent", "edge-1", code=2
    )


def _actions(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", argparse.Action([], name, help=helped.get(name))
                yield from _actions(sub, f"{path} {name}")
        elif action.dest != "help":
            yield path, action


def test_every_subcommand_and_flag_has_a_help_line() -> None:
    walked = list(_actions(cli.build_parser(), "mooring"))
    missing = [
        f"{where} {action.option_strings or action.dest}"
        for where, action in walked
        if not action.help
    ]
    assert missing == []
    # The walk reached every level: top flags, subcommands and their subcommands.
    places = {where for where, _ in walked}
    assert {"mooring", "mooring pki issue agent", "mooring principal serve", "mooring up"} <= places
    assert len(walked) > 150


def test_apply_to_an_agents_local_store_says_created_configured_or_unchanged(
    hub: Hub, tmp_path: Path
) -> None:
    from agent import _store as agent_store

    state = tmp_path / "edge-a.db"
    agent_store.AgentStore(state, mode="autonomous").close()
    path = manifests(tmp_path / "a.yaml", argocd.application("web"))
    assert (
        hub.ok("app", "apply", "-f", path, "--agent-state", str(state))
        == "Application web created\n"
    )
    assert hub.ok("app", "apply", "-f", path, "--agent-state", str(state)) == (
        "Application web unchanged\n"
    )
    changed = manifests(tmp_path / "b.yaml", argocd.application("web", path="v2"))
    assert hub.ok("app", "apply", "-f", changed, "--agent-state", str(state)) == (
        "Application web configured\n"
    )
    assert hub.ok("app", "list", "--agent-state", str(state)).splitlines() == [
        "KIND         NAME  SYNC  HEALTH",
        "Application  web   -     -",
    ]
