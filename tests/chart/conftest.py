"""Shared helpers for the chart tests: render helm/boifi with real Helm (helm-python-sdk, which
embeds Helm's Go library) and hand the tests parsed objects."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "boifi"
VALUES_DIR = Path(__file__).resolve().parent / "values"
VALUES_FILES = sorted(VALUES_DIR.glob("*.yaml"))
RELEASE = "boifi"
NAMESPACE = "boifi"


@dataclass
class Rendered:
    """One render of the chart: every object, plus NOTES.txt."""

    objects: list[dict[str, Any]]
    notes: str
    values: dict[str, Any]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
        return found[0]


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render(values: dict[str, Any], *, name: str = RELEASE, namespace: str = NAMESPACE) -> Rendered:
    """Validate values against the schema, then render as `helm install` would."""
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values)
    files = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return Rendered(objects=objects, notes=notes, values=chart.merge_values(values))


@pytest.fixture(scope="session")
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


@pytest.fixture(params=VALUES_FILES, ids=[p.stem for p in VALUES_FILES])
def values_file(request: pytest.FixtureRequest) -> Path:
    return request.param


_RENDER_CACHE: dict[Path, Rendered] = {}


@pytest.fixture
def rendered(values_file: Path) -> Rendered:
    if values_file not in _RENDER_CACHE:
        _RENDER_CACHE[values_file] = render(load_values(values_file))
    return _RENDER_CACHE[values_file]


def node_modules() -> Path:
    path = Path(os.environ.get("BOIFI_NODE_MODULES", ROOT / "target" / "tools" / "node" / "node_modules"))
    if not (path / "@kubernetes-models" / "istio").is_dir():
        pytest.fail(f"@kubernetes-models/istio not installed under {path}: run scripts/test-chart.sh")
    return path


def validate_istio(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run the objects through @kubernetes-models/istio's validate() in node."""
    proc = subprocess.run(
        ["node", str(Path(__file__).with_name("validate-istio.mjs"))],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        env={**os.environ, "BOIFI_NODE_MODULES": str(node_modules())},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"validate-istio.mjs failed: {proc.stderr}"
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}
