"""Validate custom resources against their upstream CRDs' OpenAPI schemas, the way the API server does with strict
field validation: unknown fields rejected, types enforced, required fields present.

`kubernetes-validate` knows only core kinds (custom kinds are a warning and exit 0), so this converts each CRD's
`openAPIV3Schema` (tests/data/crds/, with source and licence) to JSON Schema:

- an object with `properties` rejects other keys, unless marked `x-kubernetes-preserve-unknown-fields`;
- `x-kubernetes-int-or-string` accepts an integer or a string; `nullable` accepts null;
- `x-kubernetes-list-type: set` requires unique items.

Not evaluated: CEL rules (`x-kubernetes-validations`), `format`, and list-map key uniqueness. The root `metadata` is
checked as ObjectMeta's common fields (the CRDs declare only `type: object` there).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

CRD_DIR = Path(__file__).resolve().parent / "data" / "crds"

OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"},
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "additionalProperties": False,
}


class CustomResourceInvalid(AssertionError):
    pass


def to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {k: to_json_schema(v) for k, v in node.items()
              if not k.startswith("x-kubernetes-") and k not in ("nullable", "format")}
    if node.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema.pop("anyOf", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("type") == "object" and "additionalProperties" not in node \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        schema["uniqueItems"] = True
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


@cache
def _known() -> dict[tuple[str, str], dict]:
    known = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        crd = json.loads(path.read_text())
        schema = to_json_schema(crd["openAPIV3Schema"])
        schema["properties"]["metadata"] = OBJECT_META
        schema.setdefault("required", [])
        known[(crd["apiVersion"], crd["kind"])] = schema
    return known


def known_kinds() -> set[tuple[str, str]]:
    return set(_known())


def problems(manifest: dict) -> list[str]:
    """Every schema violation of a custom resource, each with its path; a kind without a schema is one problem."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in _known():
        return [f"no CRD schema for {key[0]} {key[1]} in {CRD_DIR}"]
    validator = jsonschema.Draft202012Validator(_known()[key])
    return [f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
            for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]


def validate(manifest: dict) -> None:
    found = problems(manifest)
    if found:
        name = manifest.get("metadata", {}).get("name")
        raise CustomResourceInvalid(f"{manifest.get('kind')} {name}:\n  " + "\n  ".join(found))
