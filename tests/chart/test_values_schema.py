"""values.yaml and values.schema.json describe the same keys; the schema is strict; every key in
values.yaml is documented."""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

import helm_python as helm
import pytest
import yaml

from conftest import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        node: Any = SCHEMA
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        return resolve(node)
    return schema


def is_map_schema(schema: dict[str, Any]) -> bool:
    """A map with user-chosen keys (tokens, targets): its entries follow additionalProperties."""
    return "properties" not in schema and isinstance(schema.get("additionalProperties"), dict)


def drift(values: Any, schema: dict[str, Any], path: str) -> Iterator[str]:
    schema = resolve(schema)
    if "properties" in schema:
        assert isinstance(values, dict), path
        props = schema["properties"]
        for key in values:
            if key not in props:
                yield f"{path}.{key}: in values.yaml, not in the schema"
        for key in props:
            if key not in values:
                yield f"{path}.{key}: in the schema, not in values.yaml"
            else:
                yield from drift(values[key], props[key], f"{path}.{key}")
    elif is_map_schema(schema) and isinstance(values, dict):
        for key, item in values.items():
            yield from drift(item, schema["additionalProperties"], f"{path}.{key}")


def test_values_and_schema_do_not_drift() -> None:
    problems = list(drift(VALUES, SCHEMA, "values"))
    assert not problems, "\n".join(problems)


def test_drift_check_notices_a_missing_key() -> None:
    broken = {**VALUES, "brandNew": True}
    assert list(drift(broken, SCHEMA, "values")) == ["values.brandNew: in values.yaml, not in the schema"]


def strict_objects(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    schema = resolve(schema)
    if "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from strict_objects(sub, f"{path}.{key}")
    if is_map_schema(schema):
        yield from strict_objects(schema["additionalProperties"], f"{path}.*")


def test_every_schema_object_with_properties_is_closed() -> None:
    for path, obj in strict_objects(SCHEMA):
        assert obj.get("additionalProperties") is False, f"{path or '<root>'} accepts unknown keys"


def test_defaults_pass_the_schema(chart: helm.Chart) -> None:
    chart.validate_schema({})


@pytest.mark.parametrize(("values", "key"), [
    ({"policyApi": {"replicaCont": 3}}, "replicaCont"),
    ({"plugn": {}}, "plugn"),
    ({"plugin": {"targets": {"demo": {"matchLabel": {"app": "x"}}}}}, "matchLabel"),
    ({"auth": {"tokens": {"ci": {"role": "admin"}}}}, "role"),
    ({"plugin": {"failStrategy": "FAIL_OPN"}}, "failStrategy"),
    ({"plugin": {"url": "https://example.com/plugin.wasm"}}, "url"),
    ({"plugin": {"sha256": "sha256:" + "a" * 64}}, "sha256"),
    ({"etcd": {"replicaCount": 2}}, "replicaCount"),
    ({"etcd": {"enabled": False}}, "endpoints"),
    ({"plugin": {"targets": {"Bad_NS": {}}}}, "Bad_NS"),
    ({"auth": {"tokens": {"admin": {"role": "writer", "token": "has space in it ok"}}}}, "token"),
])
def test_schema_rejects_bad_values(chart: helm.Chart, values: dict, key: str) -> None:
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert key in str(err.value)


def key_lines() -> Iterator[tuple[int, str, str]]:
    lines = VALUES_TEXT.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if m:
            yield i, m.group(2), lines[i - 1] if i else ""


def test_every_key_in_values_yaml_is_commented() -> None:
    undocumented = [f"line {i + 1}: {key}" for i, key, above in key_lines()
                    if not above.strip().startswith("#")]
    assert not undocumented, "keys without a comment above them:\n" + "\n".join(undocumented)


def test_keys_are_camel_case() -> None:
    for _, key, _ in key_lines():
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", key), key
