"""Which metric names a PromQL expression reads, and whether each exists in what its exporter really exposes.

Expressions are parsed with a real PromQL parser (promql-parser, the Rust parser GreptimeDB uses) rather than
matched with regular expressions; names are looked up in the per-exporter lists in tests/data/metrics/, each
with its source and version.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import promql_parser

METRICS_DIR = Path(__file__).resolve().parent / "data" / "metrics"
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


@cache
def exporter_metrics() -> dict[str, tuple[str, str]]:
    """Metric family -> (type, list file)."""
    known = {}
    for path in sorted(METRICS_DIR.glob("*.txt")):
        for line in path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, kind = line.split()
                known[name] = (kind, path.name)
    return known


def _walk(node) -> list:
    found = [node]
    for attr in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            found += _walk(child)
    for child in getattr(node, "args", None) or []:
        found += _walk(child)
    return found


def metric_names(expr: str) -> set[str]:
    """Every metric name the expression selects (by name or by a `__name__` matcher)."""
    names = set()
    for node in _walk(promql_parser.parse(expr)):
        if type(node).__name__ != "VectorSelector":
            continue
        if node.name:
            names.add(node.name)
        for matcher in node.matchers.matchers:
            if matcher.name == "__name__":
                names.add(matcher.value)
    return names


def exists(name: str) -> bool:
    known = exporter_metrics()
    if name in known:
        return True
    for suffix in HISTOGRAM_SERIES:
        family = name.removesuffix(suffix)
        if family != name and known.get(family, ("",))[0] == "histogram":
            return True
    return False


def unknown_names(expr: str, recorded: set[str]) -> set[str]:
    """Names the expression reads that neither a recording rule records nor any exporter exposes."""
    return {name for name in metric_names(expr) if name not in recorded and not exists(name)}
