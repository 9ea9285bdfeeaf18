"""scripts/e2e-k3s.sh cannot run here (no k3s); its --help and --dry-run can, and a dry run must
show every step while running none of the cluster tools."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "e2e-k3s.sh"
TOOLS = ["kubectl", "helm", "istioctl", "podman", "docker", "skopeo", "curl", "systemctl",
         "apt-get", "docker-registry", "k3s"]


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Stubs that record any call: a dry run must not reach them.
    stubs = tmp_path / "bin"
    stubs.mkdir(exist_ok=True)
    for tool in TOOLS:
        stub = stubs / tool
        stub.write_text(f'#!/bin/sh\necho {tool} "$@" >> "{tmp_path}/called"\nexit 1\n')
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_help(tmp_path: Path) -> None:
    proc = run(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for option in ("--dry-run", "--keep", "--registry", "--istio-version", "--propagation-budget"):
        assert option in proc.stdout
    assert not (tmp_path / "called").exists()


def test_dry_run_prints_every_step_and_runs_nothing(tmp_path: Path) -> None:
    proc = run(["--dry-run", "--tag", "e2e-test"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    assert not (tmp_path / "called").exists(), (tmp_path / "called").read_text()
    for expected in (
        "k3s", "registry", "istioctl install", "docker/policy-api.Dockerfile",
        "docker/sse-broadcaster.Dockerfile", "scripts/build-plugin.sh", "scripts/publish-plugin.sh",
        "helm upgrade --install boifi helm/boifi", "helm test boifi",
        "check: service-level targeting", "check: percentage across replicas",
        "check: propagation time", "check: halt", "check: Prometheus",
        "/v1/halt", "dry run: 13 steps printed, nothing was run",
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
