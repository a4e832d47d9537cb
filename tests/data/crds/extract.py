"""Refresh the CRD schemas in this folder from upstream CRD manifests (run by hand when a chart is bumped).

    python tests/data/crds/extract.py SOURCE_URL LICENSE path/to/crd.yaml [...]

Keeps each served version's `openAPIV3Schema` without its `description` texts (the schemas are for validation,
not documentation), with the source, version and licence beside it. Lines with Helm template directives (`{{ }}`)
are dropped first: the prometheus-operator-crds chart wraps each upstream CRD in an `if` and an annotations block.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads a bare `=` (a regex operator in an enum) as the `value` tag: keep it a string."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def extract(source: str, licence: str, path: Path) -> list[Path]:
    text = "\n".join(line for line in path.read_text().splitlines() if "{{" not in line)
    crd = next(doc for doc in yaml.load_all(text, Loader=_Loader) if doc and doc.get("kind") == "CustomResourceDefinition")
    spec = crd["spec"]
    annotations = crd["metadata"].get("annotations") or {}
    written = []
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        api_version = f"{spec['group']}/{version['name']}"
        out = HERE / f"{spec['group']}_{spec['names']['plural']}_{version['name']}.json"
        out.write_text(json.dumps({
            "apiVersion": api_version,
            "kind": spec["names"]["kind"],
            "source": source,
            "license": licence,
            "annotations": {k: v for k, v in annotations.items() if "version" in k},
            "openAPIV3Schema": strip_descriptions(version["schema"]["openAPIV3Schema"]),
        }, indent=1, sort_keys=True) + "\n")
        written.append(out)
    return written


if __name__ == "__main__":
    source, licence, *paths = sys.argv[1:]
    for p in paths:
        for out in extract(source, licence, Path(p)):
            print(out.name)
