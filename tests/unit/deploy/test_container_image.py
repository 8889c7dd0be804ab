"""deploy/Containerfile builds the image the Kubernetes manifests run (`image: tally`). The development
machines and CI have no container engine, so the image is never built here: these tests read the
Containerfile (a small parser of its instructions) and check it against the repository and the
manifests. Every file it copies is in the build context, the Python install is the project's own
(requirements.txt with constraints.txt, the local packages editable, the C extensions compiled with a
compiler that stays out of the runtime), every module a container runs is installed, every runtime
path the manifests or the services name is in the runtime stage, the runtime runs as the manifests'
non-root user without secrets or a command of its own, and deploy/README.md builds the tag the
manifests use."""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
K8S = ROOT / "deploy" / "k8s"
IMAGE = "tally"
#: the file and folder settings the service kit reads in every process (beside each service's settings.SPEC)
KIT_PATH_ENV = {"TALLY_STATE_DIR", "TALLY_SCHEMAS_DIR", "TALLY_JWT_SECRET_FILE", "TALLY_JWT_PUBLIC_KEY_FILE"}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
Doc = dict[str, Any]


# ---------------------------------------------------------------------- a small Containerfile parser


@dataclass
class Instruction:
    cmd: str  # upper case: FROM, RUN, COPY, ...
    args: str  # the rest of the (joined) line
    line: int
    workdir: PurePosixPath  # the WORKDIR in force when the instruction runs

    def words(self) -> list[str]:
        text = self.args.strip()
        if text.startswith("["):  # the exec (JSON) form
            return [str(w) for w in json.loads(text)]
        return shlex.split(text, comments=False)


@dataclass
class Copy:
    sources: list[str]
    dest: PurePosixPath  # absolute
    dest_is_dir: bool
    stage: str | None  # --from
    line: int


@dataclass
class Stage:
    index: int
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, cmd: str) -> list[Instruction]:
        return [i for i in self.instructions if i.cmd == cmd]

    def copies(self) -> list[Copy]:
        out = []
        for ins in self.of("COPY") + self.of("ADD"):
            words = ins.words()
            flags = dict(w.partition("=")[::2] for w in words if w.startswith("--"))
            paths = [w for w in words if not w.startswith("--")]
            assert len(paths) >= 2, f"line {ins.line}: COPY needs a source and a destination"
            *sources, dest = paths
            out.append(Copy(sources, ins.workdir / dest, dest.endswith("/") or len(sources) > 1, flags.get("--from"), ins.line))
        return out

    @property
    def workdir(self) -> PurePosixPath:
        return self.instructions[-1].workdir if self.instructions else PurePosixPath("/")

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for ins in self.of("ENV"):
            words = ins.words()
            if words and "=" not in words[0]:  # the legacy form: ENV KEY value
                out[words[0]] = " ".join(words[1:])
                continue
            for w in words:
                key, _, value = w.partition("=")
                out[key] = value.replace("$PATH", "").replace("${PATH}", "")
        return out

    def run_text(self) -> str:
        return "\n".join(i.args for i in self.of("RUN"))


def logical_lines(text: str) -> list[tuple[int, str]]:
    """The instructions, one per entry: continuations joined, comment lines dropped (also inside one)."""
    out: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if not current:
            start = n
        if stripped.endswith("\\"):
            current.append(stripped[:-1].strip())
            continue
        current.append(stripped)
        out.append((start, " ".join(p for p in current if p)))
        current = []
    assert not current, "the Containerfile ends inside a continued line"
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)


def parse(text: str) -> list[Stage]:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    workdir = PurePosixPath("/")
    for line, instruction in logical_lines(text):
        cmd, _, args = instruction.partition(" ")
        cmd = cmd.upper()
        if cmd == "FROM":
            words = substitute(args, global_args).split()
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            parent = next((s for s in stages if s.name == base), None)
            workdir = parent.workdir if parent else PurePosixPath("/")
            stages.append(Stage(len(stages), base, name))
            continue
        if not stages:
            assert cmd == "ARG", f"line {line}: only ARG may come before the first FROM"
            key, _, value = args.strip().partition("=")
            global_args[key] = value.strip('"')
            continue
        if cmd == "WORKDIR":
            workdir = workdir / args.strip()
        stages[-1].instructions.append(Instruction(cmd, args, line, workdir))
    return stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse(CONTAINERFILE.read_text())


def stage_named(stages: list[Stage], name: str) -> Stage:
    found = [s for s in stages if s.name == name or str(s.index) == name]
    assert len(found) == 1, f"no stage {name!r}"
    return found[0]


def venv_stage(stages: list[Stage]) -> Stage:
    found = [s for s in stages if re.search(r"pip install\b.*-r requirements\.txt", s.run_text())]
    assert len(found) == 1, "one stage installs requirements.txt"
    return found[0]


def resolve(stages: list[Stage], stage: Stage, path: PurePosixPath) -> tuple[str, Any]:
    """Where ``path`` of ``stage``'s filesystem comes from: ("context", repo path) for the build context,
    ("built", (stage, path)) for what a stage's RUN made, ("missing", None) when no COPY puts it there.
    The last COPY covering the path wins, as in a build."""
    for copy in reversed(stage.copies()):
        for source in copy.sources:
            src = PurePosixPath(source.rstrip("/") or ".")
            if copy.dest_is_dir and not source.endswith("/") and copy.stage is None and (ROOT / source).is_file():
                target = copy.dest / src.name
            else:
                target = copy.dest
            if path != target and target not in path.parents:
                continue
            rel = path.relative_to(target)
            if copy.stage is None:
                if ignored((src / rel).as_posix(), ignore_rules()):
                    continue  # not in the build context: this COPY does not bring it
                return "context", ROOT / src / rel
            origin = stage_named(stages, copy.stage)
            found = resolve(stages, origin, origin.workdir / src / rel)
            return found if found[0] != "missing" else ("built", (origin, origin.workdir / src / rel))
    parent = next((s for s in stages if s.name == stage.base), None)
    if parent is not None:
        return resolve(stages, parent, path)
    return "missing", None


def in_image(stages: list[Stage], path: PurePosixPath) -> tuple[str, Any]:
    return resolve(stages, stages[-1], path)


def until(stage: Stage, line: int) -> Stage:
    """``stage`` as it is when the instruction at ``line`` runs."""
    return Stage(stage.index, stage.base, stage.name, [i for i in stage.instructions if i.line < line])


# ---------------------------------------------------------------------- .dockerignore


def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """Docker's rules: Go filepath.Match patterns (``*`` stops at ``/``, ``**`` crosses it), a pattern
    matching a folder excludes what is in it, ``!`` re-includes, the last match wins."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        rx, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pattern[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pattern[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                rx, i = rx + pattern[i:end + 1], end + 1
            else:
                rx, i = rx + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(rx + "(?:/.*)?$")))
    return rules


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    verdict = False
    for negate, rx in rules:
        if rx.match(rel):
            verdict = not negate
    return verdict


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    # the tests run from a checkout (make test, CI's clone): without git's list the context check proves nothing
    assert out.returncode == 0, f"git ls-files failed: {out.stderr.strip()}"
    return [f for f in out.stdout.split("\0") if f]


def test_every_copy_from_the_context_names_a_path_in_the_repository_that_the_context_keeps(stages: list[Stage]) -> None:
    rules = ignore_rules()
    tracked = tracked_files()
    names = {s.name for s in stages}
    for stage in stages:
        for copy in stage.copies():
            if copy.stage is not None:
                assert copy.stage in names and stage_named(stages, copy.stage).index < stage.index, copy
                continue
            for source in copy.sources:
                rel = source.rstrip("/")
                assert not PurePosixPath(rel).is_absolute() and ".." not in PurePosixPath(rel).parts, copy
                assert (ROOT / rel).exists(), f"line {copy.line}: {source} is not in the repository"
                kept = [f for f in tracked if (f == rel or f.startswith(rel + "/")) and not ignored(f, rules)]
                assert kept, f"line {copy.line}: .dockerignore leaves nothing of {source} in the context"
                lost = [f for f in tracked if (f == rel or f.startswith(rel + "/")) and ignored(f, rules)]
                assert lost == [], f"line {copy.line}: .dockerignore drops tracked files the image copies"


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", ".state/jwt-secret", ".state/kafka-secure/credentials.json", "results/bench.json",
    "services/console/web/node_modules/react/index.js", "services/console/web/dist/index.html",
    "libs/tally_kit/tally_kit/__pycache__/auth.cpython-311.pyc", ".mypy_cache/3.11/x.json", ".ruff_cache/x",
    ".pytest_cache/v/x", "services/metering/tally_metering/_fastavro_fields.cpython-311-x86_64-linux-gnu.so",
    "services/metering/tally_metering.egg-info/PKG-INFO", "deploy/kafka/libs/kafka-clients-4.1.1.jar",
])
def test_the_build_context_leaves_out_local_state_secrets_builds_and_caches(path: str) -> None:
    assert ignored(path, ignore_rules()), path


# ---------------------------------------------------------------------- the stages


def test_the_console_is_built_by_node_20_with_npm_ci_and_the_build_script(stages: list[Stage]) -> None:
    node = [s for s in stages if s.base.split(":")[0].split("/")[-1] == "node"]
    assert len(node) == 1 and node[0].base.split(":")[1].startswith("20"), [s.base for s in stages]
    (console,) = node
    runs = console.run_text()
    assert "npm ci" in runs and "npm run build" in runs
    assert json.loads((ROOT / "services" / "console" / "web" / "package.json").read_text())["scripts"]["build"].startswith("vite build")
    # npm ci installs from the lock file: it is in the stage before npm ci runs
    npm_ci = next(i for i in console.of("RUN") if "npm ci" in i.args)
    web = ROOT / "services" / "console" / "web"
    for name in ("package.json", "package-lock.json"):
        assert resolve(stages, until(console, npm_ci.line), npm_ci.workdir / name) == ("context", web / name), name


def test_the_python_stages_share_one_python_3_11_base(stages: list[Stage]) -> None:
    venv, runtime = venv_stage(stages), stages[-1]
    # the venv's interpreter is a symlink into its base image: the runtime must be the same image
    assert venv.base == runtime.base and re.fullmatch(r"(docker\.io/(library/)?)?python:3\.11[.\w-]*(@sha256:\w+)?", runtime.base), \
        (venv.base, runtime.base)
    assert venv.workdir == runtime.workdir, "editable installs point at absolute paths: same WORKDIR in both"


def test_the_python_install_is_the_projects_own_requirements_with_constraints(stages: list[Stage]) -> None:
    venv = venv_stage(stages)
    runs = venv.run_text()
    assert re.search(r"python3? -m venv \.venv\b", runs), "a venv, as the Makefile's setup makes"
    assert re.search(r"pip install (-q )?-r requirements\.txt -c constraints\.txt", runs), "the Makefile's install line"
    # both files, and every local package requirements.txt installs, are in the stage when pip runs
    pip = next(i for i in venv.of("RUN") if "-r requirements.txt" in i.args)
    staged = until(venv, pip.line)
    for name in ("requirements.txt", "constraints.txt"):
        assert resolve(stages, staged, pip.workdir / name) == ("context", ROOT / name), name
    for local in editable_packages():
        found = resolve(stages, staged, pip.workdir / local / "pyproject.toml")
        assert found == ("context", ROOT / local / "pyproject.toml"), local


def editable_packages() -> list[str]:
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    found = [ln[2:].strip() for ln in lines if ln.startswith("-e ")]
    assert found, "requirements.txt installs the local packages editable"
    return found


def c_extensions() -> dict[str, str]:
    """{module: service folder} of every Extension a services/*/setup.py builds."""
    out = {}
    for setup in sorted(ROOT.glob("services/*/setup.py")):
        for module in re.findall(r"Extension\(\s*[\"']([\w.]+)[\"']", setup.read_text()):
            out[module] = setup.parent.relative_to(ROOT).as_posix()
    return out


def test_the_c_extensions_are_compiled_in_the_build_stage_and_the_compiler_stays_out_of_the_runtime(stages: list[Stage]) -> None:
    extensions = c_extensions()
    assert {"tally_metering._fastavro_fields", "tally_attribution._impression_reader"} <= set(extensions)
    venv = venv_stage(stages)
    installs = " ".join(i.args for i in venv.of("RUN") if "apt-get install" in i.args)
    assert re.search(r"\bgcc\b", installs), "setup.py's extensions need gcc in the stage that runs pip"
    # optional=True in setup.py: a failed compile installs silently, so the image imports each one
    for stage in (venv, stages[-1]):
        for module in extensions:
            assert re.search(rf"import [\w., ]*\b{re.escape(module)}\b", stage.run_text()), (stage.name, module)
    runtime = stages[-1]
    assert not re.search(r"\b(gcc|g\+\+|build-essential|libc6-dev)\b", runtime.run_text()), "no compiler in the runtime"
    assert venv.name != runtime.name and runtime.base == venv.base  # a separate stage, not FROM the builder


def test_the_runtime_has_the_venv_on_path_and_every_local_package_at_its_editable_path(stages: list[Stage]) -> None:
    runtime, venv = stages[-1], venv_stage(stages)
    venv_dir = venv.workdir / ".venv"
    path = runtime.env().get("PATH", "")
    assert path.split(":")[0] == str(venv_dir / "bin"), "`python` in the manifests' args is the venv's"
    assert in_image(stages, venv_dir / "bin" / "python")[0] == "built"
    for local in editable_packages():
        kind, where = in_image(stages, runtime.workdir / local / "pyproject.toml")
        assert (kind, where) == ("context", ROOT / local / "pyproject.toml"), local


# ---------------------------------------------------------------------- the manifests' containers


def kustomize() -> str | None:
    for candidate in (shutil.which("kustomize"), ROOT / ".state" / "bin" / "kustomize"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


@functools.cache
def manifests() -> list[Doc]:
    """Every overlay rendered by kustomize when it is installed (`make render-manifests`); without it the
    base's resources as kustomize lists them and every overlay's own resources."""
    docs: list[Doc] = []
    tool = kustomize()
    if tool is not None:
        for overlay in sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir()):
            out = subprocess.run([tool, "build", str(overlay)], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            docs += [d for d in yaml.safe_load_all(out.stdout) if d]
        return docs
    for folder in [K8S / "base", *sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())]:
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        for resource in kustomization.get("resources", []):
            if (folder / resource).is_file():
                docs += [d for d in yaml.safe_load_all((folder / resource).read_text()) if d]
    return docs


def pod_specs(docs: list[Doc]) -> list[tuple[str, Doc]]:
    out = []
    for doc in docs:
        if doc.get("kind") not in WORKLOAD_KINDS:
            continue
        spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
        out.append((f"{doc['kind']}/{doc['metadata']['name']}", spec["template"]["spec"]))
    return out


def image_name(ref: str) -> str:
    """``localhost:5000/tally:dev`` -> ``localhost:5000/tally`` (no tag, no digest)."""
    ref = ref.split("@", 1)[0]
    head, _, tag = ref.rpartition(":")
    return head if head and "/" not in tag else ref


def overlay_images() -> dict[str, list[Doc]]:
    return {p.name: yaml.safe_load((p / "kustomization.yaml").read_text()).get("images", [])
            for p in sorted((K8S / "overlays").iterdir()) if p.is_dir()}


def tally_containers(docs: list[Doc]) -> list[tuple[str, Doc, Doc]]:
    """Every container of the image: ``tally`` in the base, the overlays' ``images:`` name once rendered."""
    names = {IMAGE} | {i.get("newName", IMAGE) for entries in overlay_images().values() for i in entries if i["name"] == IMAGE}
    out = [(name, pod, c) for name, pod in pod_specs(docs) for c in pod.get("initContainers", []) + pod["containers"]
           if image_name(c["image"]) in names]
    assert out, "the manifests run no container of the image"
    return out


def module_folder(module: str) -> Path:
    found = [p.parent for p in ROOT.glob(f"*/*/{module}/__main__.py") if p.parts[-4] in {"services", "libs"}]
    assert len(found) == 1, f"{module}: no runnable package under services/ or libs/"
    return found[0]


def test_the_image_sets_no_command_so_each_containers_args_are_the_whole_command_line(stages: list[Stage]) -> None:
    runtime = stages[-1]
    assert runtime.of("ENTRYPOINT") == [], "the manifests' args would be appended to it"
    assert runtime.of("CMD") == [], "no default command beyond the manifests'"
    for name, _, container in tally_containers(manifests()):
        assert "command" not in container, f"{name}: the image has no ENTRYPOINT for `command` to replace"


def test_every_container_runs_python_m_a_package_the_image_installs(stages: list[Stage]) -> None:
    runtime = stages[-1]
    installed = editable_packages()
    for name, _, container in tally_containers(manifests()):
        args = container.get("command", []) + container.get("args", [])
        assert args[:2] == ["python", "-m"], f"{name}: {args}"
        module = args[2]
        folder = module_folder(module)
        project = folder.parent.relative_to(ROOT).as_posix()
        assert project in installed, f"{name}: {project} is not in requirements.txt"
        kind, where = in_image(stages, runtime.workdir / project / module / "__main__.py")
        assert (kind, where) == ("context", folder / "__main__.py"), f"{name}: {module} is not in the runtime"
        # its subcommand is one the module knows
        sub = next((a for a in args[3:] if not a.startswith("-")), None)
        if sub is not None:
            assert re.search(rf"[\"'\[|]{re.escape(sub)}[\"'\]|]", (folder / "__main__.py").read_text()), f"{name}: {module} {sub}"


def test_the_image_runs_as_the_non_root_user_the_pods_run_as(stages: list[Stage]) -> None:
    users = stages[-1].of("USER")
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].args.strip().partition(":")
    assert user not in {"root", "0"} and group not in {"root", "0"}
    assert user.isdigit(), "a numeric uid: the kubelet can check runAsNonRoot against it"
    for name, pod, container in tally_containers(manifests()):
        context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
        assert context.get("runAsNonRoot") is True, name
        assert str(context.get("runAsUser", user)) == user, name
        if group and "runAsGroup" in context:
            assert str(context["runAsGroup"]) == group, name


def test_the_image_carries_no_secret(stages: list[Stage]) -> None:
    secretive = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|_KEY\b", re.IGNORECASE)
    for stage in stages:
        names = list(stage.env())
        names += [i.args.split("=", 1)[0].strip() for i in stage.of("ARG")]
        assert [n for n in names if secretive.search(n)] == [], stage.name
        for copy in stage.copies():
            assert not any(secretive.search(s) or s.startswith(".state") for s in copy.sources), copy


# ---------------------------------------------------------------------- runtime files


def mount_paths(container: Doc) -> list[PurePosixPath]:
    return [PurePosixPath(m["mountPath"]) for m in container.get("volumeMounts", [])]


def absolute_paths(values: dict[str, Any]) -> dict[str, PurePosixPath]:
    return {k: PurePosixPath(v) for k, v in values.items() if isinstance(v, str) and v.startswith("/") and "://" not in v}


def test_every_path_the_manifests_name_is_mounted_or_in_the_image(stages: list[Stage]) -> None:
    docs = manifests()
    config = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d.get("kind") == "ConfigMap"}
    checked = 0
    for name, _, container in tally_containers(docs):
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                env = {**config[source["configMapRef"]["name"]], **env}
        mounts = mount_paths(container)
        module = (container.get("command", []) + container.get("args", []))[2]
        reads = {s.env for s in importlib.import_module(f"{module}.settings").SPEC} | KIT_PATH_ENV
        for key, path in absolute_paths({k: v for k, v in env.items() if k in reads}).items():
            if any(path == m or m in path.parents for m in mounts):
                continue  # a volume (the Kafka CA, the state volume, /tmp)
            kind, where = in_image(stages, path)
            assert kind != "missing", f"{name}: {key}={path} is neither mounted nor in the image"
            if kind == "context":
                assert Path(where).exists(), f"{name}: {key}={path} copies {where}, which does not exist"
            checked += 1
    assert checked, "the manifests name at least one path in the image (the console's built files)"


def test_every_path_the_image_sets_is_in_the_image(stages: list[Stage]) -> None:
    paths = absolute_paths({k: v for k, v in stages[-1].env().items() if k.startswith("TALLY_")})
    assert "TALLY_SCHEMAS_DIR" in paths
    for key, path in paths.items():
        kind, where = in_image(stages, path)
        assert kind == "context" and Path(where).is_dir(), f"{key}={path}: {kind} {where}"
    schemas = in_image(stages, paths["TALLY_SCHEMAS_DIR"])[1]
    assert sorted(Path(schemas).glob("*/v*.avsc")), "the Avro schema catalog"


def runtime_folders() -> dict[str, Path]:
    """Every folder a service reads files from at run time, as the code itself locates it."""
    from tally_console.settings import DEFAULT_STATIC_DIR
    from tally_contracts.__main__ import MIGRATIONS as CONTRACTS
    from tally_invoicing.app import MIGRATIONS as INVOICING
    from tally_kit.migrations import KIT_SQL
    from tally_streams.avro import default_schemas_dir

    return {"contracts migrations": CONTRACTS, "invoicing migrations": INVOICING, "kit migrations": Path(str(KIT_SQL)),
            "schema catalog": default_schemas_dir(), "console static files": DEFAULT_STATIC_DIR}


def test_every_folder_a_service_reads_at_run_time_is_in_the_image_where_the_code_looks(stages: list[Stage],
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TALLY_SCHEMAS_DIR", raising=False)  # the folder the code finds by itself
    runtime = stages[-1]
    for what, folder in runtime_folders().items():
        rel = folder.resolve().relative_to(ROOT)  # the image keeps the repository's layout under its WORKDIR
        kind, where = in_image(stages, runtime.workdir / rel.as_posix())
        if what == "console static files":
            assert kind == "built", f"{what}: {kind} {where}"
            continue
        assert kind == "context" and Path(where).resolve() == folder.resolve(), f"{what}: {kind} {where}"
        assert any(Path(where).iterdir()), what


def test_the_console_static_dir_is_the_node_stages_build_output(stages: list[Stage]) -> None:
    from tally_console.settings import DEFAULT_STATIC_DIR

    configs = [d["data"] for d in manifests() if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == "tally-config"]
    (static,) = {PurePosixPath(c["TALLY_CONSOLE_STATIC_DIR"]) for c in configs}  # one value in every overlay
    assert static == stages[-1].workdir / DEFAULT_STATIC_DIR.relative_to(ROOT).as_posix(), "the manifests and the default agree"
    kind, where = in_image(stages, static / "index.html")
    assert kind == "built", (kind, where)
    origin, built = where
    vite = (ROOT / "services" / "console" / "web" / "vite.config.ts").read_text()
    out_dir = re.search(r"outDir:\s*[\"']([^\"']+)[\"']", vite)
    assert out_dir is not None
    assert origin.workdir / built == origin.workdir / out_dir.group(1) / "index.html", "vite's outDir in the node stage"
    assert "npm run build" in origin.run_text()


# ---------------------------------------------------------------------- the tag


def test_deploy_readme_builds_the_image_the_manifests_and_overlays_name() -> None:
    base = [d for path in yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())["resources"]
            for d in yaml.safe_load_all((K8S / "base" / path).read_text()) if d]
    images = {c["image"] for _, pod in pod_specs(base) for c in pod.get("initContainers", []) + pod["containers"]}
    assert images == {IMAGE}, images
    for overlay, entries in overlay_images().items():
        assert IMAGE in [i["name"] for i in entries], f"{overlay}: no `images:` entry for {IMAGE} (pods would pull {IMAGE}:latest)"
    readme = (ROOT / "deploy" / "README.md").read_text()
    builds = re.findall(r"^\s*((?:docker|podman|buildah)\s+(?:build|bud)\b.*)$", readme, re.MULTILINE)
    assert builds, "deploy/README.md tells how to build the image"
    for line in builds:
        words = shlex.split(line.strip().strip("`"))
        assert words[words.index("-f") + 1] == CONTAINERFILE.relative_to(ROOT).as_posix(), line
        assert words[words.index("-t") + 1].split(":")[0] == IMAGE, line
        assert words[-1] == ".", f"{line}: the build context is the repository root"
