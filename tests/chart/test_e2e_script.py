"""scripts/e2e-k3s.sh cannot run here (no k3s); its --help and --dry-run can. A dry run must show
every step while running none of the cluster tools, and what it prints is checked against the
real things that are here: the chart rendered with the printed --set values (every image it
references must be pushed or mirrored by the script), the --help of every installed tool the
printed commands call, the registries.yaml merge run on temp files, and the packaged
docker-registry's port.

BOIFI_E2E_SCRIPT runs these tests against another copy of the script (e.g. an older revision in a
tree laid out like this repository)."""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml

from conftest import ROOT, render

SCRIPT = Path(os.path.abspath(os.environ.get("BOIFI_E2E_SCRIPT", ROOT / "scripts" / "e2e-k3s.sh")))
# The tree the script runs in (it cd's to its repository root).
SCRIPT_ROOT = SCRIPT.parent.parent
TOOLS = ["kubectl", "helm", "istioctl", "podman", "docker", "skopeo", "curl", "systemctl",
         "apt-get", "docker-registry", "k3s"]
# Placeholders a dry run prints for values only a real run knows, and realistic stand-ins.
PLACEHOLDERS = {
    "<node-ip>": "192.0.2.10",
    "<sha256 printed by publish-plugin.sh>": "ab" * 32,
}
# Tools installed on this machine whose flags are checked against their --help.
CHECKED_TOOLS = ["skopeo", "podman", "docker", "curl", "python3", "kubectl", "systemctl",
                 "scripts/publish-plugin.sh"]
ORIGINAL_PATH = os.environ["PATH"]
PACKAGED_REGISTRY_CONFIG = Path("/etc/docker/registry/config.yml")
K3S_REGISTRIES = "/etc/rancher/k3s/registries.yaml"


def run(args: list[str], tmp_path: Path, *, hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run the script with every cluster tool replaced by a stub that records its call (a dry
    run must reach none). Tools in `hide` are absent altogether, stubs and real binaries alike."""
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for tool in TOOLS:
        if tool in hide:
            continue
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho {tool} "$@" >> "{tmp_path}/called"\nexit 1\n')
        stub.chmod(0o755)
    path = f"{stubs}:{ORIGINAL_PATH}"
    if hide:
        # A PATH of links to everything on PATH except the hidden tools.
        shadow = tmp_path / "shadow"
        shadow.mkdir(exist_ok=True)
        for directory in ORIGINAL_PATH.split(":"):
            if not os.path.isdir(directory):
                continue
            for entry in os.scandir(directory):
                target = shadow / entry.name
                if entry.name not in hide and not target.exists() and not target.is_symlink():
                    target.symlink_to(entry.path)
        path = f"{stubs}:{shadow}"
    env = {**os.environ, "PATH": path}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


# --- what a dry run prints ----------------------------------------------------------------------


@dataclass
class DryRun:
    """A dry run's output: the commands it would run (in order) and the files it would write."""

    out: str
    commands: list[list[str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)

    def calls(self, tool: str, *sub: str) -> list[list[str]]:
        """Commands whose program is `tool` and whose first non-flag words are `sub`."""
        found = []
        for argv in self.commands:
            if argv[0] != tool:
                continue
            words = [a for a in argv[1:] if not a.startswith("-")]
            if list(words[:len(sub)]) == list(sub):
                found.append(argv)
        return found


SHELL_OPERATORS = {"|", "||", "&&", ";", "&"}


def simple_commands(argv: list[str]) -> Iterator[list[str]]:
    """The programs an argv runs: itself, or the commands inside `sh -c '...'`, without the
    script's own wrappers (`running NAME CMD...`) and leading VAR=value assignments."""
    while argv and argv[0] == "running":
        argv = argv[2:]
    if len(argv) >= 3 and argv[0] == "sh" and argv[1] == "-c":
        lexer = shlex.shlex(argv[2], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        current: list[str] = []
        for token in [*lexer, ";"]:
            if token in SHELL_OPERATORS:
                while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                    current.pop(0)
                if current:
                    yield from simple_commands(current)
                current = []
            else:
                current.append(token)
        return
    if argv:
        yield argv


def parse_dry_run(out: str) -> DryRun:
    result = DryRun(out=out)
    lines = out.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        heredoc = re.match(r"  \+ (?:cat >(\S+)|kubectl apply -f -) <<\S+$", line)
        if heredoc:
            body = []
            while i < len(lines) and lines[i].startswith("      "):
                body.append(lines[i][6:])
                i += 1
            if heredoc.group(1):
                result.files[heredoc.group(1)] = "\n".join(body) + "\n"
            else:
                result.commands.append(["kubectl", "apply", "-f", "-"])
            continue
        wait = re.match(r"  \+ wait up to \d+s for .*?: (.*)$", line)
        background = re.match(r"  \+ \(background [^)]*\) (.*)$", line)
        if wait:
            text = wait.group(1)
        elif background:
            text = background.group(1)
        elif line.startswith("  + "):
            text = line[4:]
        else:
            continue
        result.commands.extend(simple_commands(shlex.split(text)))
    return result


@functools.cache
def dry_run(engine: str) -> DryRun:
    """The dry run with podman as the engine, or with docker (podman hidden from PATH)."""
    with tempfile.TemporaryDirectory() as tmp:
        hide = ("podman",) if engine == "docker" else ()
        proc = run(["--dry-run", "--tag", "e2e-test"], Path(tmp), hide=hide)
        called = Path(tmp) / "called"
        assert not called.exists(), f"a dry run called: {called.read_text()}"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return parse_dry_run(proc.stdout + proc.stderr)


def substitute(text: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    assert "<" not in text and ">" not in text, f"unknown placeholder in {text!r}"
    return text


# --- the basics ---------------------------------------------------------------------------------


def test_help(tmp_path: Path) -> None:
    proc = run(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--dry-run", "--keep", "--registry", "--istio-version", "--propagation-budget"):
        assert option in proc.stdout
    assert not (tmp_path / "called").exists()


def test_help_needs_lists_the_plugin_toolchain(tmp_path: Path) -> None:
    """scripts/build-plugin.sh needs cargo, the wasm32 target and wasm-opt: the Needs list says
    so, and the dry run's prerequisites step checks or installs each."""
    needs = run(["--help"], tmp_path).stdout.split("Needs:", 1)[-1]
    for item in ("cargo", "wasm32-unknown-unknown", "wasm-opt", "binaryen"):
        assert item in needs, f"--help's Needs list does not mention {item}"
    first_step = dry_run("podman").out.split("step 2:", 1)[0]
    for item in ("cargo", "wasm32-unknown-unknown", "binaryen"):
        assert item in first_step, f"the dry run checks {item} only after the first step, or never"


def test_dry_run_prints_every_step_and_runs_nothing() -> None:
    out = dry_run("podman").out
    for expected in (
        "k3s", "registry", "istioctl install", "docker/policy-api.Dockerfile",
        "docker/sse-broadcaster.Dockerfile", "scripts/build-plugin.sh", "scripts/publish-plugin.sh",
        "helm upgrade --install boifi helm/boifi", "helm test boifi",
        "check: service-level targeting", "check: percentage across replicas",
        "check: propagation time", "check: halt", "check: Prometheus",
        "/v1/halt", "dry run: 16 steps printed, nothing was run",
    ):
        assert expected in out, expected
    # The demo namespace has at least 12 services, all in the sidecar-injected namespace.
    assert out.count("kind: Service\n") >= 12
    assert "istio-injection: enabled" in out
    assert "plugin.sha256=" in out and "plugin.targets=" in out


def test_unknown_option_fails(tmp_path: Path) -> None:
    proc = run(["--frobnicate"], tmp_path)
    assert proc.returncode != 0
    assert "unknown argument: --frobnicate" in proc.stderr


def test_istio_older_than_1_19_is_refused(tmp_path: Path) -> None:
    """The chart's WasmPlugins set failStrategy (istio/api 1.19): older Istio is refused, and
    the default is new enough."""
    proc = run(["--dry-run", "--istio-version", "1.18.7"], tmp_path)
    assert proc.returncode != 0, "--istio-version 1.18.7 was accepted"
    assert "1.19" in proc.stderr
    assert run(["--dry-run", "--istio-version", "1.19.0"], tmp_path).returncode == 0
    default = re.search(r"--istio-version V .*default: (\d+)\.(\d+)", run(["--help"], tmp_path).stdout)
    assert default and (int(default.group(1)), int(default.group(2))) >= (1, 19)
    assert not (tmp_path / "called").exists()


def test_no_restart_for_the_plugin_and_no_envoyfilter() -> None:
    """Sidecars load WasmPlugins live; the stats EnvoyFilter is gone from the chart."""
    for engine in ("podman", "docker"):
        restarts = [c for c in dry_run(engine).commands if c[:1] == ["kubectl"] and "restart" in c]
        assert not restarts, restarts
    text = SCRIPT.read_text()
    assert "EnvoyFilter" not in text and "envoyfilter" not in text.lower()
    # Labels come from Prometheus relabeling, and the script checks them there.
    assert "prometheus-relabel" in text
    assert 'boifi_faults_injected{policy="e2e-target",fault_type="abort"}' in text


def test_processes_are_stopped_by_pid() -> None:
    """Whatever the script starts in the background it stops by PID, never by name."""
    text = SCRIPT.read_text()
    for word in ("pkill", "killall"):
        assert word not in text
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    starts = [line for line in code if re.search(r"(^|[^&])&\s*$", line)]
    assert len(starts) == 1 and '"$@" >"$work/$name.log" 2>&1 &' in starts[0], starts


# --- (a) every image the release pulls is pushed or mirrored ------------------------------------


def helm_values(argv: list[str]) -> dict[str, Any]:
    """The values of a `helm upgrade --install` argv, parsed by Helm's own strvals parser
    (helm-python-sdk), --set-json before --set as Helm merges them."""
    sets: list[str] = []
    set_jsons: list[str] = []
    it = iter(argv)
    for arg in it:
        for flag, into in (("--set", sets), ("--set-json", set_jsons)):
            if arg == flag:
                into.append(substitute(next(it)))
            elif arg.startswith(flag + "="):
                into.append(substitute(arg[len(flag) + 1:]))
    values: dict[str, Any] = {}
    for expression in set_jsons:
        merge(values, helm.parse_set_json(expression))
    for expression in sets:
        merge(values, helm.parse_set_string(expression))
    return values


def merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return None


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    kind, spec = obj["kind"], obj.get("spec", {})
    if kind == "Pod":
        return [spec]
    if kind == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    if "template" in spec:
        return [spec["template"]["spec"]]
    return []


def referenced_images(objects: list[dict[str, Any]]) -> dict[str, str]:
    """image -> where, for every container (init and ephemeral too) and WasmPlugin url."""
    images = {}
    for obj in objects:
        where = f'{obj["kind"]}/{obj["metadata"]["name"]}'
        for spec in pod_specs(obj):
            for key in ("initContainers", "containers", "ephemeralContainers"):
                for container in spec.get(key) or []:
                    images[container["image"]] = f'{where} {key}/{container["name"]}'
        if obj["kind"] == "WasmPlugin":
            url = obj["spec"]["url"]
            assert url.startswith("oci://"), url
            images[url.removeprefix("oci://")] = where
    return images


def qualified(image: str) -> str:
    """The reference with its registry host, as Docker normalizes it."""
    if "/" not in image:
        return "docker.io/library/" + image
    first = image.split("/", 1)[0]
    return image if ("." in first or ":" in first or first == "localhost") else "docker.io/" + image


def pushed_images(run_: DryRun) -> tuple[set[str], dict[str, str]]:
    """References the dry run pushes (built here) and mirrors (destination -> public source)."""
    pushed: set[str] = set()
    mirrored: dict[str, str] = {}
    for argv in run_.calls("podman", "push") + run_.calls("docker", "push"):
        pushed.add(substitute([a for a in argv[2:] if not a.startswith("-")][-1]))
    for argv in run_.calls("skopeo", "copy"):
        src, dest = [substitute(a) for a in argv[2:] if not a.startswith("-")][-2:]
        assert dest.startswith("docker://"), argv
        dest = dest.removeprefix("docker://")
        if src.startswith("docker://"):
            mirrored[dest] = src.removeprefix("docker://")
        else:
            pushed.add(dest)
    for argv in run_.calls("scripts/publish-plugin.sh"):
        tag = option(argv, "--tag")
        repository = substitute(argv[-1]).removeprefix("oci://")
        assert tag, argv
        pushed.update({f"{repository}:{tag}", f"{repository}:{tag}-wasm"})
    return pushed, mirrored


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_every_image_of_the_release_is_pushed_or_mirrored(engine: str) -> None:
    run_ = dry_run(engine)
    (install,) = run_.calls("helm", "upgrade")
    release, chart = [a for a in install[2:] if not a.startswith("-")][:2]
    assert chart == "helm/boifi" and "--install" in install
    namespace = option(install, "-n", "--namespace") or "default"
    rendered = render(helm_values(install), name=release, namespace=namespace)
    images = referenced_images(rendered.objects)
    assert any("test" in where for where in images.values()), "no helm test pod rendered"
    pushed, mirrored = pushed_images(run_)
    missing = {image: where for image, where in images.items()
               if image not in pushed and image not in mirrored}
    assert not missing, f"the release pulls images the script neither pushes nor mirrors: {missing}"
    registry = helm_values(install).get("imageRegistry", "")
    for dest, src in mirrored.items():
        # A mirror keeps the public name under the registry: the chart prefixes it so.
        assert dest.startswith(registry + "/"), (dest, registry)
        assert qualified(dest.removeprefix(registry + "/")) == src, (dest, src)


# --- (b) every flag passed to an installed tool exists ------------------------------------------


def real_tool(tool: str) -> str | None:
    if tool.startswith("scripts/"):
        return str(SCRIPT_ROOT / tool)
    return shutil.which(tool, path=ORIGINAL_PATH)


@functools.cache
def help_text(tool: str, words: tuple[str, ...]) -> str:
    """The --help of `tool words...` plus the tool's global flags."""
    binary = real_tool(tool)
    assert binary
    if tool == "curl":
        commands = [[binary, "--help", "all"]]
    elif tool in ("python3", "systemctl") or tool.startswith("scripts/"):
        commands = [[binary, "--help"]]
    else:
        commands = [[binary, *words, "--help"], [binary, "--help"]]
        if tool == "kubectl":
            commands.append([binary, "options"])
    texts = []
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                              env={**os.environ, "PATH": ORIGINAL_PATH})
        texts.append(proc.stdout + proc.stderr)
    return "\n".join(texts)


def flags_and_words(argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
    """The flags of a command (clusters of short flags split up) and its subcommand words."""
    tool, rest = argv[0], argv[1:]
    if tool == "kubectl":
        while rest[:1] in (["-n"], ["--namespace"]):
            rest = rest[2:]
    words = []
    for arg in rest:
        if arg.startswith("-"):
            break
        words.append(arg)
    flags: list[str] = []
    for arg in argv[1:]:
        if arg == "--":
            break
        if tool == "python3" and not arg.startswith("-"):
            break  # what follows belongs to the program
        if arg.startswith("--"):
            flags.append(arg.split("=", 1)[0])
        elif arg.startswith("-") and len(arg) > 1:
            flags.extend(f"-{c}" for c in arg[1:])
        if tool == "python3" and arg == "-c":
            break
    return flags, tuple(words)


@pytest.mark.parametrize("engine", ["podman", "docker"])
def test_every_flag_exists_in_the_tools_help(engine: str) -> None:
    checked: dict[str, int] = {}
    unknown = []
    for argv in dry_run(engine).commands:
        tool = argv[0]
        if tool not in CHECKED_TOOLS or real_tool(tool) is None:
            continue
        flags, words = flags_and_words(argv)
        text = help_text(tool, words)
        for flag in flags:
            if flag.startswith("--"):
                pattern = rf"(?<![\w-]){re.escape(flag)}(?![\w-])"
            else:
                pattern = rf"(?<![\w-]){re.escape(flag)}(?=[\s,=\[]|$)"
            if not re.search(pattern, text, re.MULTILINE):
                unknown.append(f"{shlex.join(argv)}: {flag}")
            checked[tool] = checked.get(tool, 0) + 1
    assert not unknown, "flags the tools here do not know:\n" + "\n".join(unknown)
    for tool in ("skopeo", "curl", engine):
        if real_tool(tool):
            assert checked.get(tool), f"no {tool} flag checked: the dry run calls {tool} with none?"


# --- (c) registries.yaml: a merge, not a second "mirrors:" --------------------------------------


def registries_call() -> list[str]:
    calls = [c for c in dry_run("podman").commands if "registries-add" in c]
    assert calls, "the dry run shows no registries.yaml merge (scripts/lib/e2e_k3s.py registries-add)"
    (argv,) = calls
    assert argv[0] == "python3", argv
    script, command, target, host = argv[1:]
    assert target == K3S_REGISTRIES and command == "registries-add"
    return [sys.executable, str(SCRIPT_ROOT / script), command, "FILE", substitute(host)]


class UniqueKeys(yaml.SafeLoader):
    pass


def _unique(loader: UniqueKeys, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    assert len(keys) == len(set(keys)), f"duplicate keys: {keys}"
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique)


def merge_into(argv: list[str], path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(path) if a == "FILE" else a for a in argv], capture_output=True,
                          text=True, timeout=60, check=False)


def test_registries_yaml_merges_into_an_existing_file(tmp_path: Path) -> None:
    argv = registries_call()
    host = argv[-1]
    path = tmp_path / "registries.yaml"
    path.write_text('# site mirrors\nmirrors:\n  docker.io:\n    endpoint:\n      - "https://mirror.example.com"\n'
                    'configs:\n  "mirror.example.com":\n    auth:\n      username: u\n      password: p\n')
    original = path.read_text()
    first = merge_into(argv, path)
    assert first.returncode == 0 and first.stdout.strip() == "added", first
    text = path.read_text()
    doc = yaml.load(text, Loader=UniqueKeys)  # noqa: S506 (a SafeLoader subclass)
    assert re.findall(r"^mirrors:", text, re.MULTILINE) == ["mirrors:"]
    assert doc["mirrors"]["docker.io"] == {"endpoint": ["https://mirror.example.com"]}
    assert doc["mirrors"][host] == {"endpoint": [f"http://{host}"]}
    assert doc["configs"] == {"mirror.example.com": {"auth": {"username": "u", "password": "p"}}}
    assert (tmp_path / "registries.yaml.boifi.bak").read_text() == original
    # Idempotent: a second run changes nothing, so k3s is not restarted again.
    second = merge_into(argv, path)
    assert second.returncode == 0 and second.stdout.strip() == "present", second
    assert path.read_text() == text


def test_registries_yaml_is_created_when_missing(tmp_path: Path) -> None:
    argv = registries_call()
    host = argv[-1]
    path = tmp_path / "etc" / "registries.yaml"
    proc = merge_into(argv, path)
    assert proc.returncode == 0 and proc.stdout.strip() == "added", proc
    assert yaml.load(path.read_text(), Loader=UniqueKeys) == {  # noqa: S506
        "mirrors": {host: {"endpoint": [f"http://{host}"]}}}
    assert path.stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("content", [
    # What appending a second block gives (the old script did): refused, left as it is.
    'mirrors:\n  docker.io:\n    endpoint: ["https://m.example.com"]\nmirrors:\n  "x:1":\n    endpoint: ["http://x:1"]\n',
    # Our host already there with another endpoint: not ours to change.
    'mirrors:\n  "HOST":\n    endpoint: ["https://elsewhere.example.com"]\n',
    "- not a mapping\n",
])
def test_registries_yaml_it_cannot_merge_is_left_alone(tmp_path: Path, content: str) -> None:
    argv = registries_call()
    path = tmp_path / "registries.yaml"
    path.write_text(content.replace("HOST", argv[-1]))
    before = path.read_text()
    proc = merge_into(argv, path)
    assert proc.returncode != 0 and proc.stderr.strip(), proc
    assert path.read_text() == before


def test_public_images_are_the_chart_images_boifi_does_not_build() -> None:
    sys.path.insert(0, str(SCRIPT_ROOT / "scripts" / "lib"))
    try:
        import e2e_k3s
    finally:
        sys.path.pop(0)
    values = yaml.safe_load((ROOT / "helm" / "boifi" / "values.yaml").read_text())
    images = e2e_k3s.public_images(values)
    assert f'{values["etcd"]["image"]["repository"]}:{values["etcd"]["image"]["tag"]}' in images
    assert f'{values["tests"]["image"]["repository"]}:{values["tests"]["image"]["tag"]}' in images
    assert not [i for i in images if i.startswith("boifi/")]


def test_sample_prometheus_gets_the_plugin_relabel_rules_once() -> None:
    sys.path.insert(0, str(SCRIPT_ROOT / "scripts" / "lib"))
    try:
        import e2e_k3s
    finally:
        sys.path.pop(0)
    rules = yaml.safe_load((ROOT / "helm" / "boifi" / "files" / "plugin-metric-relabel.yaml").read_text())
    # The shape of Istio's samples/addons/prometheus.yaml ConfigMap (jobs trimmed).
    configmap = {"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "prometheus", "namespace": "istio-system"},
                 "data": {"prometheus.yml": yaml.safe_dump({"scrape_configs": [
                     {"job_name": "prometheus", "static_configs": [{"targets": ["localhost:9090"]}]},
                     {"job_name": "kubernetes-pods", "kubernetes_sd_configs": [{"role": "pod"}]},
                 ]})}}
    once = e2e_k3s.prometheus_relabel(configmap, rules)
    twice = e2e_k3s.prometheus_relabel(once, rules)
    jobs = {j["job_name"]: j for j in yaml.safe_load(twice["data"]["prometheus.yml"])["scrape_configs"]}
    assert jobs["kubernetes-pods"]["metric_relabel_configs"] == rules
    assert "metric_relabel_configs" not in jobs["prometheus"]
    with pytest.raises(e2e_k3s.RegistriesError):
        e2e_k3s.prometheus_relabel({"data": {"prometheus.yml": "scrape_configs: []"}}, rules)


# --- (d) the registry does not collide with the packaged docker-registry service ---------------


def packaged_registry_port() -> int:
    """The port of docker-registry.service as Debian's package configures it (":5000")."""
    addr = ":5000"
    if PACKAGED_REGISTRY_CONFIG.exists():
        addr = yaml.safe_load(PACKAGED_REGISTRY_CONFIG.read_text())["http"]["addr"]
    return int(addr.rsplit(":", 1)[1])


def test_registry_does_not_take_the_packaged_service_port() -> None:
    run_ = dry_run("podman")
    serve = [i for i, c in enumerate(run_.commands) if c[:2] == ["docker-registry", "serve"]]
    assert len(serve) == 1, "the dry run starts no docker-registry (or more than one)"
    config_path = run_.commands[serve[0]][2]
    assert config_path != str(PACKAGED_REGISTRY_CONFIG), "it serves the packaged config (htpasswd)"
    if config_path in run_.files:
        addr = yaml.safe_load(run_.files[config_path])["http"]["addr"]
    else:
        # Not printed: the port the script waits on.
        urls = [a for c in run_.commands if c[0] == "curl" for a in c if a.endswith("/v2/")]
        assert urls, "neither the registry's config nor its address is in the dry run"
        addr = re.sub(r"^http://|/v2/$", "", urls[0])
    port = int(addr.rsplit(":", 1)[1])
    stopped_first = any(c[:1] == ["systemctl"] and any(w in c for w in ("stop", "disable"))
                        and any(a.startswith("docker-registry") for a in c)
                        for c in run_.commands[:serve[0]])
    assert port != packaged_registry_port() or stopped_first, (
        f"the registry listens on :{port}, which docker-registry.service (installed with the "
        "package, htpasswd auth) holds, and the dry run does not stop that service first")
