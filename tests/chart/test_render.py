"""Every values file renders, lints and validates with the real tools."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from conftest import CHART, Rendered, load_values, validate_istio

# Kinds the chart may render that are not core Kubernetes (validated elsewhere).
NON_CORE = {"WasmPlugin", "AuthorizationPolicy", "ServiceMonitor", "PodMonitor"}
# The chart's kubeVersion floor and the newest schema kubernetes-validate ships.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]


def test_lint_is_clean(values_file: Path) -> None:
    report = helm.lint(CHART, load_values(values_file), strict=True, namespace="boifi")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_core_objects_pass_kubernetes_validate_strict(
    rendered: Rendered, kube_version: str, tmp_path: Path
) -> None:
    files = []
    for i, obj in enumerate(o for o in rendered.objects if o["kind"] not in NON_CORE):
        path = tmp_path / f"{i:02d}-{obj['kind']}-{obj['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(obj))
        files.append(str(path))
    assert files
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", "--quiet",
         "-k", kube_version, *files],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kubernetes_validate_catches_unknown_field(tmp_path: Path) -> None:
    # Guards the check above: --strict must fail on a field Kubernetes does not know.
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 80}], "selectr": {"a": "b"}},
    }))
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("kubernetes-validate")), "--strict", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode != 0


def test_wasmplugins_pass_istio_models(rendered: Rendered) -> None:
    plugins = rendered.of_kind("WasmPlugin")
    for result in validate_istio(plugins):
        assert result["error"] is None, result
    for plugin in plugins:
        # The models ignore unknown fields: every key we render must be a WasmPlugin field.
        assert set(plugin["spec"]) <= {
            "selector", "url", "sha256", "imagePullPolicy", "imagePullSecret", "failStrategy",
            "phase", "priority", "match", "pluginConfig",
        }


def test_istio_models_catch_bad_wasmplugin() -> None:
    bad = {"apiVersion": "extensions.istio.io/v1alpha1", "kind": "WasmPlugin",
           "metadata": {"name": "x", "namespace": "demo"},
           "spec": {"url": "oci://r/p:1", "failStrategy": "FAIL_OPN", "match": [{"mode": "SERVR"}]}}
    (result,) = validate_istio([bad])
    assert result["error"] and "failStrategy" in result["error"] and "mode" in result["error"]


def test_every_object_has_standard_labels(rendered: Rendered) -> None:
    for obj in rendered.objects:
        labels = obj["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by",
                    "app.kubernetes.io/component", "helm.sh/chart"):
            assert key in labels, f"{obj['kind']}/{obj['metadata']['name']} lacks {key}"
        assert len(obj["metadata"]["name"]) <= 63


def test_workload_selectors_match_their_pods_and_services(rendered: Rendered) -> None:
    services = {s["metadata"]["name"]: s for s in rendered.of_kind("Service")}
    for workload in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        selector = workload["spec"]["selector"]["matchLabels"]
        pod_labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert set(selector) == {"app.kubernetes.io/name", "app.kubernetes.io/instance",
                                 "app.kubernetes.io/component"}
        serving = [s for s in services.values() if s["spec"]["selector"] == selector]
        assert serving, f"no Service selects {workload['metadata']['name']}"


def test_containers_are_locked_down(rendered: Rendered) -> None:
    pods = [w["spec"]["template"]["spec"] for w in
            rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")]
    pods += [p["spec"] for p in rendered.of_kind("Pod")]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert ":latest" not in c["image"]
            assert c["resources"]["requests"]


def test_services_probe_health_and_readiness(rendered: Rendered) -> None:
    for deployment in rendered.of_kind("Deployment"):
        (c,) = deployment["spec"]["template"]["spec"]["containers"]
        assert c["livenessProbe"]["httpGet"]["path"] == "/v1/health"
        assert c["startupProbe"]["httpGet"]["path"] == "/v1/health"
        assert c["readinessProbe"]["httpGet"]["path"] == "/v1/ready"


def test_no_emptydir_for_etcd_unless_asked(rendered: Rendered) -> None:
    for sts in rendered.of_kind("StatefulSet"):
        volumes = sts["spec"]["template"]["spec"].get("volumes", [])
        assert not any("emptyDir" in v for v in volumes)
        (claim,) = sts["spec"]["volumeClaimTemplates"]
        assert claim["metadata"]["name"] == "data"


def test_helm_test_hook_checks_the_api(rendered: Rendered) -> None:
    (pod,) = rendered.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "http://boifi-policy-api.boifi.svc" in script
    assert "/v1/health" in script and "/v1/ready" in script and "/v1/policies" in script
