"""The platform's PromQL as data: every metric name read by a rule, a scaler or a dashboard exists in what its
exporter exposes (or is recorded by a rule), dashboards read only recorded series, and the per-model config series
follow the stack config. promtool evaluates the same expressions in test_rules.py."""

from __future__ import annotations

import json
import re

import pytest

from components.observability import dashboards, signals
from tests import metric_names
from tests.conftest import ROOT, Rendered


def rule_exprs(stack: Rendered) -> dict[str, str]:
    [rule] = stack.kind("PrometheusRule")
    return {f"{g['name']}/{r.get('record') or r.get('alert')}/{i}": r["expr"]
            for g in rule["spec"]["groups"] for i, r in enumerate(g["rules"])}


def scaler_exprs(stack: Rendered) -> dict[str, str]:
    return {f"{o['metadata']['name']}/{t['name']}": t["metadata"]["query"]
            for o in stack.kind("ScaledObject") for t in o["spec"]["triggers"]}


def dashboard_exprs(stack: Rendered) -> dict[str, str]:
    [configmap] = [c for c in stack.kind("ConfigMap") if c["metadata"]["name"] == "llm-platform-dashboards"]
    exprs = {}
    for name, text in configmap["data"].items():
        board = json.loads(text)
        for panel in board["panels"]:
            for target in panel["targets"]:
                exprs[f"{name}/{panel['title']}/{target['refId']}"] = target["expr"].replace("$model", "m").replace(
                    "$tier", "t")
    return exprs


def test_every_metric_read_exists_in_its_exporter_or_is_recorded(stack: Rendered):
    recorded = signals.recorded_names(stack.config)
    read = {**rule_exprs(stack), **scaler_exprs(stack), **dashboard_exprs(stack)}
    unknown = {where: names for where, expr in read.items() if (names := metric_names.unknown_names(expr, recorded))}
    assert not unknown, unknown
    every_name = set().union(*(metric_names.metric_names(e) for e in read.values()))
    # Each exporter is read somewhere: the check is not vacuous.
    for prefix in ("vllm:", "tgi_", "DCGM_", "kube_", "karpenter_", "keda_", "litellm_"):
        assert any(name.startswith(prefix) for name in every_name), prefix


@pytest.mark.parametrize("mistake", [
    "vllm_num_requests_waiting",          # the old underscore spelling
    "vllm_request_latency_p99",           # never existed
    "gpu_utilization",                    # DCGM's is DCGM_FI_DEV_GPU_UTIL
    "vllm:gpu_cache_usage_perc",          # removed; vllm:kv_cache_usage_perc replaced it
    "vllm:num_requests_waiting_bucket",   # a gauge has no buckets
    "vllm:request_success",               # the counter is exposed as ..._total
    "tgi_request_count_total",            # TGI's counters have no _total
])
def test_a_metric_that_does_not_exist_is_caught(mistake):
    assert metric_names.unknown_names(f"sum(rate({mistake}[5m]))", set()) == {mistake}


def test_histogram_series_of_a_histogram_are_accepted():
    expr = "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[5m])))"
    assert metric_names.unknown_names(expr, set()) == set()
    assert metric_names.metric_names('{__name__="tgi_queue_size"} > 0') == {"tgi_queue_size"}


def test_dashboards_plot_only_recorded_series(stack: Rendered):
    """The models board reads recorded series only; the gateway board reads LiteLLM's own metrics (checked against
    the real proxy's /metrics above)."""
    recorded = signals.recorded_names(stack.config)
    for where, expr in dashboard_exprs(stack).items():
        if where.startswith("llm-platform-gateway.json/"):
            continue
        names = metric_names.metric_names(expr)
        assert names and names <= recorded, (where, names - recorded)


def test_the_models_dashboard_has_every_panel_operators_need():
    titles = " | ".join(p["title"].lower() for p in dashboards.models_dashboard()["panels"])
    for words in ("requests per second", "latency", "tokens per second", "gpu utilisation", "pending",
                  "time to first token", "inter-token latency", "kv cache", "errors", "min and max",
                  "cost per hour"):
        assert words in titles, words


def test_dashboard_variables_filter_every_panel_by_model_and_tier():
    board = dashboards.models_dashboard()
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert {"datasource", "model", "tier"} <= set(variables)
    for name in ("model", "tier"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"
        assert signals.MODEL_INFO in variables[name]["definition"]
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert '{model=~"$model", tier=~"$tier"}' in target["expr"], panel["title"]


def test_dashboard_panels_do_not_overlap():
    cells = set()
    for panel in dashboards.models_dashboard()["panels"]:
        g = panel["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, panel["title"]
        assert g["x"] + g["w"] <= 24
        cells |= area


def test_the_provisioned_dashboard_is_the_one_built_in_python(stack: Rendered):
    [configmap] = [c for c in stack.kind("ConfigMap") if c["metadata"]["name"] == "llm-platform-dashboards"]
    with_adapters = any(m.adapters for m in stack.config.models.values())
    assert json.loads(configmap["data"]["llm-platform-models.json"]) == dashboards.models_dashboard(with_adapters)


def test_config_series_follow_the_stack_config(prod: Rendered, dev: Rendered):
    def value(stack: Rendered, record: str, model: str) -> str:
        [rule] = [r for r in signals.config_recordings(stack.config) if r.record == record
                  and r.labels["model"] == model]
        return rule.expr

    assert value(prod, signals.REPLICAS_MIN, "llama-8b") == "vector(2)"
    assert value(prod, signals.REPLICAS_MAX, "llama-8b") == "vector(8)"
    assert value(prod, signals.SLO_P99_LATENCY, "llama-405b-fp8") == "vector(40)"
    assert value(prod, signals.SLO_P99_LATENCY, "llama-8b") == "vector(10)"
    assert value(prod, signals.SLO_ERROR_RATIO, "llama-8b") == "vector(0.05)"
    assert value(prod, signals.QUEUE_ALERT, "llama-8b") == "vector(20)"
    # dev's model scales to zero (the gateway's request counter wakes it).
    assert value(dev, signals.REPLICAS_MIN, "llama-8b") == "vector(0)"
    info = [r for r in signals.config_recordings(prod.config) if r.record == signals.MODEL_INFO]
    assert {(r.labels["model"], r.labels.get("tier"), r.labels["engine"]) for r in info} == {
        ("llama-8b", "fast", "vllm"), ("llama-70b", "balanced", "vllm"), ("llama-405b-fp8", "quality", "vllm"),
        ("llama-70b-tgi", None, "tgi"), ("llama-405b-bf16", None, "vllm")}


# Alerts on a measured value, whose summary must show it; the others are states (crash-looping, pending, ...).
VALUE_ALERTS = {"LLMModelDown", "LLMQueueDepthHigh", "LLMLatencyAboveSLO", "LLMErrorRateHigh", "LLMKVCacheExhausted",
                "LLMGPUSaturated", "LLMGPUsIdle", "LLMGPUFatalXid", "LLMGPUXid", "KarpenterSpotInterruptionWave",
                "LLMKVCapacityOffPlan"}


def test_every_alert_has_a_severity_a_summary_naming_what_and_a_runbook():
    readme = (ROOT / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, re.MULTILINE)}
    alerts = {a.name: a.rule() for a in signals.model_alerts()}
    assert VALUE_ALERTS <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning")
        summary = rule["annotations"]["summary"]
        assert any(subject in summary for subject in ("$labels.model", "$labels.gpu", "$labels.pod", "spot")), name
        assert ("$value" in summary) == (name in VALUE_ALERTS), name
        anchor = rule["annotations"]["runbook_url"].split("#")[1]
        assert anchor in anchors, f"README has no section for {name} (#{anchor})"
