"""Generated tokens survive `helm upgrade`: real Helm's `lookup` reads the live Secret from an API
server. A minimal fake Kubernetes API on loopback answers the two calls lookup makes (resource
discovery for v1, then GET of the Secret)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import helm_python as helm
import pytest
import yaml

from conftest import CHART

SECRET_PATH = "/api/v1/namespaces/boifi/secrets/boifi-tokens"
DISCOVERY = {
    "kind": "APIResourceList", "groupVersion": "v1",
    "resources": [{"name": "secrets", "singularName": "secret", "namespaced": True,
                   "kind": "Secret", "verbs": ["get", "list"]}],
}


class FakeApi:
    def __init__(self) -> None:
        self.secret: dict[str, Any] | None = None
        self.requests: list[str] = []

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        path = path.split("?", 1)[0]
        if path == "/api/v1":
            return 200, DISCOVERY
        if path == SECRET_PATH and self.secret is not None:
            return 200, self.secret
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                     "reason": "NotFound", "code": 404}


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeApi, str]]:
    api = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            status, body = api.answer(self.path)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def render_upgrade(url: str) -> dict[str, str]:
    config = helm.Config(kube_apiserver=url, kube_token="test", namespace="boifi")
    return config.render(helm.Chart.load(CHART), {}, name="boifi", namespace="boifi", is_upgrade=True)


def tokens_of(files: dict[str, str]) -> dict[str, str]:
    secret = yaml.safe_load(files["boifi/templates/tokens-secret.yaml"])
    text = base64.b64decode(secret["data"]["tokens"]).decode()
    return {name: token for name, _, token in (line.split(" ") for line in text.splitlines())}


def checksum_of(files: dict[str, str]) -> str:
    deployment = yaml.safe_load(files["boifi/templates/policy-api-deployment.yaml"])
    return deployment["spec"]["template"]["metadata"]["annotations"]["checksum/tokens"]


def test_generated_tokens_are_kept_on_upgrade(fake_api: tuple[FakeApi, str]) -> None:
    api, url = fake_api
    api.secret = {"apiVersion": "v1", "kind": "Secret",
                  "metadata": {"name": "boifi-tokens", "namespace": "boifi"},
                  "data": {"token.admin": base64.b64encode(b"kept-admin-token-0123456789").decode()}}
    first = render_upgrade(url)
    tokens = tokens_of(first)
    assert any(p.startswith(SECRET_PATH) for p in api.requests), api.requests
    assert tokens["admin"] == "kept-admin-token-0123456789"
    # viewer was not in the live Secret: it is generated now.
    assert len(tokens["viewer"]) == 40

    api.secret["data"]["token.viewer"] = base64.b64encode(tokens["viewer"].encode()).decode()
    second, third = render_upgrade(url), render_upgrade(url)
    assert tokens_of(second) == tokens_of(third) == tokens
    # Same tokens, same checksum: an upgrade does not restart policy-api for nothing.
    assert checksum_of(second) == checksum_of(third)


def test_install_without_a_live_secret_generates_fresh_tokens(fake_api: tuple[FakeApi, str]) -> None:
    _, url = fake_api
    one, two = tokens_of(render_upgrade(url)), tokens_of(render_upgrade(url))
    assert one["admin"] != two["admin"]
