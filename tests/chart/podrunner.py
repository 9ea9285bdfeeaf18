"""Run the chart's own pods with podman, from the rendered pod spec, the way kubelet would.

No cluster can run here, so this takes a rendered Deployment and does kubelet's part by hand:

- Secret, ConfigMap and projected volumes are laid out on the host exactly as kubelet lays them
  out (kubelet_files.py: `..<timestamp>` dir, `..data` link, one link per key; owner, group and
  mode from the model of kubelet v1.31), with the content of the rendered Secret, and
  bind-mounted read-only at the rendered mountPath (`subPath`: the file itself);
- the container runs with the rendered securityContext: runAsUser/runAsGroup (container over
  pod; unset: the image's USER) -> --user, fsGroup and supplementalGroups -> --group-add,
  runAsNonRoot -> refused for uid 0, readOnlyRootFilesystem -> --read-only (without podman's
  extra tmpfs mounts, which Kubernetes does not add), capabilities -> --cap-drop/--cap-add,
  allowPrivilegeEscalation: false -> no-new-privileges, seccomp RuntimeDefault -> podman's
  default profile;
- the rendered env ($(VAR) expanded, fieldRef metadata.name/namespace), command and args;
- the pod gets its own network namespace (slirp4netns), like a pod: the rendered
  BOIFI_LISTEN_ADDR (0.0.0.0:<containerPort>) binds inside it, and every containerPort is
  published on 127.0.0.1 only. The rewrites: BOIFI_ETCD_ENDPOINTS (cluster DNS names) becomes
  the test's real etcd on host loopback, which slirp4netns makes reachable as 10.0.2.2, and
  policy-api's BOIFI_BROADCASTERS (the broadcaster's headless Service) the broadcaster pod's
  published port there;
- ready means the rendered startupProbe, then the rendered readinessProbe (httpGet path and
  port, its timeoutSeconds) succeeded, polled every 0.2 s within the startupProbe's budget
  (initialDelaySeconds + periodSeconds * failureThreshold); a container that exits first fails;
- stop is SIGTERM with the pod's grace period, and the exit code must be 0.

Not reproduced: resource limits, liveness restarts, the service account token (the chart turns
it off), Services and DNS.

The scenario run by scripts/test-images.sh (main): the pods of the chart rendered with default
values (or --values) start and turn ready; the API refuses a request without a token, serves a
reader's token, refuses a reader's write and creates a policy with a writer's token, the tokens
taken from the rendered Secret; sse-broadcaster then serves that policy from the same etcd, and
the API's GET /v1/sidecars lists the broadcaster pod as the replica it gathered. A
control run first starts policy-api from the pod spec of the chart before fsGroup (the same
spec without it): it must fail to start with "Permission denied" on the tokens file.

Environment:
  BOIFI_PODMAN        the podman command with its flags, shell-quoted (storage root, runtime...)
  BOIFI_POD_IMAGES    "repository=local-image ..." for every image the pods use
  BOIFI_POD_IDS_FILE  optional: container names are appended here before they start, so the
                      caller can remove them if this process dies
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from conftest import NAMESPACE, ROOT, Rendered, load_values, render
from kubelet_files import Node, resolve, volume_layout

SLIRP_HOST_LOOPBACK = "10.0.2.2"  # slirp4netns with allow_host_loopback=true
POLL_S = 0.2
# Loopback only: no proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class RunnerError(RuntimeError):
    """The pod did not run as the rendered spec says it should."""


def log(message: str) -> None:
    print(f"podrunner: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, *, token: Optional[str] = None, body: Optional[bytes] = None,
         headers: Optional[dict[str, str]] = None, timeout: float = 5) -> tuple[int, str]:
    """One HTTP request on loopback: (status, body); errors are statuses, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $."""
    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def lay_out(nodes: list[Node], root: Path) -> None:
    """Create the nodes under root with their owner, group and mode (as root, like kubelet)."""
    order = {"dir": 0, "file": 1, "symlink": 2}
    for node in sorted(nodes, key=lambda n: (order[n.kind], n.path.count("/"), n.path)):
        path = root / node.path if node.path else root
        if node.kind == "dir":
            path.mkdir(exist_ok=True)
        elif node.kind == "file":
            path.write_bytes(node.data)
        else:
            os.symlink(node.target, path)
            os.lchown(path, node.uid, node.gid)
            continue
        os.chown(path, node.uid, node.gid)
        os.chmod(path, node.mode)  # after chown, which may clear setgid
    for node in nodes:  # what is on disk is what the model says
        st = os.lstat(root / node.path if node.path else root)
        if (st.st_uid, st.st_gid) != (node.uid, node.gid) or (
                node.kind != "symlink" and st.st_mode & 0o7777 != node.mode):
            raise RunnerError(f"laid out {node.describe()} as "
                              f"{st.st_uid}:{st.st_gid} {st.st_mode & 0o7777:04o}")


class Podman:
    def __init__(self, command: list[str], ids_file: Optional[Path]) -> None:
        self.command = command
        self.ids_file = ids_file

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        proc = subprocess.run([*self.command, *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise RunnerError(f"podman {' '.join(args[:2])} failed ({proc.returncode}): "
                              f"{proc.stderr.strip()}")
        return proc.stdout.strip()

    def remember(self, name: str) -> None:
        if self.ids_file is not None:
            with self.ids_file.open("a") as f:
                f.write(name + "\n")


class PodRun:
    """One pod (a single container) started from a rendered pod template."""

    def __init__(self, name: str, spec: dict[str, Any], rendered: Rendered, podman: Podman,
                 images: dict[str, str], work: Path, etcd_endpoint: str,
                 rewrites: Optional[dict[str, str]] = None) -> None:
        if len(spec["containers"]) != 1 or spec.get("initContainers"):
            raise RunnerError(f"{name}: only pods with one container are supported")
        self.name = name
        self.spec = spec
        self.container = spec["containers"][0]
        self.rendered = rendered
        self.podman = podman
        self.images = images
        self.work = work / name
        self.etcd_endpoint = etcd_endpoint
        self.rewrites = rewrites or {}  # env variable -> the value that reaches the pod here
        self.ctr_name = f"boifi-podrunner-{name}-{os.getpid()}-{secrets.token_hex(3)}"
        self.ports: dict[str, int] = {}  # port name or number -> host port
        self.started = False
        self.started_at = 0.0

    # -- building the podman command ------------------------------------------------------

    def image(self) -> str:
        repository = self.container["image"].rsplit("@", 1)[0]
        repository = re.sub(r":[^/:]+$", "", repository)
        for prefix, local in self.images.items():
            if repository == prefix or repository.endswith("/" + prefix):
                return local
        raise RunnerError(f"{self.name}: no local image for {self.container['image']} (BOIFI_POD_IMAGES)")

    def lookup(self, kind: str, name: str) -> Optional[dict[str, Any]]:
        hits = [o for o in self.rendered.of_kind(kind) if o["metadata"]["name"] == name]
        return hits[0] if hits else None

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in self.container.get("env", []):
            if "value" in item:
                value = expand(item["value"], env)
            elif "fieldRef" in item.get("valueFrom", {}):
                field = item["valueFrom"]["fieldRef"]["fieldPath"]
                known = {"metadata.name": self.name, "metadata.namespace": NAMESPACE}
                if field not in known:
                    raise RunnerError(f"{self.name}: env {item['name']}: fieldRef {field} not supported")
                value = known[field]
            else:
                source = sorted(item.get("valueFrom", {}))
                raise RunnerError(f"{self.name}: env {item['name']}: {source} not supported")
            env[item["name"]] = value
        if "BOIFI_ETCD_ENDPOINTS" in env:
            log(f"{self.name}: BOIFI_ETCD_ENDPOINTS {env['BOIFI_ETCD_ENDPOINTS']} -> {self.etcd_endpoint} "
                "(the test's etcd on host loopback, through slirp4netns)")
            env["BOIFI_ETCD_ENDPOINTS"] = self.etcd_endpoint
        for key, value in self.rewrites.items():
            if key in env:
                log(f"{self.name}: {key} {env[key]} -> {value}")
                env[key] = value
        for key, value in env.items():
            if ".svc." in value:
                raise RunnerError(f"{self.name}: env {key}={value} names a cluster DNS name")
        return env

    def user_args(self) -> list[str]:
        pod_sc = self.spec.get("securityContext") or {}
        sc = self.container.get("securityContext") or {}
        image_user = self.podman("image", "inspect", "--format", "{{.Config.User}}", self.image())
        image_uid, _, image_gid = image_user.partition(":")
        if not image_uid.isdigit() or (image_gid and not image_gid.isdigit()):
            raise RunnerError(f"{self.name}: image user {image_user!r} is not numeric")
        explicit_uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        uid = int(image_uid) if explicit_uid is None else explicit_uid
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        if gid is None and explicit_uid is None and image_gid:
            gid = int(image_gid)
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) and uid == 0:
            raise RunnerError(f"{self.name}: runAsNonRoot, but the container would run as uid 0 "
                              "(kubelet refuses to start it)")
        args = ["--user", f"{uid}" if gid is None else f"{uid}:{gid}"]
        groups = [pod_sc["fsGroup"]] if pod_sc.get("fsGroup") is not None else []
        groups += pod_sc.get("supplementalGroups") or []
        for group in groups:
            args += ["--group-add", str(group)]
        return args

    def security_args(self) -> list[str]:
        pod_sc = self.spec.get("securityContext") or {}
        sc = self.container.get("securityContext") or {}
        if sc.get("privileged"):
            raise RunnerError(f"{self.name}: privileged containers are not supported")
        args = []
        if sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        for cap in (sc.get("capabilities") or {}).get("drop") or []:
            args += ["--cap-drop", cap]
        for cap in (sc.get("capabilities") or {}).get("add") or []:
            args += ["--cap-add", cap]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        profile = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
        seccomp = profile.get("type", "RuntimeDefault")
        if seccomp == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise RunnerError(f"{self.name}: seccomp profile {seccomp} not supported")
        return args

    def volume_args(self) -> list[str]:
        volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        args = []
        for mount in self.container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None or not {"secret", "configMap", "projected"} & set(volume):
                raise RunnerError(f"{self.name}: volume {mount['name']} is not a Secret, "
                                  "ConfigMap or projected volume")
            nodes = volume_layout(volume, self.spec, self.lookup, now=datetime.now(timezone.utc))
            root = self.work / "volumes" / mount["name"]
            root.parent.mkdir(parents=True, exist_ok=True)
            lay_out(nodes, root)
            for node in nodes:
                log(f"{self.name}: volume {mount['name']}: {node.describe()}"
                    + (f" -> {node.target}" if node.kind == "symlink" else ""))
            source = root
            if mount.get("subPath"):
                source = root / resolve(nodes, mount["subPath"])[-1].path
            # Secret, ConfigMap and projected volumes are always mounted read-only.
            args += ["--volume", f"{source}:{mount['mountPath']}:ro"]
        return args

    def port_args(self) -> list[str]:
        args = []
        for port in self.container.get("ports", []):
            if port.get("protocol", "TCP") != "TCP":
                raise RunnerError(f"{self.name}: only TCP ports are supported")
            host = free_port()
            self.ports[str(port["containerPort"])] = host
            if "name" in port:
                self.ports[port["name"]] = host
            args += ["--publish", f"127.0.0.1:{host}:{port['containerPort']}"]
        return args

    def start(self) -> None:
        env = self.env()
        args = ["run", "--detach", "--pull=never", "--name", self.ctr_name, "--hostname", self.name,
                "--network", "slirp4netns:allow_host_loopback=true",
                *self.port_args(), *self.user_args(), *self.security_args(), *self.volume_args()]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        if self.container.get("workingDir"):
            args += ["--workdir", self.container["workingDir"]]
        if self.container.get("command"):
            args += ["--entrypoint", json.dumps([expand(c, env) for c in self.container["command"]])]
        args.append(self.image())
        args += [expand(a, env) for a in self.container.get("args", [])]
        log(f"{self.name}: podman {shlex.join(args)}")
        self.podman.remember(self.ctr_name)
        self.started = True
        self.started_at = time.monotonic()
        self.podman(*args)

    # -- watching it ------------------------------------------------------------------------

    def state(self) -> tuple[bool, int]:
        running, code = self.podman("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}",
                                    self.ctr_name).split()
        return running == "true", int(code)

    def logs(self) -> str:
        """The container's stdout and stderr, interleaved as podman logs prints them."""
        proc = subprocess.run([*self.podman.command, "logs", self.ctr_name], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
        return proc.stdout

    def url(self, port: str | int, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[str(port)]}{path}"

    def probe(self, probe: dict[str, Any]) -> tuple[bool, str]:
        get = probe.get("httpGet")
        if get is None or get.get("scheme", "HTTP") != "HTTP" or get.get("host"):
            raise RunnerError(f"{self.name}: only plain httpGet probes are supported")
        headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
        try:
            status, _ = http("GET", self.url(get["port"], get.get("path", "/")), headers=headers,
                             timeout=probe.get("timeoutSeconds", 1))
        except OSError as e:
            return False, str(e)
        return 200 <= status < 400, f"HTTP {status}"  # kubelet's success range

    def budget(self) -> float:
        probe = self.container.get("startupProbe") or self.container.get("readinessProbe") or {}
        return (probe.get("initialDelaySeconds", 0)
                + probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3))

    def wait_ready(self) -> float:
        """Poll the rendered startupProbe, then readinessProbe; seconds since the start."""
        deadline = self.started_at + self.budget()
        for kind in ("startupProbe", "readinessProbe"):
            probe = self.container.get(kind)
            if probe is None:
                continue
            while True:
                running, code = self.state()
                if not running:
                    raise RunnerError(f"{self.name} exited with code {code} before its {kind} "
                                      f"passed:\n{self.logs()}")
                ok, detail = self.probe(probe)
                if ok:
                    break
                if time.monotonic() > deadline:
                    raise RunnerError(f"{self.name}: {kind} {probe['httpGet']} still failing after "
                                      f"{self.budget():.0f} s ({detail}):\n{self.logs()}")
                time.sleep(POLL_S)
        return time.monotonic() - self.started_at

    def wait_exit(self) -> int:
        """For a pod that must fail: its exit code, within the startup budget."""
        deadline = self.started_at + self.budget()
        while time.monotonic() < deadline:
            running, code = self.state()
            if not running:
                return code
            time.sleep(POLL_S)
        raise RunnerError(f"{self.name} is still running after {self.budget():.0f} s:\n{self.logs()}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after the pod's grace period; the exit code."""
        grace = int(self.spec.get("terminationGracePeriodSeconds", 30))
        self.podman("stop", "--time", str(grace), self.ctr_name, timeout=grace + 30)
        return self.state()[1]

    def remove(self) -> None:
        if self.started:
            self.podman("rm", "--force", "--time", "0", self.ctr_name, check=False)
            self.started = False


class Runner:
    def __init__(self, rendered: Rendered, podman: Podman, images: dict[str, str],
                 etcd_endpoint: str) -> None:
        self.rendered = rendered
        self.podman = podman
        self.images = images
        self.etcd_endpoint = etcd_endpoint
        self.work = Path(tempfile.mkdtemp(prefix="boifi-podrunner-"))
        self.pods: list[PodRun] = []

    def pod(self, name: str, spec: dict[str, Any],
            rewrites: Optional[dict[str, str]] = None) -> PodRun:
        pod = PodRun(name, spec, self.rendered, self.podman, self.images, self.work,
                     self.etcd_endpoint, rewrites)
        self.pods.append(pod)
        return pod

    def close(self) -> None:
        for pod in self.pods:
            pod.remove()
        shutil.rmtree(self.work, ignore_errors=True)


def pod_of(rendered: Rendered, component: str) -> dict[str, Any]:
    (deployment,) = [d for d in rendered.of_kind("Deployment")
                     if d["metadata"]["labels"]["app.kubernetes.io/component"] == component]
    return copy.deepcopy(deployment["spec"]["template"]["spec"])


def tokens_by_role(rendered: Rendered, api_spec: dict[str, Any]) -> dict[str, str]:
    """A token per role from the tokens file of the Secret the policy-api pod mounts."""
    (volume,) = [v for v in api_spec["volumes"] if "secret" in v]
    secret = rendered.one("Secret", volume["secret"]["secretName"])
    tokens: dict[str, str] = {}
    for line in base64.b64decode(secret["data"]["tokens"]).decode().splitlines():
        _, role, token = line.split(" ")
        tokens.setdefault(role, token)
    if set(tokens) != {"reader", "writer"}:
        raise RunnerError(f"the rendered Secret has roles {sorted(tokens)}, expected a reader and a writer")
    return tokens


def expect(what: str, got: int, want: int, body: str = "") -> None:
    if got != want:
        raise RunnerError(f"{what}: HTTP {got}, expected {want}: {body[:300]}")
    log(f"{what}: HTTP {got}")


def control_old_chart(rendered: Rendered, run: Runner) -> None:
    """policy-api from the chart's pod spec before fsGroup (0440 tokens, no fsGroup) must not start."""
    spec = pod_of(rendered, "policy-api")
    if spec["securityContext"].pop("fsGroup", None) is None:
        raise RunnerError("the rendered policy-api pod has no fsGroup to take away")
    # It stops at the tokens file, before it would gather any sidecar table.
    pod = run.pod("policy-api-without-fsgroup", spec,
                  {"BOIFI_BROADCASTERS": f"http://{SLIRP_HOST_LOOPBACK}:9"})
    pod.start()
    code = pod.wait_exit()
    logs = pod.logs()
    if code == 0 or "Permission denied" not in logs:
        raise RunnerError(f"policy-api without fsGroup exited with {code} and did not report "
                          f"'Permission denied':\n{logs}")
    last = [line for line in logs.splitlines() if "Permission denied" in line][-1]
    log(f"control: policy-api without fsGroup (the old chart) exited with code {code}: {last.strip()}")
    pod.remove()


def scenario(rendered: Rendered, run: Runner) -> None:
    api_spec = pod_of(rendered, "policy-api")
    tokens = tokens_by_role(rendered, api_spec)
    # The broadcaster first: policy-api gathers its sidecar table from its published port.
    broadcaster = run.pod("sse-broadcaster", pod_of(rendered, "sse-broadcaster"))
    broadcaster.start()
    replicas = f"http://{SLIRP_HOST_LOOPBACK}:{broadcaster.ports['http']}"
    api = run.pod("policy-api", api_spec, {"BOIFI_BROADCASTERS": replicas})
    api.start()
    for pod in (api, broadcaster):
        log(f"{pod.name}: ready {pod.wait_ready():.1f} s after its start (rendered startupProbe, "
            "then readinessProbe)")

    policies = api.url("http", "/v1/policies")
    expect("GET /v1/policies without a token", http("GET", policies)[0], 401)
    status, body = http("GET", policies, token=tokens["reader"])
    expect("GET /v1/policies with the rendered reader token", status, 200, body)
    example = (ROOT / "docs" / "examples" / "json" / "reviews-abort.json").read_bytes()
    status, body = http("POST", policies, token=tokens["reader"], body=example)
    expect("POST /v1/policies with the reader token", status, 403, body)
    status, body = http("POST", policies, token=tokens["writer"], body=example)
    expect("POST /v1/policies with the rendered writer token", status, 201, body)

    # The broadcaster pod reads the same etcd: the policy reaches its poll endpoint.
    poll = broadcaster.url("http", "/v1/config/stream?mode=poll&namespace=demo&service=reviews"
                                   "&labels=version:v2&wait_ms=1000")
    deadline = time.monotonic() + 15
    while True:
        status, body = http("GET", poll, timeout=10)
        if status == 200 and "reviews-abort" in body:
            break
        if time.monotonic() > deadline:
            raise RunnerError("sse-broadcaster did not serve reviews-abort within 15 s: "
                              f"HTTP {status} {body[:300]}")
        time.sleep(POLL_S)
    log("sse-broadcaster: serves reviews-abort from the same etcd")

    # policy-api gathers the broadcaster's sidecar table (no sidecar polls it here).
    status, body = http("GET", api.url("http", "/v1/sidecars"), token=tokens["reader"])
    expect("GET /v1/sidecars with the reader token", status, 200, body)
    gathered = json.loads(body)
    if len(gathered["replicas"]) != 1 or gathered["unreachable"]:
        raise RunnerError(f"GET /v1/sidecars did not gather the broadcaster pod: {body[:500]}")
    log(f"policy-api: GET /v1/sidecars gathered the table of {gathered['replicas'][0]['replica']}")

    for pod in (api, broadcaster):
        started = time.monotonic()
        code = pod.stop()
        if code != 0:
            raise RunnerError(f"{pod.name} exited with {code} after SIGTERM:\n{pod.logs()}")
        log(f"{pod.name}: stopped by SIGTERM in {time.monotonic() - started:.1f} s, exit code 0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--etcd-port", type=int, required=True,
                        help="a real etcd's client port on 127.0.0.1")
    parser.add_argument("--values", type=Path, help="values file to render the chart with (default: none)")
    args = parser.parse_args()
    ids_file = os.environ.get("BOIFI_POD_IDS_FILE")
    podman = Podman(shlex.split(os.environ["BOIFI_PODMAN"]), Path(ids_file) if ids_file else None)
    images = dict(item.split("=", 1) for item in os.environ["BOIFI_POD_IMAGES"].split())
    if os.geteuid() != 0:
        raise SystemExit("podrunner: must run as root (kubelet writes volume files as root)")
    # Stop what we started when the caller interrupts us.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rendered = render(load_values(args.values) if args.values else {})
    run = Runner(rendered, podman, images, f"http://{SLIRP_HOST_LOOPBACK}:{args.etcd_port}")
    try:
        control_old_chart(rendered, run)
        scenario(rendered, run)
    except RunnerError as e:
        log(f"FAILED: {e}")
        return 1
    finally:
        run.close()
    log("the chart's pods ran from their rendered spec: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
