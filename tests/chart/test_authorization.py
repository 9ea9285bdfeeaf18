"""Who may reach what: the chart's Istio AuthorizationPolicies. The broadcaster hands out every
policy without a token, so only the plugin's target namespaces may read its stream; the API only
takes callers from the release namespace and the configured namespaces and principals. Checked
with the Istio models and with a small model of how a sidecar evaluates ALLOW policies (istio/api
security/v1beta1/authorization.proto: a request is allowed when any rule matches; a rule matches
when every one of from/to matches; a list matches when any entry does; paths are exact, "prefix*"
or "*suffix")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from conftest import VALUES_DIR, Rendered, load_values, render, validate_istio

SHA = "a" * 64


@dataclass(frozen=True)
class Request:
    namespace: str | None  # the caller's mTLS identity; None for a caller without a sidecar
    method: str
    path: str
    service_account: str = "default"

    @property
    def principal(self) -> str | None:
        if self.namespace is None:
            return None
        return f"cluster.local/ns/{self.namespace}/sa/{self.service_account}"


def matches(pattern: str, value: str) -> bool:
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return value.endswith(pattern[1:])
    return pattern == value


def source_matches(source: dict[str, Any], r: Request) -> bool:
    checks = {"namespaces": r.namespace, "principals": r.principal}
    for key, patterns in source.items():
        value = checks[key]  # an unknown field is a KeyError: the model must know every one used
        if value is None or not any(matches(p, value) for p in patterns):
            return False
    return True


def operation_matches(op: dict[str, Any], r: Request) -> bool:
    values = {"methods": r.method, "paths": r.path}
    return all(any(matches(p, values[key]) for p in patterns) for key, patterns in op.items())


def allowed(policy: dict[str, Any], r: Request) -> bool:
    assert policy["spec"]["action"] == "ALLOW"
    for rule in policy["spec"].get("rules", []):
        ok_from = "from" not in rule or any(source_matches(f["source"], r) for f in rule["from"])
        ok_to = "to" not in rule or any(operation_matches(t["operation"], r) for t in rule["to"])
        if ok_from and ok_to:
            return True
    return False


def policies(r: Rendered) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["labels"]["app.kubernetes.io/component"]: p
            for p in r.of_kind("AuthorizationPolicy")}


@pytest.fixture(scope="module")
def meshed() -> dict[str, dict[str, Any]]:
    return policies(render(load_values(VALUES_DIR / "namespaces-selectors.yaml")))


def test_broadcaster_stream_only_for_the_plugins_namespaces(meshed: dict[str, dict[str, Any]]) -> None:
    stream = meshed["sse-broadcaster"]
    for ns in ("demo", "shop", "payments"):
        assert allowed(stream, Request(ns, "GET", "/v1/config/stream"))
    # A switched-off target, any other namespace, a caller without identity: refused.
    for ns in ("legacy", "default", None):
        assert not allowed(stream, Request(ns, "GET", "/v1/config/stream"))
    # What holds no policy data stays open, to anyone.
    for path in ("/v1/health", "/v1/ready", "/metrics"):
        assert allowed(stream, Request(None, "GET", path))
    assert not allowed(stream, Request("demo", "POST", "/v1/config/stream"))
    assert not allowed(stream, Request("demo", "GET", "/v1/policies"))


def test_only_policy_api_reads_the_broadcasters_sidecar_tables(meshed: dict[str, dict[str, Any]]) -> None:
    stream = meshed["sse-broadcaster"]
    # policy-api runs as the release's service account, in the release namespace.
    assert allowed(stream, Request("boifi", "GET", "/v1/sidecars", "boifi"))
    # Not a target namespace's sidecars, not another account of the release namespace.
    for caller in (Request("demo", "GET", "/v1/sidecars"), Request("boifi", "GET", "/v1/sidecars"),
                   Request("demo", "GET", "/v1/sidecars", "boifi"), Request(None, "GET", "/v1/sidecars")):
        assert not allowed(stream, caller), caller
    assert not allowed(stream, Request("boifi", "POST", "/v1/sidecars", "boifi"))
    # The release's account gets nothing else it did not have.
    assert not allowed(stream, Request("boifi", "GET", "/v1/config/stream", "boifi"))
    # Another trust domain: the same namespace and account.
    other = Request("boifi", "GET", "/v1/sidecars", "boifi")
    principal = other.principal.replace("cluster.local", "prod.example.com")
    (rule,) = [r for r in stream["spec"]["rules"] if "/v1/sidecars" in str(r)]
    assert any(matches(p, principal) for p in rule["from"][0]["source"]["principals"])
    # A named service account.
    named = policies(render({"serviceAccount": {"name": "chaos-sa"}}))["sse-broadcaster"]
    assert allowed(named, Request("boifi", "GET", "/v1/sidecars", "chaos-sa"))
    assert not allowed(named, Request("boifi", "GET", "/v1/sidecars", "boifi"))


def test_api_only_for_the_release_namespace_and_configured_callers() -> None:
    values = {"authorization": {"policyApi": {
        "namespaces": ["chaos"], "principals": ["cluster.local/ns/ci/sa/optimizer"]}}}
    api = policies(render(values))["policy-api"]
    for path, method in (("/v1/policies", "POST"), ("/v1/policies/reviews-abort", "DELETE"),
                         ("/v1/halt", "POST"), ("/v1/policies", "GET"), ("/v1/sidecars", "GET")):
        assert allowed(api, Request("boifi", method, path)), path  # helm test, port-forwards
        assert allowed(api, Request("chaos", method, path)), path
        assert not allowed(api, Request("demo", method, path)), path
        assert not allowed(api, Request(None, method, path)), path
    # The listed principal, and not another service account of its namespace.
    assert allowed(api, Request("ci", "POST", "/v1/policies", "optimizer"))
    assert not allowed(api, Request("ci", "POST", "/v1/policies"))
    for path in ("/v1/health", "/v1/ready", "/metrics", "/v1/openapi.json"):
        assert allowed(api, Request(None, "GET", path))


def test_no_target_means_no_reader_and_never_an_empty_source() -> None:
    # An empty `namespaces` list would not restrict anything: it must never be rendered.
    stream = policies(render({}))["sse-broadcaster"]
    assert not allowed(stream, Request("demo", "GET", "/v1/config/stream"))
    for values_file in sorted(VALUES_DIR.glob("*.yaml")):
        for policy in render(load_values(values_file)).of_kind("AuthorizationPolicy"):
            for rule in policy["spec"]["rules"]:
                for entry in rule.get("from", []):
                    assert all(entry["source"].values()), (values_file, policy)


def test_extra_namespaces_may_read_the_stream() -> None:
    values = {"plugin": {"sha256": SHA, "targets": {"demo": {}}},
              "authorization": {"sseBroadcaster": {"extraNamespaces": ["canary", "demo"]}}}
    stream = policies(render(values))["sse-broadcaster"]
    (rule,) = [r for r in stream["spec"]["rules"] if "/v1/config/stream" in str(r.get("to"))]
    assert rule["from"][0]["source"]["namespaces"] == ["demo", "canary"]


def test_policies_select_their_own_pods(meshed: dict[str, dict[str, Any]]) -> None:
    rendered = render(load_values(VALUES_DIR / "namespaces-selectors.yaml"))
    deployments = {d["metadata"]["labels"]["app.kubernetes.io/component"]: d
                   for d in rendered.of_kind("Deployment")}
    for component, policy in meshed.items():
        assert policy["metadata"]["namespace"] == "boifi"
        pod_labels = deployments[component]["spec"]["template"]["metadata"]["labels"]
        selector = policy["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items(), component
        others = [d for c, d in deployments.items() if c != component]
        assert not any(selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
                       for d in others)


def test_policies_pass_istio_models(meshed: dict[str, dict[str, Any]]) -> None:
    results = validate_istio(list(meshed.values()))
    assert [r["error"] for r in results] == [None, None], results


def test_istio_models_catch_a_bad_policy() -> None:
    bad = {"apiVersion": "security.istio.io/v1beta1", "kind": "AuthorizationPolicy",
           "metadata": {"name": "x", "namespace": "boifi"},
           "spec": {"action": "ALOW", "rules": [{"to": [{"operation": {"paths": "/x"}}]}]}}
    (result,) = validate_istio([bad])
    assert result["error"] and "action" in result["error"]


def test_off_renders_none() -> None:
    assert not render({"authorization": {"enabled": False}}).of_kind("AuthorizationPolicy")


def test_helm_test_pod_is_admitted_and_still_completes() -> None:
    rendered = render({})
    test_pod = next(p for p in rendered.of_kind("Pod")
                    if p["metadata"]["annotations"].get("helm.sh/hook") == "test")
    # It gets a sidecar, hence an identity in the release namespace, which the API admits...
    assert test_pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "true"
    assert "holdApplicationUntilProxyStarts" in test_pod["metadata"]["annotations"]["proxy.istio.io/config"]
    api = policies(rendered)["policy-api"]
    assert allowed(api, Request(test_pod["metadata"]["namespace"], "GET", "/v1/policies"))
    # ...and stops that sidecar when its script exits, or the pod would never complete.
    script = test_pod["spec"]["containers"][0]["args"][0]
    assert "trap 'curl -fsS -X POST http://127.0.0.1:15020/quitquitquit" in script
    # Without the policies, no sidecar, as before.
    off = render({"authorization": {"enabled": False}})
    off_pod = next(p for p in off.of_kind("Pod") if "helm.sh/hook" in p["metadata"]["annotations"])
    assert off_pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"
    assert "quitquitquit" not in off_pod["spec"]["containers"][0]["args"][0]
