"""Plugin counters with labels: the chart's EnvoyFilters put the plugin's stats_tags into the
sidecars' bootstrap. The regexes have one source in the chart (values.yaml defaults) and must
equal the ones the plugin's Envoy config (and so every real-Envoy test) and README use."""

from __future__ import annotations

import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from conftest import CHART, ROOT, VALUES_DIR, Rendered, load_values, render, validate_istio

PLUGIN_ENVOY = ROOT / "wasm" / "plugin" / "envoy.yaml"
PLUGIN_README = ROOT / "wasm" / "plugin" / "README.md"
# [(tag name, regex)] in order, from values.yaml: the chart's one source of the rules.
DEFAULT_TAGS = [(t["name"], t["regex"]) for t in yaml.safe_load(
    (CHART / "values.yaml").read_text())["plugin"]["stats"]["tagExtraction"]["tags"]]


def stats_tags_block(text: str) -> list[tuple[str, str]]:
    """The `stats_config:` block of an Envoy config, as [(tag_name, regex)]. The plugin's
    envoy.yaml has template placeholders elsewhere, so only this block is parsed."""
    match = re.search(r"^( *)stats_config:\n((?:\1 .*\n)+)", text, re.MULTILINE)
    assert match, "no stats_config block"
    indent = len(match.group(1))
    block = "\n".join(line[indent:] for line in match.group(0).splitlines())
    tags = yaml.safe_load(block)["stats_config"]["stats_tags"]
    return [(t["tag_name"], t["regex"]) for t in tags]


def envoy_filters(r: Rendered) -> dict[str, dict[str, Any]]:
    return {f["metadata"]["namespace"]: f for f in r.of_kind("EnvoyFilter")}


def rendered_tags(envoy_filter: dict[str, Any]) -> list[tuple[str, str]]:
    (patch,) = envoy_filter["spec"]["configPatches"]
    tags = patch["patch"]["value"]["stats_config"]["stats_tags"]
    return [(t["tag_name"], t["regex"]) for t in tags]


def test_chart_tags_equal_the_plugin_envoy_config_and_readme() -> None:
    assert [name for name, _ in DEFAULT_TAGS] == ["policy", "fault_type"]
    assert stats_tags_block(PLUGIN_ENVOY.read_text()) == DEFAULT_TAGS
    readme_blocks = re.findall(r"```yaml\n(.*?)```", PLUGIN_README.read_text(), re.DOTALL)
    (readme,) = [b for b in readme_blocks if "stats_tags" in b]
    assert stats_tags_block(readme) == DEFAULT_TAGS


@pytest.mark.parametrize(("stat", "labels", "name"), [
    ("wasmcustom.boifi_faults_injected.policy.reviews-abort.fault_type.abort",
     {"policy": "reviews-abort", "fault_type": "abort"}, "wasmcustom.boifi_faults_injected"),
    ("wasmcustom.boifi_faults_injected.policy.p1.fault_type.delay",
     {"policy": "p1", "fault_type": "delay"}, "wasmcustom.boifi_faults_injected"),
    ("wasmcustom.boifi_fault_delay_ms.policy.slow-7", {"policy": "slow-7"},
     "wasmcustom.boifi_fault_delay_ms"),
    ("wasmcustom.boifi_config_revision", {}, "wasmcustom.boifi_config_revision"),
    # Other stats are left alone, Istio's included.
    ("cluster.outbound|9080||reviews.demo.svc.cluster.local.upstream_rq_503", {},
     "cluster.outbound|9080||reviews.demo.svc.cluster.local.upstream_rq_503"),
])
def test_tags_turn_name_parts_into_labels(stat: str, labels: dict[str, str], name: str) -> None:
    # As Envoy does: each regex runs on the full name; the second group is the value, the first
    # is cut from the name.
    found: dict[str, str] = {}
    cuts = []
    for tag, regex in DEFAULT_TAGS:
        m = re.search(regex, stat)
        if m:
            found[tag] = m.group(2)
            cuts.append(m.span(1))
    rest = stat
    for start, end in sorted(cuts, reverse=True):
        rest = rest[:start] + rest[end:]
    assert (found, rest) == (labels, name)


def test_one_envoyfilter_per_target_namespace_with_the_wasmplugin_selector() -> None:
    r = render(load_values(VALUES_DIR / "namespaces-selectors.yaml"))
    filters = envoy_filters(r)
    plugins = {p["metadata"]["namespace"]: p for p in r.of_kind("WasmPlugin")}
    assert set(filters) == set(plugins) == {"demo", "shop", "payments"}
    for ns, envoy_filter in filters.items():
        assert envoy_filter["metadata"]["name"] == "boifi-plugin-stats"
        assert envoy_filter["metadata"]["labels"]["app.kubernetes.io/component"] == "plugin"
        spec = envoy_filter["spec"]
        assert set(spec) <= {"workloadSelector", "configPatches"}
        selector = plugins[ns]["spec"].get("selector", {}).get("matchLabels")
        assert spec.get("workloadSelector", {}).get("labels") == selector, ns
        (patch,) = spec["configPatches"]
        assert patch["applyTo"] == "BOOTSTRAP" and set(patch) == {"applyTo", "patch"}
        assert patch["patch"]["operation"] == "MERGE"
        assert patch["patch"]["value"] == {"stats_config": {"stats_tags": [
            {"tag_name": name, "regex": regex} for name, regex in DEFAULT_TAGS]}}
    assert "workloadSelector" not in filters["payments"]["spec"]


def test_envoyfilters_pass_istio_models(rendered: Rendered) -> None:
    filters = rendered.of_kind("EnvoyFilter")
    # Every values file keeps tag extraction on: one EnvoyFilter per WasmPlugin.
    assert len(filters) == len(rendered.of_kind("WasmPlugin"))
    results = validate_istio(filters)
    assert [r["error"] for r in results] == [None] * len(filters), results


def test_istio_models_catch_bad_envoyfilter() -> None:
    bad = {"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
           "metadata": {"name": "x", "namespace": "demo"},
           "spec": {"configPatches": [{"applyTo": "BOOTSTRAPS",
                                       "patch": {"operation": "MERGE", "value": {}}}]}}
    (result,) = validate_istio([bad])
    assert result["error"] and "applyTo" in result["error"]


def test_tag_extraction_off_or_no_targets_renders_no_envoyfilter() -> None:
    targets = {"sha256": "a" * 64, "targets": {"demo": {}}}
    assert envoy_filters(render({"plugin": targets})).keys() == {"demo"}
    off = render({"plugin": {**targets, "stats": {"tagExtraction": {"enabled": False}}}})
    assert not off.of_kind("EnvoyFilter") and off.of_kind("WasmPlugin")
    assert not render({}).of_kind("EnvoyFilter")
    assert not render({"plugin": {**targets, "enabled": False}}).of_kind("EnvoyFilter")


def test_tags_can_be_replaced_and_bad_names_are_refused() -> None:
    mine = [{"name": "policy", "regex": r"^x(\.p\.([a-z]+))"}]
    values = {"plugin": {"sha256": "a" * 64, "targets": {"demo": {}},
                         "stats": {"tagExtraction": {"tags": mine}}}}
    assert rendered_tags(envoy_filters(render(values))["demo"]) == [
        ("policy", r"^x(\.p\.([a-z]+))")]
    # A tag name is a Prometheus label name.
    with pytest.raises(helm.HelmValuesError, match="bad-name"):
        render({"plugin": {"stats": {"tagExtraction": {"tags": [
            {"name": "bad-name", "regex": "x"}]}}}})


def test_notes_say_when_the_labels_appear() -> None:
    notes = render(load_values(VALUES_DIR / "namespaces-selectors.yaml")).notes
    assert "EnvoyFilter boifi-plugin-stats" in notes and "rollout restart" in notes
    assert "EnvoyFilter" not in render({}).notes
