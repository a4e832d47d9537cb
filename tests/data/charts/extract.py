"""Refresh the chart value shapes in this folder from a chart's sources (run by hand when a chart is bumped).

    python tests/data/charts/extract.py NAME VERSION SOURCE LICENCE CHART_DIR [SUBCHART_KEY=SUBCHART_DIR ...]

Helm ignores a value no template reads, so a misspelt key (`podAntiAffinty`) fails silently. The shape keeps, of a
chart's default values.yaml, only the structure: every key, with `{}`, `null` and lists marked free-form (anything
may go below them). Keys the templates read (`.Values.a.b`) but values.yaml leaves out or comments out are added
too. Subcharts are merged under their key. No value, comment or template text is kept.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FREE = "free"
LEAF = "value"


def shape(node):
    """A map keyed by label names or other data (`{kubernetes.io/os: linux}`) is free-form: any key may go there."""
    if isinstance(node, dict):
        if not node or all("/" in str(k) or "." in str(k) for k in node):
            return FREE
        return {k: shape(v) for k, v in node.items()}
    if node is None or isinstance(node, list):
        return FREE
    return LEAF


def add_path(tree: dict, parts: list[str]) -> None:
    for i, part in enumerate(parts):
        if not isinstance(tree, dict):
            return
        if part not in tree:
            tree[part] = FREE if i == len(parts) - 1 else {}
        tree = tree[part]


def merge(a, b):
    """Both shapes' keys; where either side is free-form, free-form."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merge(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {*a, *b}}
    return FREE if FREE in (a, b) else a if isinstance(a, dict) else b


def chart_shape(chart_dir: Path) -> dict:
    tree = shape(yaml.safe_load((chart_dir / "values.yaml").read_text()) or {})
    tree = tree if isinstance(tree, dict) else {}
    read = set()
    for template in sorted((chart_dir / "templates").rglob("*")):
        if template.is_file():
            read |= set(re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", template.read_text(errors="ignore")))
    # Shortest first: a template that reads `.Values.a` whole makes `a` free-form before `.Values.a.b` is seen.
    for path in sorted(read, key=lambda p: (p.count("."), p)):
        add_path(tree, path.strip(".").split("."))
    return tree


if __name__ == "__main__":
    name, version, source, licence, chart_dir, *subcharts = sys.argv[1:]
    tree = chart_shape(Path(chart_dir))
    for entry in subcharts:
        key, sub_dir = entry.split("=", 1)
        sub = chart_shape(Path(sub_dir))
        tree[key] = merge(sub, tree.get(key, FREE))
    out = HERE / f"{name}-{version}.json"
    out.write_text(json.dumps({"chart": name, "version": version, "source": source, "license": licence,
                               "values": tree}, indent=1, sort_keys=True) + "\n")
    print(out.name)
