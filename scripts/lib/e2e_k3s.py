"""Helpers for scripts/e2e-k3s.sh that need a YAML parser (python3-yaml). Run as a script:

  python3 scripts/lib/e2e_k3s.py registries-add FILE HOST:PORT
      Make k3s's containerd pull HOST:PORT over plain HTTP: merge the mirror
        mirrors: {"HOST:PORT": {endpoint: ["http://HOST:PORT"]}}
      into FILE (k3s's registries.yaml), keeping every other key. Prints "added" (FILE
      changed: k3s must restart to read it) or "present" (nothing to do). An existing FILE
      is copied to FILE.boifi.bak before it is rewritten (PyYAML drops comments). Refuses
      (exit 2) a FILE with duplicate keys (a second "mirrors:" is ignored or rejected by
      k3s's parser, whichever comes first), or one whose entry for HOST:PORT names other
      endpoints.

  python3 scripts/lib/e2e_k3s.py public-images VALUES
      Print, one per line, "REPOSITORY:TAG" of every image in the chart's values.yaml that
      BOIFI does not build: every mapping with a non-empty repository and tag whose
      repository is not under "boifi/" (etcd, the helm test image). The chart prefixes
      these with imageRegistry too, so the e2e script mirrors them into its registry.

  python3 scripts/lib/e2e_k3s.py prometheus-relabel RULES < CONFIGMAP_JSON > CONFIGMAP_JSON
      Add the plugin's metric relabel rules (RULES: helm/boifi/files/plugin-metric-relabel.yaml)
      to the "kubernetes-pods" job of Istio's sample Prometheus, whose ConfigMap (kubectl get
      -o json) is read from stdin and written to stdout, for kubectl apply. That job scrapes
      the pods' merged metrics, the sidecars' included. Rules already there are not added again.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml


class RegistriesError(Exception):
    """registries.yaml cannot be merged safely; the message says what to fix by hand."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise RegistriesError(
                f"duplicate key {key!r} at line {key_node.start_mark.line + 1}: merge the two by hand")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _QuotingDumper(yaml.SafeDumper):
    """Double-quotes strings with a colon ("HOST:PORT", URLs), as k3s's documentation writes them."""


def _represent_str(dumper: _QuotingDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"' if ":" in data else None)


_QuotingDumper.add_representer(str, _represent_str)


def load_registries(text: str) -> dict[str, Any]:
    """Parse registries.yaml text; an empty file is an empty mapping."""
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        raise RegistriesError(f"not valid YAML: {err}") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise RegistriesError("the top level is not a mapping")
    return doc


def merge_mirror(doc: dict[str, Any], host: str) -> bool:
    """Add the plain-HTTP mirror for host to doc; True when doc changed."""
    endpoint = f"http://{host}"
    mirrors = doc.setdefault("mirrors", {})
    if mirrors is None:
        mirrors = doc["mirrors"] = {}
    if not isinstance(mirrors, dict):
        raise RegistriesError("'mirrors' is not a mapping")
    entry = mirrors.get(host)
    if entry is None:
        mirrors[host] = {"endpoint": [endpoint]}
        return True
    endpoints = entry.get("endpoint") if isinstance(entry, dict) else None
    if isinstance(endpoints, list) and endpoint in [str(e).rstrip("/") for e in endpoints]:
        return False
    raise RegistriesError(
        f"mirrors.{host} exists without the endpoint {endpoint}: add it, or remove the entry")


def registries_add(path: Path, host: str) -> bool:
    """Merge the mirror for host into the file at path (created when missing); True when changed."""
    original = path.read_text() if path.exists() else ""
    doc = load_registries(original)
    if not merge_mirror(doc, host):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    if original.strip():
        shutil.copy2(path, path.with_name(path.name + ".boifi.bak"))
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o600
    # Write next to the file and rename: k3s never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            yaml.dump(doc, out, Dumper=_QuotingDumper, default_flow_style=False, sort_keys=False)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def _images(node: Any) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        repo, tag = node.get("repository"), node.get("tag")
        if isinstance(repo, str) and repo and isinstance(tag, str) and tag:
            yield repo, tag
        for value in node.values():
            yield from _images(value)
    elif isinstance(node, list):
        for value in node:
            yield from _images(value)


def public_images(values: dict[str, Any]) -> list[str]:
    """REPOSITORY:TAG of the chart's images that BOIFI does not build."""
    return [f"{repo}:{tag}" for repo, tag in _images(values) if not repo.startswith("boifi/")]


def prometheus_relabel(configmap: dict[str, Any], rules: list[dict[str, Any]]) -> dict[str, Any]:
    """The sample Prometheus ConfigMap with `rules` appended to the kubernetes-pods job."""
    key = "prometheus.yml"
    config = yaml.safe_load(configmap["data"][key])
    jobs = [j for j in config.get("scrape_configs", []) if j.get("job_name") == "kubernetes-pods"]
    if not jobs:
        raise RegistriesError("no scrape job kubernetes-pods in the Prometheus ConfigMap")
    for job in jobs:
        present = job.setdefault("metric_relabel_configs", [])
        present.extend(rule for rule in rules if rule not in present)
    configmap["data"][key] = yaml.safe_dump(config, sort_keys=False)
    return configmap


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "registries-add":
        try:
            changed = registries_add(Path(argv[1]), argv[2])
        except RegistriesError as err:
            print(f"{argv[1]}: {err}", file=sys.stderr)
            return 2
        print("added" if changed else "present")
        return 0
    if len(argv) == 2 and argv[0] == "public-images":
        for image in public_images(yaml.safe_load(Path(argv[1]).read_text()) or {}):
            print(image)
        return 0
    if len(argv) == 2 and argv[0] == "prometheus-relabel":
        rules = yaml.safe_load(Path(argv[1]).read_text())
        try:
            configmap = prometheus_relabel(json.load(sys.stdin), rules)
        except RegistriesError as err:
            print(err, file=sys.stderr)
            return 2
        json.dump(configmap, sys.stdout)
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
