"""Every file a rendered container mounts from a Secret, ConfigMap or projected volume is readable
by that container under kubelet's rules (the model in kubelet_files.py, read in kubernetes v1.31
pkg/volume), and the chart refuses exactly the values that would leave one unreadable."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any, Optional

import helm_python as helm
import pytest

from conftest import CHART, Rendered, render
from kubelet_files import (
    DATA_DIR, Identity, ModelError, Node, fs_user, identity, resolve, unreadable, visible_files,
    volume_layout,
)

# The images' USER (docker/*.Dockerfile); kubelet uses it when runAsUser is unset.
IMAGE_USER = (65532, 65532)
TOKENS = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t"},
          "data": {"tokens": "YWRtaW4gd3JpdGVyIHNlY3JldAo=", "other": "eA=="}}


def tokens_volume(mode: Optional[int] = 0o440, items: bool = True) -> dict[str, Any]:
    secret: dict[str, Any] = {"secretName": "t"}
    if mode is not None:
        secret["defaultMode"] = mode
    if items:
        secret["items"] = [{"key": "tokens", "path": "tokens"}]
    return {"name": "tokens", "secret": secret}


def pod(security: Optional[dict[str, Any]] = None, container: Optional[dict[str, Any]] = None,
        **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "securityContext": container or {}}], **extra}
    if security is not None:
        spec["securityContext"] = security
    return spec


def lookup(kind: str, name: str) -> Optional[dict[str, Any]]:
    return TOKENS if (kind, name) == ("Secret", "t") else None


def by_path(nodes: list[Node]) -> dict[str, Node]:
    return {n.path: n for n in nodes}


def file_node(nodes: list[Node], path: str) -> Node:
    return resolve(nodes, path)[-1]


# --- the model, against what the kubelet source says ---------------------------------------

def test_without_fsgroup_files_are_root_root_with_the_volume_mode() -> None:
    spec = pod({"runAsUser": 65532, "runAsGroup": 65532})
    nodes = volume_layout(tokens_volume(), spec, lookup)
    f = file_node(nodes, "tokens")
    assert (f.kind, f.uid, f.gid, f.mode, f.data) == ("file", 0, 0, 0o440, b"admin writer secret\n")
    assert by_path(nodes)[""].mode == 0o1777  # the tmpfs root
    reason = unreadable(nodes, "tokens", identity(spec, spec["containers"][0], IMAGE_USER))
    assert reason == ("tokens: cannot read ..2025_01_01_00_00_00.000000001/tokens file 0:0 0440 "
                      "as uid 65532 groups [65532]")


def test_fsgroup_owns_everything_adds_0440_and_setgid_on_dirs() -> None:
    spec = pod({"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 2000})
    nodes = volume_layout(tokens_volume(0o400), spec, lookup)
    f = file_node(nodes, "tokens")
    assert (f.uid, f.gid, f.mode) == (0, 2000, 0o440)  # 0400 widened by SetVolumeOwnership
    ts = resolve(nodes, "tokens")[1]
    assert (ts.kind, ts.gid, ts.mode) == ("dir", 2000, 0o2755)
    assert (by_path(nodes)[""].gid, by_path(nodes)[""].mode) == (2000, 0o3777)
    who = identity(spec, spec["containers"][0], IMAGE_USER)
    assert who.gids == {65532, 2000}
    assert unreadable(nodes, "tokens", who) is None


def test_item_mode_wins_default_mode_defaults_to_0644_and_keys_without_items() -> None:
    volume = tokens_volume(None, items=False)
    nodes = volume_layout(volume, pod(), lookup)
    assert visible_files(volume, pod(), lookup) == ["other", "tokens"]
    assert {file_node(nodes, p).mode for p in ("other", "tokens")} == {0o644}
    volume = tokens_volume(0o400)
    volume["secret"]["items"][0]["mode"] = 0o444
    assert file_node(volume_layout(volume, pod(), lookup), "tokens").mode == 0o444
    with pytest.raises(ModelError, match="no key 'missing'"):
        volume["secret"]["items"][0]["key"] = "missing"
        volume_layout(volume, pod(), lookup)


def test_files_are_reached_through_data_and_a_timestamped_dir() -> None:
    now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    nodes = volume_layout(tokens_volume(), pod(), lookup, now=now)
    links = {n.path: n.target for n in nodes if n.kind == "symlink"}
    assert links == {DATA_DIR: "..2026_03_04_05_06_07.000000001", "tokens": f"{DATA_DIR}/tokens"}
    walked = [n.path for n in resolve(nodes, "tokens")]
    assert walked == ["", "..2026_03_04_05_06_07.000000001", "..2026_03_04_05_06_07.000000001/tokens"]
    assert re.fullmatch(r"\.\.\d{4}(_\d\d){5}\.\d+", links[DATA_DIR])


def test_linux_checks_owner_then_group_then_other() -> None:
    group_only = [Node("", "dir", 0, 0, 0o755), Node("f", "file", 0, 0, 0o040)]
    # Root without CAP_DAC_OVERRIDE is the owner: the owner bits (none) decide, not the group's.
    assert unreadable(group_only, "f", Identity(0, frozenset({0}))) is not None
    assert unreadable(group_only, "f", Identity(0, frozenset({0}), dac_override=True)) is None
    assert unreadable(group_only, "f", Identity(7, frozenset({0}))) is None
    assert unreadable(group_only, "f", Identity(7, frozenset({7}))) is not None
    closed_dir = [Node("", "dir", 0, 0, 0o700), Node("f", "file", 0, 0, 0o444)]
    assert "cannot search" in (unreadable(closed_dir, "f", Identity(7, frozenset({7}))) or "")


def test_container_fields_override_the_pod_and_groups_add_up() -> None:
    spec = pod({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 3000, "supplementalGroups": [4000]},
               {"runAsUser": 2000, "runAsGroup": 2000, "capabilities": {"drop": ["ALL"]}})
    who = identity(spec, spec["containers"][0], IMAGE_USER)
    assert who == Identity(2000, frozenset({2000, 3000, 4000}))
    # Unset runAsUser: the image's user and group. A runAsUser without runAsGroup: the runtime's
    # /etc/passwd lookup, which the model does not assume.
    assert identity(pod(), pod()["containers"][0], IMAGE_USER) == Identity(65532, frozenset({65532}))
    spec = pod({"runAsUser": 1000})
    assert identity(spec, spec["containers"][0], IMAGE_USER).gids == frozenset()
    spec = pod({"runAsUser": 0})
    assert identity(spec, spec["containers"][0], IMAGE_USER).dac_override is True
    spec = pod({"runAsUser": 0}, {"capabilities": {"drop": ["ALL"]}})
    assert identity(spec, spec["containers"][0], IMAGE_USER).dac_override is False


def test_projected_token_is_0600_for_the_fs_user_and_group_readable_with_fsgroup() -> None:
    volume = {"name": "p", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"secret": {"name": "t", "items": [{"key": "tokens", "path": "tokens"}]}}]}}
    spec = pod({"runAsUser": 1000, "fsGroup": 3000})
    nodes = volume_layout(volume, spec, lookup)
    token = file_node(nodes, "token")
    assert (token.uid, token.gid, token.mode) == (1000, 3000, 0o640)
    assert (file_node(nodes, "tokens").uid, file_node(nodes, "tokens").mode) == (0, 0o644 | 0o440)
    assert file_node(volume_layout(volume, pod(), lookup), "token").mode == 0o644


def test_fs_user_is_the_run_as_user_every_container_shares() -> None:
    assert fs_user(pod({"runAsUser": 5})) == 5
    assert fs_user(pod({"runAsUser": 5}, {"runAsUser": 6})) == 6
    init = [{"name": "i", "securityContext": {"runAsUser": 6}}]
    assert fs_user(pod({"runAsUser": 5}, initContainers=init)) is None
    assert fs_user(pod()) is None


def test_configmap_data_is_plain_text() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a.conf": "x=1"}}
    volume = {"name": "c", "configMap": {"name": "c"}}
    nodes = volume_layout(volume, pod(), lambda k, n: cm if (k, n) == ("ConfigMap", "c") else None)
    assert file_node(nodes, "a.conf").data == b"x=1"


# --- the chart --------------------------------------------------------------------------------

VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "auth-off": {"auth": {"disabled": True}},
    "existing-secret": {"auth": {"existingSecret": "my-tokens"}},
    "user-pod-security": {"podSecurityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 3000}},
    "container-security": {"containerSecurityContext": {"runAsUser": 4000, "runAsGroup": 4000}},
    "root-group-without-fsgroup": {"podSecurityContext": {"fsGroup": None, "supplementalGroups": [0]}},
}


def workloads(r: Rendered) -> list[tuple[str, dict[str, Any]]]:
    found = [(f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"])
             for o in r.of_kind("Deployment") + r.of_kind("StatefulSet")]
    return found + [(f"Pod/{o['metadata']['name']}", o["spec"]) for o in r.of_kind("Pod")]


def rendered_lookup(r: Rendered):
    def find(kind: str, name: str) -> Optional[dict[str, Any]]:
        hits = [o for o in r.of_kind(kind) if o["metadata"]["name"] == name]
        return hits[0] if hits else None
    return find


def file_problems(r: Rendered, where: str, spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(files checked, problems) for every Secret/ConfigMap/projected file of every container."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    checked, problems = [], []
    for c in spec.get("initContainers", []) + spec["containers"]:
        who = identity(spec, c, IMAGE_USER)
        for mount in c.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})  # absent: a StatefulSet's claim template
            if not {"secret", "configMap", "projected"} & set(volume):
                continue
            nodes = volume_layout(volume, spec, rendered_lookup(r))
            paths = ([mount["subPath"]] if mount.get("subPath")
                     else visible_files(volume, spec, rendered_lookup(r)))
            for path in paths:
                checked.append(f"{where} {c['name']} {mount['mountPath']}/{path}")
                reason = unreadable(nodes, path, who)
                if reason:
                    problems.append(f"{where} container {c['name']} at {mount['mountPath']}: {reason}")
    return checked, problems


@pytest.mark.parametrize("values", VALUE_SETS.values(), ids=VALUE_SETS.keys())
def test_every_mounted_file_is_readable(values: dict[str, Any]) -> None:
    r = render(values)
    checked: list[str] = []
    for where, spec in workloads(r):
        files, problems = file_problems(r, where, spec)
        assert not problems, "\n".join(problems)
        checked += files
    tokens = [f for f in checked if f.startswith("Deployment/boifi-policy-api ")]
    if (values.get("auth") or {}).get("disabled"):
        assert not tokens and not checked
    else:
        assert tokens == ["Deployment/boifi-policy-api policy-api /etc/boifi/tokens/tokens"]
        assert "Pod/boifi-test-api check-api /etc/boifi/tokens/tokens" in checked


def test_every_values_file_mounts_only_readable_files(rendered: Rendered) -> None:
    for where, spec in workloads(rendered):
        assert not file_problems(rendered, where, spec)[1]


def test_the_old_chart_fails_the_check() -> None:
    # Before the fix: the same pod spec without fsGroup (tokens 0440, uid 65532).
    r = render({})
    old = copy.deepcopy(r.one("Deployment", "boifi-policy-api")["spec"]["template"]["spec"])
    del old["securityContext"]["fsGroup"]
    assert old["volumes"][0]["secret"]["defaultMode"] == 0o440
    _, problems = file_problems(r, "Deployment/boifi-policy-api", old)
    assert problems == ["Deployment/boifi-policy-api container policy-api at /etc/boifi/tokens: "
                        "tokens: cannot read ..2025_01_01_00_00_00.000000001/tokens file 0:0 0440 "
                        "as uid 65532 groups [65532]"]


# Pod and container securityContext variants: the chart renders (and the model finds every file
# readable) or refuses with a message naming the values (and the model finds a file unreadable).
SECURITY_VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "no-fsgroup": {"podSecurityContext": {"fsGroup": None}},
    "no-pod-security-context": {"podSecurityContext": None},
    "no-fsgroup-uid-without-gid": {"podSecurityContext": {"fsGroup": None, "runAsGroup": None,
                                                          "runAsUser": 1000}},
    "no-fsgroup-root": {"podSecurityContext": {"fsGroup": None, "runAsUser": 0, "runAsNonRoot": False}},
    "no-fsgroup-container-root": {"podSecurityContext": {"fsGroup": None, "runAsNonRoot": False},
                                  "containerSecurityContext": {"runAsUser": 0}},
    "no-fsgroup-root-group": {"podSecurityContext": {"fsGroup": None, "runAsGroup": 0}},
    "no-fsgroup-container-root-group": {"podSecurityContext": {"fsGroup": None},
                                        "containerSecurityContext": {"runAsGroup": 0}},
    "no-fsgroup-supplemental-root": {"podSecurityContext": {"fsGroup": None, "supplementalGroups": [0]}},
    "own-ids": {"podSecurityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 3000}},
}


@pytest.mark.parametrize("values", SECURITY_VARIANTS.values(), ids=SECURITY_VARIANTS.keys())
def test_chart_refuses_exactly_the_unreadable_combinations(values: dict[str, Any]) -> None:
    # The model's verdict on the policy-api pod spec these values give: the default render's
    # pod spec with the merged security contexts put in.
    merged = helm.Chart.load(CHART).merge_values(values)
    defaults = render({})
    spec = copy.deepcopy(defaults.one("Deployment", "boifi-policy-api")["spec"]["template"]["spec"])
    spec["securityContext"] = merged.get("podSecurityContext") or {}
    spec["containers"][0]["securityContext"] = merged.get("containerSecurityContext") or {}
    _, problems = file_problems(defaults, "Deployment/boifi-policy-api", spec)
    try:
        render(values)
    except helm.HelmError as e:
        assert problems, f"the chart refused readable files: {e}"
        assert "policy-api's tokens file (Secret volume) would be unreadable" in str(e)
        assert "podSecurityContext.fsGroup" in str(e) and "mode 0440" in str(e)
    else:
        assert not problems, problems


@pytest.mark.parametrize("members", [3, 5])
def test_etcd_without_persistence_needs_one_member(members: int) -> None:
    message = f"etcd.persistence.enabled=false needs etcd.replicaCount=1 \\(got {members}\\)"
    with pytest.raises(helm.HelmError, match=message):
        render({"etcd": {"replicaCount": members, "persistence": {"enabled": False}}})
    single = render({"etcd": {"persistence": {"enabled": False}}}).one("StatefulSet", "boifi-etcd")
    assert single["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    assert "volumeClaimTemplates" not in single["spec"]


def test_etcd_keeps_its_fsgroup_and_takes_the_users() -> None:
    def etcd_security(values: dict[str, Any]) -> dict[str, Any]:
        sts = render(values).one("StatefulSet", "boifi-etcd")
        return sts["spec"]["template"]["spec"]["securityContext"]

    sc = etcd_security({})
    assert (sc["fsGroup"], sc["fsGroupChangePolicy"]) == (65532, "OnRootMismatch")
    assert etcd_security({"podSecurityContext": {"fsGroup": 3000, "runAsGroup": 1000}})["fsGroup"] == 3000
    # Without a pod fsGroup the etcd volume still gets one (runAsGroup), as before.
    bare = {"podSecurityContext": {"fsGroup": None, "runAsGroup": 1000}, "auth": {"disabled": True}}
    assert etcd_security(bare)["fsGroup"] == 1000

