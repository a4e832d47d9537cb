"""Validate custom resources against their upstream CRDs' OpenAPI schemas, the way the API server does with strict
field validation: unknown fields rejected, types enforced, required fields present.

`kubernetes-validate` knows only core kinds (custom kinds are a warning and exit 0), so this converts each CRD's
`openAPIV3Schema` (tests/data/crds/, with source and licence) to JSON Schema:

- an object with `properties` rejects other keys, unless marked `x-kubernetes-preserve-unknown-fields`;
- `x-kubernetes-int-or-string` accepts an integer or a string; `nullable` accepts null;
- `x-kubernetes-list-type: set` requires unique items.

CEL rules (`x-kubernetes-validations`, Karpenter has 74) are evaluated with cel-python, plus the two Kubernetes CEL
library functions Karpenter's rules call that it lacks (`find`, `split`). Transition rules (`oldSelf`) need the
previous object and are skipped. Not checked: `format`, and list-map key uniqueness. The root `metadata` is checked
as ObjectMeta's common fields (the CRDs declare only `type: object` there).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import jsonschema
from celpy import celtypes

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
def _crds() -> dict[tuple[str, str], dict]:
    return {(crd["apiVersion"], crd["kind"]): crd
            for crd in (json.loads(path.read_text()) for path in sorted(CRD_DIR.glob("*.json")))}


@cache
def _known() -> dict[tuple[str, str], dict]:
    known = {}
    for key, crd in _crds().items():
        schema = to_json_schema(crd["openAPIV3Schema"])
        schema["properties"]["metadata"] = OBJECT_META
        schema.setdefault("required", [])
        known[key] = schema
    return known


# CEL ---------------------------------------------------------------------------------------------------------------

def _find(text, pattern) -> celtypes.StringType:
    """Kubernetes' regex library: the first match of `pattern` in the string, or ""."""
    match = re.search(str(pattern), str(text))
    return celtypes.StringType(match.group(0) if match else "")


def _split(text, separator) -> celtypes.ListType:
    """The CEL strings extension's split."""
    return celtypes.ListType([celtypes.StringType(part) for part in str(text).split(str(separator))])


@cache
def _program(rule: str):
    env = celpy.Environment()
    return env.program(env.compile(rule), functions={"find": _find, "split": _split})


def cel_problems(schema: dict, value: Any, path: str = "") -> list[str]:
    """Every CEL rule of `schema` and its sub-schemas that the value present at that place breaks."""
    found = []
    for validation in schema.get("x-kubernetes-validations", []):
        rule = validation["rule"]
        if "oldSelf" in rule:
            continue
        try:
            ok = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
        except Exception as error:  # an evaluation error is a rule the value cannot satisfy
            ok = error
        if ok is not True and ok != celtypes.BoolType(True):
            found.append(f"{path or '<root>'}: {validation.get('message', 'violates')} (CEL: {rule})")
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                found += cel_problems(sub, item, f"{path}.{key}" if path else key)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += cel_problems(schema["items"], item, f"{path}.{i}")
    return found


def known_kinds() -> set[tuple[str, str]]:
    return set(_known())


def problems(manifest: dict) -> list[str]:
    """Every schema violation of a custom resource, each with its path; a kind without a schema is one problem."""
    key = (manifest.get("apiVersion"), manifest.get("kind"))
    if key not in _known():
        return [f"no CRD schema for {key[0]} {key[1]} in {CRD_DIR}"]
    validator = jsonschema.Draft202012Validator(_known()[key])
    structural = [f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
                  for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.absolute_path)))]
    return structural + cel_problems(_crds()[key]["openAPIV3Schema"], manifest)


def validate(manifest: dict) -> None:
    found = problems(manifest)
    if found:
        name = manifest.get("metadata", {}).get("name")
        raise CustomResourceInvalid(f"{manifest.get('kind')} {name}:\n  " + "\n  ".join(found))
