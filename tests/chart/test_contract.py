"""The rendered objects honour design.md's contract and put the values where they must go."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from conftest import VALUES_DIR, Rendered, env_of, load_values, render

FQDN = "boifi-sse-broadcaster.boifi.svc.cluster.local"
CLUSTER = f"outbound|8081||{FQDN}"
TOKEN_LINE_ROLES = {"reader", "writer"}


def by_file(name: str) -> Rendered:
    return render(load_values(VALUES_DIR / f"{name}.yaml"))


def container(r: Rendered, kind: str, name: str) -> dict:
    (c,) = r.one(kind, name)["spec"]["template"]["spec"]["containers"]
    return c


def decoded(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def test_defaults_env_contract() -> None:
    r = by_file("defaults")
    api = env_of(container(r, "Deployment", "boifi-policy-api"))
    bc = env_of(container(r, "Deployment", "boifi-sse-broadcaster"))
    endpoints = "http://boifi-etcd-0.boifi-etcd-headless.boifi.svc.cluster.local:2379"
    assert api["BOIFI_LISTEN_ADDR"] == "0.0.0.0:8080"
    assert bc["BOIFI_LISTEN_ADDR"] == "0.0.0.0:8081"
    for env in (api, bc):
        assert env["BOIFI_ETCD_ENDPOINTS"] == endpoints
        assert env["BOIFI_ETCD_PREFIX"] == "/boifi/"
        assert "BOIFI_AUTH_DISABLED" not in env
        assert "BOIFI_DATA_DIR" not in env  # the embedded store cannot be shared by replicas
    assert api["BOIFI_TOKENS_FILE"] == "/etc/boifi/tokens/tokens"
    assert "BOIFI_TOKENS_FILE" not in bc


def test_tokens_file_is_mounted_from_the_generated_secret() -> None:
    r = by_file("defaults")
    deployment = r.one("Deployment", "boifi-policy-api")
    pod = deployment["spec"]["template"]["spec"]
    (mount,) = pod["containers"][0]["volumeMounts"]
    (volume,) = pod["volumes"]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    assert f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}" == "/etc/boifi/tokens/tokens"
    secret = r.one("Secret", volume["secret"]["secretName"])
    assert volume["secret"]["items"][0]["key"] == "tokens"
    lines = decoded(secret, "tokens").splitlines()
    parsed = {name: (role, token) for name, role, token in (line.split(" ") for line in lines)}
    assert set(parsed) == {"admin", "viewer"}
    assert parsed["admin"][0] == "writer" and parsed["viewer"][0] == "reader"
    for name, (role, token) in parsed.items():
        assert role in TOKEN_LINE_ROLES
        assert len(token) == 40 and token.isalnum()
        assert decoded(secret, f"token.{name}") == token
    assert deployment["spec"]["template"]["metadata"]["annotations"]["checksum/tokens"]


def test_given_tokens_are_used_verbatim() -> None:
    r = render({"auth": {"tokens": {"admin": {"role": "writer", "token": "s3cr3t-token-for-tests"},
                                    "viewer": None,
                                    "optimizer": {"role": "writer"}}}})
    secret = r.one("Secret", "boifi-tokens")
    lines = sorted(decoded(secret, "tokens").splitlines())
    assert lines[0] == "admin writer s3cr3t-token-for-tests"
    assert lines[1].startswith("optimizer writer ")
    assert len(lines) == 2


def test_external_etcd_and_existing_secret() -> None:
    r = by_file("external-etcd")
    assert not r.of_kind("StatefulSet") and not r.of_kind("Secret")
    for name in ("boifi-policy-api", "boifi-sse-broadcaster"):
        env = env_of(container(r, "Deployment", name))
        assert env["BOIFI_ETCD_ENDPOINTS"] == (
            "http://etcd-a.db.svc.cluster.local:2379,http://etcd-b.db.svc.cluster.local:2379")
        assert env["BOIFI_ETCD_PREFIX"] == "/faults/prod/"
    pod = r.one("Deployment", "boifi-policy-api")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "boifi-api-tokens"


def test_three_etcd_members_know_each_other() -> None:
    r = by_file("etcd-3-members")
    sts = r.one("StatefulSet", "boifi-etcd")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    domain = "boifi-etcd-headless.boifi.svc.k8s.internal"
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--initial-cluster={','.join(f'boifi-etcd-{i}=http://boifi-etcd-{i}.{domain}:2380' for i in range(3))}" in args
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast-ssd"
    assert claim["resources"]["requests"]["storage"] == "5Gi"
    env = env_of(container(r, "Deployment", "boifi-policy-api"))
    assert env["BOIFI_ETCD_ENDPOINTS"].split(",") == [
        f"http://boifi-etcd-{i}.{domain}:2379" for i in range(3)]
    headless = r.one("Service", "boifi-etcd-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
    assert r.one("PodDisruptionBudget", "boifi-etcd")["spec"]["minAvailable"] == 2
    # The broadcaster's FQDN follows clusterDomain, in the plugin's cluster name too.
    (plugin,) = r.of_kind("WasmPlugin")
    assert plugin["spec"]["pluginConfig"]["broadcaster_cluster"] == (
        "outbound|8081||boifi-sse-broadcaster.boifi.svc.k8s.internal")
    hpa = r.one("HorizontalPodAutoscaler", "boifi-sse-broadcaster")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 9)
    assert [m["type"] for m in hpa["spec"]["metrics"]] == ["Resource", "Pods"]
    assert "replicas" not in r.one("Deployment", "boifi-sse-broadcaster")["spec"]


BROADCASTER_METRICS = Path(__file__).resolve().parents[2] / "services/sse-broadcaster/src/metrics.rs"


def test_broadcaster_hpa_can_aim_at_held_polls() -> None:
    r = render({"sseBroadcaster": {"maxClients": 12000, "autoscaling": {
        "enabled": True, "targetCPUUtilizationPercentage": 0, "targetHeldPollsPerPod": 5000}}})
    hpa = r.one("HorizontalPodAutoscaler", "boifi-sse-broadcaster")
    assert hpa["spec"]["metrics"] == [{
        "type": "Pods",
        "pods": {
            "metric": {"name": "boifi_broadcaster_clients", "selector": {"matchLabels": {"mode": "poll"}}},
            "target": {"type": "AverageValue", "averageValue": "5000"},
        },
    }]
    # The gauge and its label are the broadcaster's own.
    source = BROADCASTER_METRICS.read_text()
    assert '"boifi_broadcaster_clients"' in source and '&["mode"]' in source and '"poll"' in source
    env = env_of(container(r, "Deployment", "boifi-sse-broadcaster"))
    assert env["BOIFI_MAX_CLIENTS"] == "12000"
    # Off by default; the client limit is set anyway.
    default = render({})
    assert not default.of_kind("HorizontalPodAutoscaler")
    assert env_of(container(default, "Deployment", "boifi-sse-broadcaster"))["BOIFI_MAX_CLIENTS"] == "10000"


def test_one_wasmplugin_per_target_namespace_with_its_selector() -> None:
    r = by_file("namespaces-selectors")
    plugins = {p["metadata"]["namespace"]: p for p in r.of_kind("WasmPlugin")}
    assert set(plugins) == {"demo", "shop", "payments"}  # "legacy" is switched off
    assert plugins["demo"]["spec"]["selector"]["matchLabels"] == {"app": "reviews", "version": "v2"}
    assert plugins["shop"]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "checkout"}
    assert "selector" not in plugins["payments"]["spec"]
    for ns, plugin in plugins.items():
        spec = plugin["spec"]
        assert plugin["metadata"]["name"] == "boifi-plugin"
        assert spec["url"] == "oci://registry.example.com:5000/boifi/plugin:0.1.0"
        assert spec["sha256"] == "0123456789abcdef" * 4
        assert spec["imagePullPolicy"] == "Always"
        assert spec["imagePullSecret"] == "regcred"
        assert spec["failStrategy"] == "FAIL_OPEN"
        assert spec["phase"] == "AUTHZ" and spec["priority"] == 10
        assert spec["match"] == [{"mode": "SERVER"}]
        assert spec["pluginConfig"] == {
            "broadcaster_cluster": CLUSTER,
            "broadcaster_authority": f"{FQDN}:8081",
            "poll_wait_ms": 30000,
        }, ns
    api = r.one("Deployment", "boifi-policy-api")["spec"]["template"]["spec"]
    assert api["containers"][0]["image"] == "registry.example.com:5000/boifi/policy-api:0.1.0"
    assert api["imagePullSecrets"] == [{"name": "regcred"}]


def test_cluster_name_follows_release_namespace_and_port() -> None:
    values = {"sseBroadcaster": {"service": {"port": 9000}},
              "plugin": {"sha256": "a" * 64, "targets": {"demo": {}}}}
    r = render(values, name="chaos", namespace="faults")
    (plugin,) = r.of_kind("WasmPlugin")
    fqdn = "chaos-boifi-sse-broadcaster.faults.svc.cluster.local"
    assert plugin["spec"]["pluginConfig"]["broadcaster_cluster"] == f"outbound|9000||{fqdn}"
    assert plugin["spec"]["pluginConfig"]["broadcaster_authority"] == f"{fqdn}:9000"
    assert plugin["spec"]["url"] == "oci://boifi/plugin:0.1.0"
    service = r.one("Service", "chaos-boifi-sse-broadcaster")
    assert service["spec"]["ports"][0]["port"] == 9000
    assert service["spec"]["ports"][0]["name"] == "http"


def test_policy_api_gathers_every_broadcaster_replica_through_the_headless_service() -> None:
    r = render({}, name="chaos", namespace="faults")
    headless = r.one("Service", "chaos-boifi-sse-broadcaster-headless")
    ordinary = r.one("Service", "chaos-boifi-sse-broadcaster")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == ordinary["spec"]["selector"]
    (port,) = headless["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"], port["appProtocol"]) == (
        "http", 8081, "http", "http")
    # The port policy-api dials is the one the broadcaster's container listens on.
    broadcaster = container(r, "Deployment", "chaos-boifi-sse-broadcaster")
    assert broadcaster["ports"][0]["containerPort"] == 8081
    assert env_of(broadcaster)["BOIFI_LISTEN_ADDR"] == "0.0.0.0:8081"
    api = env_of(container(r, "Deployment", "chaos-boifi-policy-api"))
    assert api["BOIFI_BROADCASTERS"] == (
        "http://chaos-boifi-sse-broadcaster-headless.faults.svc.cluster.local:8081")
    # Whatever port the ordinary Service gets.
    moved = render({"sseBroadcaster": {"service": {"port": 9000}}})
    assert env_of(container(moved, "Deployment", "boifi-policy-api"))["BOIFI_BROADCASTERS"] == (
        "http://boifi-sse-broadcaster-headless.boifi.svc.cluster.local:8081")


def test_long_release_names_are_cut_to_dns_labels() -> None:
    r = render({}, name="a-very-long-release-name-that-goes-on-and-on-and-on")
    names = [o["metadata"]["name"] for o in r.objects]
    assert all(len(n) <= 63 and not n.endswith("-") for n in names)
    kinds_names = [(o["kind"], o["metadata"]["name"]) for o in r.objects]
    assert len(set(kinds_names)) == len(kinds_names)


def test_servicemonitor_scrapes_both_services() -> None:
    r = by_file("servicemonitor")
    (sm,) = r.of_kind("ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}]
    component, headless = sm["spec"]["selector"]["matchExpressions"]
    assert headless == {"key": "boifi.io/headless", "operator": "DoesNotExist"}
    for service in r.of_kind("Service"):
        labels = service["metadata"]["labels"]
        selected = (labels["app.kubernetes.io/component"] in component["values"]
                    and headless["key"] not in labels
                    and sm["spec"]["selector"]["matchLabels"].items() <= labels.items())
        # Each pod once: not through the headless Services.
        assert selected == (service["metadata"]["name"] in ("boifi-policy-api", "boifi-sse-broadcaster"))
        if selected:
            assert service["spec"]["ports"][0]["name"] == "http"


def test_auth_disabled_sets_env_and_warns() -> None:
    r = by_file("servicemonitor")
    api = container(r, "Deployment", "boifi-policy-api")
    env = env_of(api)
    assert env["BOIFI_AUTH_DISABLED"] == "true"
    assert "BOIFI_TOKENS_FILE" not in env and "volumeMounts" not in api
    assert env["RUST_BACKTRACE"] == "1"
    assert not r.of_kind("Secret")
    assert "WARNING: auth.disabled=true" in r.notes
    assert not r.of_kind("PodDisruptionBudget") or all(
        p["metadata"]["name"] != "boifi-policy-api" for p in r.of_kind("PodDisruptionBudget"))


def test_notes_give_address_token_and_a_boifi_apply() -> None:
    notes = by_file("defaults").notes
    assert "http://boifi-policy-api.boifi.svc.cluster.local:8080" in notes
    assert ("export BOIFI_TOKEN=$(kubectl -n boifi get secret boifi-tokens "
            "-o jsonpath='{.data.token\\.admin}' | base64 -d)") in notes
    assert "boifi apply --wait -f - <<'EOF'" in notes
    assert '-H "Authorization: Bearer $BOIFI_TOKEN"' in notes
    assert "WARNING" not in notes
    assert "nowhere yet" in notes
    # The policy in the heredoc is YAML naming demo-abort, as boifi apply reads it.
    heredoc = notes.split("<<'EOF'\n", 1)[1].split("\n   EOF\n", 1)[0]
    policy = yaml.safe_load(textwrap.dedent(heredoc))
    assert policy["metadata"]["name"] == "demo-abort"
    assert policy["spec"]["rules"][0]["fault"]["abort"]["httpStatus"] == 503


def test_metrics_annotations_point_at_metrics() -> None:
    r = by_file("defaults")
    for name, port in (("boifi-policy-api", "8080"), ("boifi-sse-broadcaster", "8081")):
        ann = r.one("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "true"
        assert ann["prometheus.io/port"] == port and ann["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize(("values", "message"), [
    ({"plugin": {"targets": {"demo": {}}}}, "plugin.sha256 is empty"),
    ({"auth": {"tokens": {"admin": None, "viewer": None}}}, "auth.tokens is empty"),
    ({"sseBroadcaster": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
     "maxReplicas must be at least minReplicas"),
    ({"sseBroadcaster": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 0}}},
     "autoscaling needs a target"),
])
def test_render_refuses_unsafe_values(values: dict, message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_unpinned_plugin_allowed_only_when_asked() -> None:
    r = render({"plugin": {"allowUnpinned": True, "targets": {"demo": {}}}})
    (plugin,) = r.of_kind("WasmPlugin")
    assert "sha256" not in plugin["spec"]
    pinned = render({"plugin": {"url": "oci://r.example/p@sha256:" + "b" * 64, "targets": {"demo": {}}}})
    assert pinned.of_kind("WasmPlugin")[0]["spec"]["url"].endswith("b" * 64)


def test_values_files_exist() -> None:
    assert {p.stem for p in Path(VALUES_DIR).glob("*.yaml")} >= {
        "defaults", "external-etcd", "etcd-3-members", "namespaces-selectors", "servicemonitor"}
