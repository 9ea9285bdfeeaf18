"""The pod runner turns the rendered pod spec into podman flags and kubelet's file layout as it
says (scripts/test-images.sh runs the pods themselves)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from conftest import render
from podrunner import Podman, PodRun, RunnerError, expand, lay_out, pod_of
from kubelet_files import volume_layout

ETCD = "http://10.0.2.2:2379"


BROADCASTERS = "http://10.0.2.2:18081"


def runner_pod(component: str, tmp_path: Path, values: dict | None = None) -> PodRun:
    rendered = render(values or {})
    return PodRun(component, pod_of(rendered, component), rendered, Podman(["false"], None),
                  {}, tmp_path, ETCD, {"BOIFI_BROADCASTERS": BROADCASTERS})


def test_expand_follows_kubernetes() -> None:
    assert expand("$(A)/$$(A)/$(B)/$$", {"A": "1"}) == "1/$(A)/$(B)/$"


def test_security_flags_come_from_the_rendered_container(tmp_path: Path) -> None:
    assert runner_pod("policy-api", tmp_path).security_args() == [
        "--read-only", "--read-only-tmpfs=false", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges"]
    loose = runner_pod("sse-broadcaster", tmp_path, {"containerSecurityContext": {
        "readOnlyRootFilesystem": False, "allowPrivilegeEscalation": True,
        "capabilities": {"drop": ["NET_RAW"], "add": ["CHOWN"]}}})
    assert loose.security_args() == ["--cap-drop", "NET_RAW", "--cap-add", "CHOWN"]


def test_env_is_the_rendered_one_but_for_etcd_and_the_broadcasters(tmp_path: Path) -> None:
    pod = runner_pod("policy-api", tmp_path)
    rendered = {e["name"]: e["value"] for e in pod.container["env"]}
    env = pod.env()
    for key, value in (("BOIFI_ETCD_ENDPOINTS", ETCD), ("BOIFI_BROADCASTERS", BROADCASTERS)):
        assert env.pop(key) == value
        assert ".svc." in rendered.pop(key)
    assert env == rendered and env["BOIFI_LISTEN_ADDR"] == "0.0.0.0:8080"
    pod.container["env"].append({"name": "PEER", "value": "http://x.boifi.svc.cluster.local"})
    with pytest.raises(RunnerError, match="PEER=.*cluster DNS name"):
        pod.env()


def test_ports_are_published_on_loopback_only(tmp_path: Path) -> None:
    pod = runner_pod("sse-broadcaster", tmp_path)
    flags = pod.port_args()
    assert flags[0] == "--publish" and flags[1].startswith("127.0.0.1:") and flags[1].endswith(":8081")
    assert pod.url("http", "/v1/ready") == f"http://127.0.0.1:{pod.ports['8081']}/v1/ready"


@pytest.mark.skipif(os.geteuid() != 0, reason="laying out kubelet's owners needs root")
def test_layout_on_disk_is_the_model_and_serves_the_rendered_tokens(tmp_path: Path) -> None:
    pod = runner_pod("policy-api", tmp_path)
    (volume,) = pod.spec["volumes"]
    nodes = volume_layout(volume, pod.spec, pod.lookup)
    lay_out(nodes, tmp_path / "tokens")
    secret = pod.lookup("Secret", volume["secret"]["secretName"])
    assert secret is not None
    assert (tmp_path / "tokens" / "tokens").read_bytes() == base64.b64decode(secret["data"]["tokens"])
    real = (tmp_path / "tokens" / "tokens").resolve()
    st = real.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 65532, 0o440)
    assert real.parent.name.startswith("..") and real.parent.stat().st_mode & 0o7777 == 0o2755
