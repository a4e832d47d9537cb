"""Grafana dashboards as code: Grafana's classic dashboard JSON (schemaVersion 41), provisioned by Grafana's sidecar
from ConfigMaps. The pinned kube-prometheus-stack 88.5.3 ships Grafana 13.2 (grafana chart 12.11.1), which loads
and migrates this model. No dashboard library: grafanalib's last release is 0.7.1 (January 2024), and the Grafana
Foundation SDK on PyPI stops at Grafana 11.6.

Every panel plots recorded series from `components/observability/signals.py`, never raw exporter metrics, so a
panel shows exactly what the alerts and the autoscaler see. Variables: data source, model, tier.
"""

from __future__ import annotations

import json

from components.observability import signals

LABEL, LABEL_VALUE = "grafana_dashboard", "1"
"""The label Grafana's sidecar loads dashboard ConfigMaps by."""
FOLDER_ANNOTATION = "grafana_folder"
FOLDER = "LLM platform"
SELECTOR = '{model=~"$model", tier=~"$tier"}'
PANEL_WIDTH, PANEL_HEIGHT = 12, 8


def _target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": expr, "legendFormat": legend,
            "refId": ref}


def _panel(index: int, title: str, unit: str, targets: list[tuple[str, str]], description: str) -> dict:
    return {
        "id": index + 1,
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": (index % 2) * PANEL_WIDTH, "y": (index // 2) * PANEL_HEIGHT},
        "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": [{
            # Thresholds from the stack config (SLO, min, max) are drawn dashed.
            "matcher": {"id": "byRegexp", "options": ".*(SLO|min|max)$"},
            "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
        }]},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def _series(name: str) -> str:
    return name + SELECTOR


# (title, unit, [(expression, legend)], description)
PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Requests per second", "reqps", [(_series(signals.REQUESTS), "{{model}}")],
     "Finished requests per second, over 5 minutes."),
    ("End-to-end latency and SLO", "s", [
        *[(_series(signals.LATENCY[q]), f"{{{{model}}}} p{q}") for q in (99, 95, 50)],
        (_series(signals.SLO_P99_LATENCY), "{{model}} p99 SLO"),
    ], "Request latency quantiles over 5 minutes; the dashed SLO line is the model's slo.p99LatencySeconds."),
    ("Generated tokens per second", "short", [(_series(signals.TOKENS), "{{model}}")],
     "Output tokens per second across all of a model's servers."),
    ("GPU utilisation", "percent", [(_series(signals.GPU_UTIL), "{{model}}")],
     "DCGM GPU utilisation averaged over the model's GPUs; the autoscaler's default target is 70%."),
    ("Pending and running requests", "short", [
        (_series(signals.WAITING), "{{model}} waiting"), (_series(signals.RUNNING), "{{model}} running"),
    ], "Requests queued in the engines, and requests being generated."),
    ("Time to first token (p99)", "s", [(_series(signals.TTFT_P99), "{{model}}")],
     "vLLM only: TGI exports no time-to-first-token metric."),
    ("Inter-token latency (p99)", "s", [(_series(signals.ITL_P99), "{{model}}")],
     "Time between streamed tokens (TGI: mean time per token of each request)."),
    ("KV cache usage and preemptions", "percentunit", [
        (_series(signals.KV_CACHE), "{{model}} KV cache (fullest server)"),
        (_series(signals.PREEMPTIONS), "{{model}} preemptions/s"),
    ], "vLLM only. Above 90% with preemptions, requests are recomputed and latency climbs."),
    ("Errors and client aborts", "percentunit", [
        (_series(signals.ERROR_RATIO), "{{model}} server errors"),
        (f"{_series(signals.ABORTS)} / {_series(signals.REQUESTS)}", "{{model}} client aborts"),
    ], "Share of requests failing on the server, and share the client abandoned."),
    ("Ready servers against min and max", "short", [
        (_series(signals.READY), "{{model}} ready"),
        (_series(signals.REPLICAS_MIN), "{{model}} min"),
        (_series(signals.REPLICAS_MAX), "{{model}} max"),
    ], "Available replicas of each model's Deployment, between the autoscaler's bounds."),
    ("GPU cost per hour", "currencyUSD", [
        (_series(signals.GPU_COST), "{{model}}"),
        (f"sum({_series(signals.GPU_COST)})", "total"),
    ], "Each server's share of its node's hourly price (Karpenter's estimate: spot prices follow the market)."),
    ("GPU memory used", "bytes", [(_series(signals.GPU_MEMORY), "{{model}}")],
     "Framebuffer memory per GPU, averaged over the model's GPUs (vLLM reserves most of it up front)."),
    ("Prefix cache hit rate", "percentunit", [(_series(signals.PREFIX_CACHE_HIT), "{{model}}")],
     "vLLM only: the share of prompt tokens a server found in its prefix cache. The replica router "
     "(routing.policy) sends a prompt to the replica most likely to hold its prefix."),
    ("KV capacity against the plan", "short", [
        (_series(signals.KV_PLANNED), "{{model}} tokens planned per replica on {{gpu}}"),
        (_series(signals.KV_OFF_PLAN), "{{model}} servers off plan"),
    ], "vLLM only: the KV tokens per replica the capacity planner promised on each GPU of the model's pool, and how "
       "many servers report a capacity more than 10% away from it (alert LLMKVCapacityOffPlan). vLLM reports its "
       "capacity as a label, not a value: `llmctl verify <stack> --prometheus <url>` prints each server's."),
    ("Load balance between replicas", "short", [(_series(signals.REPLICA_SKEW), "{{model}}")],
     "The busiest server's request rate over the average server's: 1 is even."),
    ("Replica router requests and failed attempts", "reqps", [
        (_series(signals.ROUTER_REQUESTS), "{{model}} requests"),
        (_series(signals.ROUTER_ERRORS), "{{model}} failed attempts"),
        (_series(signals.ROUTER_WORKERS), "{{model}} servers seen"),
    ], "Routed models only: requests through the router, attempts that failed or found no server, and the "
       "servers the router can send to."),
]

# Only on a stack that serves adapters (their series are recorded per adapter, so they exist nowhere else).
ADAPTER_PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("LoRA adapter requests", "reqps", [
        (_series(signals.ADAPTER_REQUESTS), "{{model}} / {{adapter}}"),
    ], "Models with adapters only: requests each adapter answered at the gateway (named directly or through a "
       "tier). They are also part of their model's requests: the servers are shared."),
    ("LoRA adapter latency (p50, p99)", "s", [
        (_series(signals.ADAPTER_LATENCY[50]), "{{adapter}} p50"),
        (_series(signals.ADAPTER_LATENCY[99]), "{{adapter}} p99"),
    ], "End-to-end latency of each adapter's requests at the gateway."),
]

# The gateway's own view: what clients asked for (a model key, a tier or `auto`) and what they got back. Its own
# dashboard: the gateway's labels are the requested name and the key, not the model/tier the models board filters on.
GATEWAY_PANELS: list[tuple[str, str, list[tuple[str, str]], str]] = [
    ("Gateway requests by name and status", "reqps", [
        (f"sum by (requested_model, status_code) (rate({signals.GATEWAY_REQUESTS}[5m]))",
         "{{requested_model}} {{status_code}}")],
     "Requests per second at the gateway by the model name the client asked for; 401/403/429 are refused by keys "
     "and limits, 503 means no server was ready (a model waking from zero)."),
    ("Gateway spend per key (USD per hour)", "currencyUSD", [
        ("sum by (api_key_alias) (increase(litellm_spend_metric_total[1h]))", "{{api_key_alias}}")],
     "What each API key was charged over the last hour, from models.<key>.costPer1kTokens."),
    ("Gateway spend per model and adapter (USD per hour)", "currencyUSD", [
        ("sum by (model_id) (increase(litellm_spend_metric_total[1h]))", "{{model_id}}")],
     "What each deployment earned over the last hour: a model or LoRA adapter by its name, or <tier>/<name> when "
     "a tier or `auto` request reached it. An adapter is priced by its own costPer1kTokens, else its model's."),
]


def _variable(name: str, label: str, query: str) -> dict:
    return {
        "name": name, "label": label, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "definition": query, "query": {"query": query, "refId": f"{name}-values"},
        "includeAll": True, "allValue": ".*", "multi": True, "refresh": 2, "sort": 1,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
    }


DATASOURCE = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
              "current": {"text": "Prometheus", "value": "prometheus"}}


def models_dashboard(with_adapters: bool = False) -> dict:
    return {
        **_board("llm-platform-models", "LLM platform: models", PANELS + (ADAPTER_PANELS if with_adapters else [])),
        "templating": {"list": [
            DATASOURCE,
            _variable("model", "Model", f"label_values({signals.MODEL_INFO}, model)"),
            _variable("tier", "Tier", f"label_values({signals.MODEL_INFO}, tier)"),
        ]},
    }


def gateway_dashboard() -> dict:
    return {**_board("llm-platform-gateway", "LLM platform: gateway", GATEWAY_PANELS),
            "templating": {"list": [DATASOURCE]}}


def _board(uid: str, title: str, panels: list) -> dict:
    return {
        "uid": uid,
        "title": title,
        "tags": ["llm-platform"],
        "timezone": "utc",
        "schemaVersion": 41,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "editable": False,
        "panels": [_panel(i, *panel) for i, panel in enumerate(panels)],
    }


def dashboards(with_adapters: bool = False) -> dict[str, dict]:
    """ConfigMap data key (the file name Grafana's sidecar writes) -> dashboard."""
    return {"llm-platform-models.json": models_dashboard(with_adapters),
            "llm-platform-gateway.json": gateway_dashboard()}


def configmap_data(with_adapters: bool = False) -> dict[str, str]:
    return {name: json.dumps(board, indent=1, sort_keys=True) for name, board in dashboards(with_adapters).items()}
