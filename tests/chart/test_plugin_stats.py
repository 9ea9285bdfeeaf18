"""Plugin counters with labels on every Istio version, without touching the sidecars' bootstrap:
the plugin writes the fault type and the policy into the stat name (policy last, so Istio's
unanchored stats tag regexes cannot cut into it), and Prometheus relabel rules, shipped once in
files/plugin-metric-relabel.yaml, make labels of them. Here the rules run through a model of
Prometheus' relabeling; tests/tests/prometheus.rs runs them in a real Prometheus against a real
sidecar-like Envoy. The chart renders them into a PodMonitor per target namespace."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from conftest import CHART, ROOT, VALUES_DIR, Rendered, load_values, render

RULES_FILE = CHART / "files" / "plugin-metric-relabel.yaml"
RULES: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text())
PLUGIN = {"sha256": "a" * 64, "targets": {"demo": {}}}


def relabel(labels: dict[str, str], rules: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus' `replace` and `keep` relabel actions (model/relabel/relabel.go): the source
    labels joined by the separator must match the fully anchored regex; `replace` sets the
    target to the expanded replacement, or drops it when that is empty. None when dropped."""
    labels = dict(labels)
    for rule in rules:
        sources = rule.get("source_labels", rule.get("sourceLabels", []))
        value = rule.get("separator", ";").join(labels.get(s, "") for s in sources)
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
            continue
        assert action == "replace", rule
        if not match:
            continue
        target = rule.get("target_label", rule.get("targetLabel"))
        replacement = re.sub(r"\$\{(\d+)\}", lambda m: match.group(int(m.group(1))) or "",
                             rule.get("replacement", "$1"))
        if replacement:
            labels[target] = replacement
        else:
            labels.pop(target, None)
    return labels


@pytest.mark.parametrize(("scraped", "expected"), [
    ({"__name__": "boifi_faults_injected_fault_type_abort_policy_reviews_abort"},
     {"__name__": "boifi_faults_injected", "policy": "reviews-abort", "fault_type": "abort"}),
    # Words Istio's tag regexes look for, and a policy named like a fault type.
    ({"__name__": "boifi_faults_injected_fault_type_delay_policy_redis_cache"},
     {"__name__": "boifi_faults_injected", "policy": "redis-cache", "fault_type": "delay"}),
    ({"__name__": "boifi_faults_injected_fault_type_abort_policy_abort"},
     {"__name__": "boifi_faults_injected", "policy": "abort", "fault_type": "abort"}),
    ({"__name__": "boifi_fault_delay_ms_policy_slow_bucket_bucket", "le": "250"},
     {"__name__": "boifi_fault_delay_ms_bucket", "policy": "slow-bucket", "le": "250"}),
    ({"__name__": "boifi_fault_delay_ms_policy_p_sum"},
     {"__name__": "boifi_fault_delay_ms_sum", "policy": "p"}),
    ({"__name__": "boifi_fault_delay_ms_policy_p_count"},
     {"__name__": "boifi_fault_delay_ms_count", "policy": "p"}),
    # The plugin's other stats, and everything else in a sidecar scrape, are left alone; an
    # application's own `policy` label keeps its underscores.
    ({"__name__": "boifi_config_revision"}, {"__name__": "boifi_config_revision"}),
    ({"__name__": "http_requests_total", "policy": "a_b"},
     {"__name__": "http_requests_total", "policy": "a_b"}),
])
def test_rules_make_labels_of_the_name(scraped: dict[str, str], expected: dict[str, str]) -> None:
    assert relabel(scraped, RULES) == expected


@pytest.mark.parametrize("hyphens", range(0, 62))
def test_every_hyphen_count_comes_back(hyphens: int) -> None:
    # Names are DNS labels of at most 63 characters: up to 61 hyphens, any of them in a row.
    name = "a" + "-" * hyphens + "b"
    scraped = {"__name__": "boifi_faults_injected_fault_type_abort_policy_" + name.replace("-", "_")}
    assert relabel(scraped, RULES)["policy"] == name


def test_chart_ships_no_bootstrap_patch() -> None:
    # Istio 1.21 removed BOOTSTRAP EnvoyFilter patches (and before it applied them only with
    # BOOTSTRAP_XDS_AGENT=true): nothing in the chart may rely on one.
    for template in (CHART / "templates").rglob("*"):
        if template.is_file():
            text = template.read_text()
            assert "EnvoyFilter" not in text and "BOOTSTRAP" not in text, template
    for values_file in sorted(VALUES_DIR.glob("*.yaml")):
        assert not render(load_values(values_file)).of_kind("EnvoyFilter"), values_file


def podmonitors(r: Rendered) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["namespace"]: m for m in r.of_kind("PodMonitor")}


def test_one_podmonitor_per_target_namespace_with_the_wasmplugin_selector() -> None:
    r = render(load_values(VALUES_DIR / "namespaces-selectors.yaml"))
    monitors = podmonitors(r)
    plugins = {p["metadata"]["namespace"]: p for p in r.of_kind("WasmPlugin")}
    assert set(monitors) == set(plugins) == {"demo", "shop", "payments"}
    for ns, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["name"] == "boifi-plugin"
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [ns]}
        selector = plugins[ns]["spec"].get("selector", {}).get("matchLabels", {})
        assert spec["selector"]["matchLabels"] == selector, ns
        (endpoint,) = spec["podMetricsEndpoints"]
        # The port Istio's injector names on the istio-proxy container (15090).
        assert (endpoint["port"], endpoint["path"]) == ("http-envoy-prom", "/stats/prometheus")
        keep, *rules = endpoint["metricRelabelings"]
        assert keep == {"sourceLabels": ["__name__"], "regex": "boifi_.*", "action": "keep"}
        assert [camel_to_snake(rule) for rule in rules] == RULES


def camel_to_snake(rule: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), k): v for k, v in rule.items()}


def test_podmonitor_rules_behave_like_the_file() -> None:
    r = render(load_values(VALUES_DIR / "namespaces-selectors.yaml"))
    rules = podmonitors(r)["demo"]["spec"]["podMetricsEndpoints"][0]["metricRelabelings"]
    name = "boifi_faults_injected_fault_type_abort_policy_x_y"
    assert relabel({"__name__": name}, rules)["policy"] == "x-y"
    assert relabel({"__name__": "istio_requests_total"}, rules) is None


def test_no_podmonitor_unless_asked() -> None:
    assert not render({"plugin": PLUGIN}).of_kind("PodMonitor")
    on = {"plugin": {**PLUGIN, "stats": {"podMonitor": {"enabled": True}}}}
    assert podmonitors(render(on)).keys() == {"demo"}
    off = {"plugin": {**PLUGIN, "enabled": False, "stats": {"podMonitor": {"enabled": True}}}}
    assert not render(off).of_kind("PodMonitor")


def test_notes_and_docs_point_to_the_rules() -> None:
    notes = render({"plugin": PLUGIN}).notes
    assert "files/plugin-metric-relabel.yaml" in notes and "restart" in notes
    with_monitor = {"plugin": {**PLUGIN, "stats": {"podMonitor": {"enabled": True}}}}
    assert "PodMonitor boifi-plugin" in render(with_monitor).notes
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "helm/boifi/files/plugin-metric-relabel.yaml" in deploy
    assert "stats_tags" not in (ROOT / "wasm" / "plugin" / "README.md").read_text()
