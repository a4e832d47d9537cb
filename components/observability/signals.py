"""What the platform measures about each model, in one place: the recording rules that turn each exporter's
metrics into one series per model (vLLM and TGI alike), the alerts on them, and the queries KEDA scales on.

Dashboards and scalers read the recorded series, never the raw metrics, so each expression exists once. Every
recorded `model:*` series carries `model` (the `models` key) and `tier`, which the model servers' PodMonitor
copies from the pods' labels (see `components/observability/monitoring.py`). Metric names are checked against what
each exporter really exposes (`tests/data/metrics/`), and every rule and query is evaluated by promtool in the
tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from components.serving.model_server import NAMESPACE, min_servers
from config import ModelDeployment, StackConfig
from config.checks import kv_plans
from config.schema import TIERS

INFERENCE = f'namespace="{NAMESPACE}"'
MODEL_LABELS = "model, tier"

# Per pod: which model (and tier) it serves, from kube-state-metrics' pod labels (allow-listed in the chart values).
POD_MODEL = "llm_platform:pod_model:info"
# Per model, from the stack config: recorded as constant series so alerts and dashboards can compare against them.
MODEL_INFO = "llm_platform:model_info"
REPLICAS_MIN = "llm_platform:model_replicas_min"
REPLICAS_MAX = "llm_platform:model_replicas_max"
SLO_P99_LATENCY = "llm_platform:model_slo_p99_latency_seconds"
SLO_ERROR_RATIO = "llm_platform:model_slo_error_ratio"
QUEUE_ALERT = "llm_platform:model_waiting_requests_alert_per_replica"
KV_PLANNED = "llm_platform:model_kv_tokens_planned"
"""Per vLLM model and GPU kind of its pool: the KV tokens per replica the capacity planner promised."""
ROUTED = "llm_platform:model_routed"
"""1 for a model whose replicas sit behind a replica router (components/serving/replica_router.py), else 0."""
NODE_GPU_PRICE = "llm_platform:node_gpu_price_dollars_per_hour"
# Per model, from the exporters.
REQUESTS = "model:llm_requests:rate5m"
ERRORS = "model:llm_request_errors:rate5m"
ABORTS = "model:llm_request_aborts:rate5m"
ERROR_RATIO = "model:llm_request_error_ratio:rate5m"
LATENCY = {q: f"model:llm_e2e_latency_seconds:p{q}_5m" for q in (50, 95, 99)}
TTFT_P99 = "model:llm_time_to_first_token_seconds:p99_5m"
ITL_P99 = "model:llm_inter_token_latency_seconds:p99_5m"
TOKENS = "model:llm_generation_tokens:rate5m"
WAITING = "model:llm_requests_waiting:sum"
RUNNING = "model:llm_requests_running:sum"
KV_CACHE = "model:llm_kv_cache_usage_ratio:max"
PREEMPTIONS = "model:llm_preemptions:rate5m"
GPU_UTIL = "model:llm_gpu_utilization_percent:avg"
GPU_MEMORY = "model:llm_gpu_memory_used_bytes:avg"
READY = "model:llm_replicas_ready:sum"
GROUP_LEADER = (
    f'max by (namespace, pod, model) (label_replace(kube_pod_labels{{{INFERENCE}, '
    f'label_leaderworkerset_sigs_k8s_io_worker_index="0"}}, "model", "$1", "label_llm_platform_io_model", "(.+)"))'
)
"""Each multi-node group's leader pod, by model (kube-state-metrics' pod labels, allow-listed in monitoring.py)."""
PREFIX_CACHE_HIT = "model:llm_prefix_cache_hit_ratio:rate5m"
REPLICA_SKEW = "model:llm_replica_request_skew:ratio5m"
ROUTER_REQUESTS = "model:llm_router_requests:rate5m"
ROUTER_ERRORS = "model:llm_router_failed_attempts:rate5m"
ROUTER_WORKERS = "model:llm_router_workers:max"
GPU_COST = "model:llm_gpu_cost_dollars_per_hour:sum"
KV_OFF_PLAN = "model:llm_kv_capacity_off_plan:count"
"""vLLM servers of a model whose reported KV capacity lies outside the plan's band (KV_PLAN_TOLERANCE)."""
CACHE_CONFIG = "vllm:cache_config_info"
# Per LoRA adapter, from the gateway: vLLM labels its per-request metrics with the base model's served name only
# (model_name), whichever adapter a request used; its one LoRA series, vllm:lora_requests_info, is an info gauge
# whose label values list the adapters running and waiting at the last step (checked by make e2e against a real
# server). The gateway's latency histogram names the deployment that answered (model_id: the adapter's name, or
# <tier>/<adapter> through a tier group), so requests the adapter answered are counted wherever they came from.
ADAPTER_REQUESTS = "adapter:llm_requests:rate5m"
ADAPTER_LATENCY = {q: f"adapter:llm_e2e_latency_seconds:p{q}_5m" for q in (50, 99)}
GATEWAY_LATENCY = "litellm_request_total_latency_metric"

# Alert thresholds that are not per-model config. Each has its why; tests/test_rules.py checks each fires just above
# and stays silent just below.
QUEUE_ALERT_FACTOR = 2
"""Queue alert at twice the scaler's per-replica target: a queue that large for 15 minutes means scaling has hit
maxReplicas, the GPU limit, or cannot get nodes."""
DEFAULT_QUEUE_TARGET = 10
"""The queue alert's base when a model's waiting-requests trigger is off."""
GPU_BUSY_PERCENT = 90
"""Sustained above the scaler's 70% target: more load than the model's maximum replicas can serve."""
GPU_IDLE_PERCENT = 10
"""Below this for an hour with more servers than the minimum: GPUs paid for and not used."""
KV_CACHE_FULL = 0.9
"""vLLM preempts (recomputes) requests when the KV cache is full; above 90% with preemptions, latency suffers."""
SPOT_INTERRUPTIONS_PER_30M = 3
"""Three spot reclaims in 30 minutes is a wave: capacity in the pool's instance types is drying up. `>=` rather
than `> 2`: increase() extrapolates, so two reclaims can read as 2.1."""
MIN_REQUESTS_PER_SECOND = 1 / 60
"""The error-rate alert ignores models serving under a request a minute: one failure would be 100%."""
FATAL_XIDS = (48, 64, 74, 79, 94, 95)
"""NVIDIA XIDs that mean the GPU (not the program) failed: 48 double-bit ECC, 64 row-remap failure, 74 NVLink,
79 fallen off the bus, 94/95 contained/uncontained ECC. Source: docs.nvidia.com/deploy/xid-errors, checked
2026-11-24. XID 45 (channel teardown when a process exits) is routine and never alerts."""
BENIGN_XIDS = (45,)
KV_PLAN_TOLERANCE = Fraction(1, 10)
"""A server's KV capacity may differ from the plan by this much before it alerts: the planner's error on held-out
vLLM logs is under 1% on average and under 6% at worst (`make accuracy`), so 10% means the plan is wrong (another
vLLM, GPU or setting than planned), not noise. `llmctl verify`'s default threshold is the same."""


@dataclass(frozen=True)
class Recording:
    record: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)

    def rule(self) -> dict:
        return {"record": self.record, "expr": self.expr, **({"labels": dict(self.labels)} if self.labels else {})}


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    def rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description,
                            "runbook_url": f"README.md#{self.name.lower()}"},
        }


# Model config as series ---------------------------------------------------------------------------------------

def queue_alert_per_replica(m: ModelDeployment) -> float:
    target = m.autoscaling.waiting_requests_per_replica or DEFAULT_QUEUE_TARGET
    return QUEUE_ALERT_FACTOR * target


def model_labels(key: str, m: ModelDeployment) -> dict[str, str]:
    return {"model": key, **({"tier": m.tier} if m.tier else {})}


def config_recordings(cfg: StackConfig) -> list[Recording]:
    rules = []
    for key, m in cfg.models.items():
        labels = model_labels(key, m)
        rules += [
            Recording(MODEL_INFO, "vector(1)", {**labels, "engine": m.engine, "gpu_pool": m.gpu_pool}),
            Recording(REPLICAS_MIN, f"vector({min_servers(m)})", labels),
            Recording(REPLICAS_MAX, f"vector({m.max_replicas})", labels),
            Recording(SLO_P99_LATENCY, f"vector({m.slo.p99_latency_seconds:g})", labels),
            Recording(SLO_ERROR_RATIO, f"vector({m.slo.error_rate_percent / 100:g})", labels),
            Recording(QUEUE_ALERT, f"vector({queue_alert_per_replica(m):g})", labels),
            Recording(ROUTED, f"vector({int(m.routed)})", labels),
        ]
    return rules


def integer_range_regex(low: int, high: int) -> str:
    """An RE2 alternation matching exactly the decimal integers low..high (no sign, no leading zeros): PromQL
    cannot read a label as a number, but it can match one against this."""
    if not 0 <= low <= high:
        raise ValueError(f"not a range of non-negative integers: {low}..{high}")
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first, last = max(low, 10 ** (digits - 1) if digits > 1 else 0), min(high, 10**digits - 1)
        if first <= last:
            parts += _same_length(str(first), str(last))
    return "|".join(parts)


def _same_length(low: str, high: str) -> list[str]:
    """Patterns for every digit string from low to high, both of one length."""
    if low == high:
        return [low]
    if len(low) == 1:
        return [f"[{low}-{high}]"]
    shared = 0
    while low[shared] == high[shared]:
        shared += 1
    if shared:
        return [low[:shared] + p for p in _same_length(low[shared:], high[shared:])]
    rest = len(low) - 1
    out, first, last = [], int(low[0]), int(high[0])
    if low[1:] != "0" * rest:  # the partial run from low up to low[0]99..9
        out += [low[0] + p for p in _same_length(low[1:], "9" * rest)]
        first += 1
    if high[1:] != "9" * rest:
        last -= 1
    if first <= last:
        out.append((str(first) if first == last else f"[{first}-{last}]") + "[0-9]" * rest)
    if high[1:] != "9" * rest:  # the partial run from high[0]00..0 up to high
        out += [high[0] + p for p in _same_length("0" * rest, high[1:])]
    return out


KvBands = dict[str, list[tuple[int, int]]]
"""Per vLLM model key: the ranges of KV tokens per replica its servers may report without alerting (inclusive)."""


def kv_bands(cfg: StackConfig) -> KvBands:
    """Per vLLM model, the plan for each GPU kind of its pool within the tolerance: a server must be near the plan
    of some GPU it may have landed on (an 8B on A10G and on L40S differ eightfold)."""
    return {key: bands([s.kv_cache_tokens for s in kv_plans(m, cfg.gpu_pools[m.gpu_pool]).values()], m.max_model_len)
            for key, m in sorted(cfg.models.items()) if m.engine == "vllm"}


def bands(planned: list[int], max_model_len: int) -> list[tuple[int, int]]:
    """The integers within the tolerance of each planned capacity (exactly: no float rounding at the edges), never
    below one request of maxModelLen, overlaps merged."""
    ranges = sorted((max(math.ceil(p * (1 - KV_PLAN_TOLERANCE)), max_model_len),
                     max(math.floor(p * (1 + KV_PLAN_TOLERANCE)), max_model_len)) for p in planned)
    if not ranges:
        return []
    merged = [ranges[0]]
    for low, high in ranges[1:]:
        if low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def kv_recordings(cfg: StackConfig, bands: KvBands) -> list[Recording]:
    """Per vLLM model: the planned KV tokens per GPU kind, and how many of its servers report a capacity outside
    the band. vLLM publishes its capacity only as a label of an info series (vllm:cache_config_info
    kv_cache_size_tokens="...") and PromQL has no function that turns a label into a value, so the comparison is a
    label match against the band, written as a regex of the integers in it."""
    rules = []
    for key, ranges in sorted(bands.items()):
        if not ranges:  # nothing planned (no GPU of the pool can hold a replica): nothing to compare with
            continue
        m = cfg.models[key]
        labels = model_labels(key, m)
        rules += [Recording(KV_PLANNED, f"vector({s.kv_cache_tokens})", {**labels, "gpu": gpu})
                  for gpu, s in kv_plans(m, cfg.gpu_pools[m.gpu_pool]).items()]
        allowed = "|".join(integer_range_regex(low, high) for low, high in ranges)
        outside = f'{CACHE_CONFIG}{{{INFERENCE}, model="{key}", kv_cache_size_tokens!~"{allowed}"}}'
        rules.append(Recording(KV_OFF_PLAN, f"count({outside}) or vector(0)", labels))
    return rules


# Per-model series from the exporters ----------------------------------------------------------------------------

def _in(metric: str, matchers: str = "") -> str:
    """A model-server metric, restricted to the inference namespace (other vLLM servers in the cluster may be
    scraped too, without our `model` label)."""
    return f"{metric}{{{INFERENCE}{', ' + matchers if matchers else ''}}}"


def _quantile(q: float, *histograms: str) -> str:
    rates = " or ".join(f"rate({_in(h + '_bucket')}[5m])" for h in histograms)
    return f"histogram_quantile({q:g}, sum by ({MODEL_LABELS}, le) ({rates}))"


def _per_gpu(metric: str) -> str:
    """A DCGM per-GPU metric joined to the model of the pod holding the GPU (DCGM's Kubernetes mapping labels
    each GPU with its pod's namespace and name)."""
    return f"{metric}{{{INFERENCE}}} * on (namespace, pod) group_left ({MODEL_LABELS}) {POD_MODEL}"


def _rate_or_zero(vllm_counter: str, tgi_counter: str) -> str:
    """Per-model rate of a failure counter, 0 for models without failures: TGI creates its failure counter only at
    the first failure."""
    return (f"sum by ({MODEL_LABELS}) (rate({vllm_counter}[5m]) or rate({tgi_counter}[5m])) "
            f"or 0 * {REQUESTS}")


def pod_recordings() -> list[Recording]:
    """One group, evaluated in order: later rules read earlier ones."""
    node_labels = (
        'label_replace(label_replace(label_replace(kube_node_labels, '
        '"instance_type", "$1", "label_node_kubernetes_io_instance_type", "(.+)"), '
        '"capacity_type", "$1", "label_karpenter_sh_capacity_type", "(.+)"), '
        '"zone", "$1", "label_topology_kubernetes_io_zone", "(.+)")'
    )
    return [
        Recording(POD_MODEL, (
            f"group by (namespace, pod, {MODEL_LABELS}) (label_replace(label_replace("
            f'kube_pod_labels{{{INFERENCE}, label_llm_platform_io_model!=""}}, '
            '"model", "$1", "label_llm_platform_io_model", "(.+)"), '
            '"tier", "$1", "label_llm_platform_io_tier", "(.*)"))'
        )),
        Recording(REQUESTS, (
            f"sum by ({MODEL_LABELS}) (rate({_in('vllm:request_success_total')}[5m]) "
            f"or rate({_in('tgi_request_count')}[5m]))"
        )),
        # Server-side failures only. vLLM's finished_reason "abort" is the client going away (vLLM's FinishReason
        # docstring), as is TGI's "dropped"; "validation" is a bad request. Those are recorded apart, as aborts.
        Recording(ERRORS, _rate_or_zero(_in("vllm:request_success_total", 'finished_reason="error"'),
                                        _in("tgi_request_failure", 'err!~"validation|dropped"'))),
        Recording(ABORTS, _rate_or_zero(_in("vllm:request_success_total", 'finished_reason="abort"'),
                                        _in("tgi_request_failure", 'err="dropped"'))),
        Recording(ERROR_RATIO, f"{ERRORS} / {REQUESTS}"),
        *[Recording(LATENCY[q], _quantile(q / 100, "vllm:e2e_request_latency_seconds", "tgi_request_duration"))
          for q in LATENCY],
        Recording(TTFT_P99, _quantile(0.99, "vllm:time_to_first_token_seconds")),  # TGI has no TTFT metric
        Recording(ITL_P99, _quantile(0.99, "vllm:inter_token_latency_seconds",
                                     "tgi_request_mean_time_per_token_duration")),
        Recording(TOKENS, (
            f"sum by ({MODEL_LABELS}) (rate({_in('vllm:generation_tokens_total')}[5m]) "
            f"or rate({_in('tgi_request_generated_tokens_sum')}[5m]))"
        )),
        Recording(WAITING, f"sum by ({MODEL_LABELS}) ({_in('vllm:num_requests_waiting')} or {_in('tgi_queue_size')})"),
        Recording(RUNNING, (
            f"sum by ({MODEL_LABELS}) ({_in('vllm:num_requests_running')} or {_in('tgi_batch_current_size')})"
        )),
        # The fullest server, not the average: one server thrashing its cache is what users notice.
        Recording(KV_CACHE, f"max by ({MODEL_LABELS}) ({_in('vllm:kv_cache_usage_perc')})"),
        Recording(PREEMPTIONS, f"sum by ({MODEL_LABELS}) (rate({_in('vllm:num_preemptions_total')}[5m]))"),
        # Prompt tokens found in a server's prefix cache, of all prompt tokens looked up (both vLLM counters count
        # tokens): what the replica router is for. NaN without traffic.
        Recording(PREFIX_CACHE_HIT, (
            f"sum by ({MODEL_LABELS}) (rate({_in('vllm:prefix_cache_hits_total')}[5m])) / "
            f"sum by ({MODEL_LABELS}) (rate({_in('vllm:prefix_cache_queries_total')}[5m]))"
        )),
        # The busiest server's request rate over the average server's: 1 is even, 2 means one server does twice
        # its share. From the servers' own counters, so routed and unrouted models compare alike.
        Recording(REPLICA_SKEW, (
            f"max by ({MODEL_LABELS}) (sum by ({MODEL_LABELS}, pod) (rate({_in('vllm:request_success_total')}[5m]))) "
            f"/ avg by ({MODEL_LABELS}) (sum by ({MODEL_LABELS}, pod) "
            f"(rate({_in('vllm:request_success_total')}[5m])))"
        )),
        # The routers' own view (vllm-router 0.1.17 names; `model` from the routers' PodMonitor, `tier` from the
        # config). A failed attempt is each try on a replica that failed, or found no replica; a retry counts again.
        Recording(ROUTER_REQUESTS, (
            f"sum by (model) (rate({_in('vllm_router_requests_total')}[5m])) "
            f"* on (model) group_left (tier) {MODEL_INFO}"
        )),
        Recording(ROUTER_ERRORS, (
            f"(sum by (model) (rate({_in('vllm_router_request_errors_total')}[5m])) or 0 * sum by (model) "
            f"(rate({_in('vllm_router_requests_total')}[5m]))) * on (model) group_left (tier) {MODEL_INFO}"
        )),
        # Replicas the best-informed router pod can send to. A router pod that sees none is unready and gets no
        # traffic, so only all of them seeing none fails requests.
        Recording(ROUTER_WORKERS, (
            f"max by (model) ({_in('vllm_router_active_workers')}) * on (model) group_left (tier) {MODEL_INFO}"
        )),
        Recording(GPU_UTIL, f"avg by ({MODEL_LABELS}) ({_per_gpu('DCGM_FI_DEV_GPU_UTIL')})"),
        Recording(GPU_MEMORY, f"avg by ({MODEL_LABELS}) ({_per_gpu('DCGM_FI_DEV_FB_USED')}) * 1048576"),  # MiB
        # A single-node model's ready servers are its Deployment's available replicas; a multi-node model's are its
        # LeaderWorkerSets' ready leaders (a leader answers /health only once its group has joined), one per group.
        Recording(READY, (
            f"(sum by (model) (label_replace(kube_deployment_status_replicas_available{{{INFERENCE}}}, "
            f'"model", "$1", "deployment", "(.+)")) '
            f'or sum by (model) (kube_pod_status_ready{{{INFERENCE}, condition="true"}} '
            f"* on (namespace, pod) group_left (model) {GROUP_LEADER})) "
            f"* on (model) group_left (tier) {MODEL_INFO}"
        )),
        # A node's hourly price (Karpenter's own estimate for its instance type, capacity type and zone: spot
        # prices follow the market) divided among its GPUs.
        Recording(NODE_GPU_PRICE, (
            f"max by (node) ({node_labels} * on (instance_type, capacity_type, zone) group_left () "
            "max by (instance_type, capacity_type, zone) (karpenter_cloudprovider_instance_type_offering_price_estimate)) "
            '/ on (node) max by (node) (kube_node_status_capacity{resource="nvidia_com_gpu"})'
        )),
        Recording(GPU_COST, (
            f"sum by ({MODEL_LABELS}) (sum by (namespace, pod, node) "
            f'(kube_pod_container_resource_requests{{{INFERENCE}, resource="nvidia_com_gpu"}}) '
            f"* on (node) group_left () {NODE_GPU_PRICE} * on (namespace, pod) group_left ({MODEL_LABELS}) {POD_MODEL})"
        )),
    ]


# Alerts -----------------------------------------------------------------------------------------------------------

REDIS_BREAKER = "litellm_redis_circuit_breaker_state"
"""LiteLLM's Redis circuit breakers by state (open, half_open, closed), one gauge per gateway pod: a breaker that is
not closed means the rate limiter counts in that pod's memory."""

MODEL = "{{ $labels.model }}"
# Compare a model's series with its config series. `group_left` keeps the left side's labels (tier): one-to-one
# matching `on (model)` would keep only `model`.
PER_MODEL = "on (model) group_left ()"


def _with_model(per_gpu: str) -> str:
    """A per-GPU condition with the model added where the GPU belongs to a model server; GPUs that do not (idle,
    or a crashed server's) keep their own labels, so a failing GPU alerts whoever holds it."""
    return (f"({per_gpu}) * on (namespace, pod) group_left ({MODEL_LABELS}) {POD_MODEL} "
            f"or on (namespace, pod, gpu) ({per_gpu})")


def model_alerts() -> list[Alert]:
    xid = "DCGM_FI_DEV_XID_ERRORS"
    fatal = " or ".join(f"{xid} == {code}" for code in FATAL_XIDS)
    ignored = " or ".join(f"{xid} == {code}" for code in (*FATAL_XIDS, *BENIGN_XIDS))
    return [
        Alert("LLMModelDown", f"{REPLICAS_MIN} >= 1 unless on (model) ({READY} > 0)", "5m", "critical",
              f"{MODEL} has no ready server (minimum {{{{ $value }}}})",
              "Every request to this model fails. Expected for the start-up budget after the first deploy."),
        Alert("LLMReplicaRouterNoWorkers", (
            f"{REPLICAS_MIN} >= 1 and on (model) {ROUTED} == 1 unless on (model) ({ROUTER_WORKERS} >= 1)"
        ), "5m", "critical", f"{MODEL}: its replica router sees no server",
            "Every request to this model fails with 503. If LLMModelDown fires too, the servers are the cause; "
            "otherwise the router cannot find them (its pods, its Role, or its selector)."),
        Alert("LLMModelServerCrashLooping", (
            "max by (namespace, pod) (max_over_time(kube_pod_container_status_waiting_reason"
            f'{{{INFERENCE}, reason="CrashLoopBackOff"}}[10m])) '
            f"* on (namespace, pod) group_left ({MODEL_LABELS}) {POD_MODEL} > 0"
        ), "10m", "warning", f"{MODEL}: server {{{{ $labels.pod }}}} is crash-looping",
            "The container keeps exiting; each restart reloads the model."),
        Alert("LLMQueueDepthHigh", f"{WAITING} / clamp_min({READY}, 1) > {PER_MODEL} {QUEUE_ALERT}", "15m", "warning",
              f"{MODEL}: {{{{ $value | humanize }}}} requests waiting per ready server",
              "Requests queue faster than the servers drain them, and scaling has not caught up."),
        Alert("LLMLatencyAboveSLO", f"{LATENCY[99]} > {PER_MODEL} {SLO_P99_LATENCY}", "10m", "warning",
              f"{MODEL}: p99 latency {{{{ $value | humanizeDuration }}}} is above its SLO",
              "The slowest 1% of requests take longer than the model's slo.p99LatencySeconds."),
        Alert("LLMErrorRateHigh", (
            f"{ERROR_RATIO} > {PER_MODEL} {SLO_ERROR_RATIO} and on (model) {REQUESTS} >= {MIN_REQUESTS_PER_SECOND:.6g}"
        ), "10m", "warning", f"{MODEL}: {{{{ $value | humanizePercentage }}}} of requests fail on the server",
            "Server-side failures (vLLM finished_reason=error, TGI failures other than validation and dropped) "
            "above the model's slo.errorRatePercent."),
        Alert("LLMKVCacheExhausted", (
            f"{KV_CACHE} > {KV_CACHE_FULL:g} and on (model) {PREEMPTIONS} > 0"
        ), "10m", "warning", f"{MODEL}: KV cache {{{{ $value | humanizePercentage }}}} full and requests preempted",
            "Preempted requests are recomputed from scratch, which multiplies latency."),
        Alert("LLMKVCapacityOffPlan", f"{KV_OFF_PLAN} > 0", "15m", "warning",
              f"{MODEL}: {{{{ $value }}}} server(s) hold a KV cache more than {float(KV_PLAN_TOLERANCE):.0%} off the plan",
              "vLLM reports a KV capacity the capacity planner did not promise for any GPU of the pool: another "
              "vLLM release, GPU or setting than planned, and concurrency and autoscaling targets no longer hold. "
              "Run `llmctl verify <stack> --prometheus <url>`, then `llmctl calibrate` on the servers' start-up "
              "logs."),
        Alert("LLMGPUSaturated", f"{GPU_UTIL} > {GPU_BUSY_PERCENT}", "30m", "warning",
              f"{MODEL}: GPUs {{{{ $value | printf \"%.0f\" }}}}% busy for 30 minutes",
              "More load than the model's servers can take; latency grows with it."),
        Alert("LLMGPUsIdle", (
            f"{GPU_UTIL} < {GPU_IDLE_PERCENT} and on (model) ({READY} > {PER_MODEL} {REPLICAS_MIN})"
        ), "1h", "warning", f"{MODEL}: GPUs {{{{ $value | printf \"%.0f\" }}}}% busy above the minimum replicas",
            "Servers beyond the minimum have been idle for an hour: GPUs are paid for and unused."),
        Alert("LLMGPUFatalXid", _with_model(fatal), "0m", "critical",
              "GPU {{ $labels.gpu }} of {{ $labels.pod }} reported XID {{ $value }}",
              "A hardware XID: the GPU must be reset or the node replaced."),
        Alert("LLMGPUXid", _with_model(f"{xid} > 0 unless ({ignored})"), "0m", "warning",
              "GPU {{ $labels.gpu }} of {{ $labels.pod }} reported XID {{ $value }}",
              "An XID that is usually the program's (13, 31, 43): the server may have crashed."),
        Alert("LLMGPUEccUncorrectable", _with_model(
            "increase(DCGM_FI_DEV_ECC_DBE_VOL_TOTAL[10m]) > 0 or DCGM_FI_DEV_ROW_REMAP_FAILURE > 0"
        ), "0m", "critical", "GPU {{ $labels.gpu }} of {{ $labels.pod }} has uncorrectable memory errors",
            "Double-bit ECC errors or a failed row remap: results from this GPU cannot be trusted."),
        Alert("LLMGPUPodsPending", (
            f"max by (namespace, pod) (kube_pod_status_unschedulable{{{INFERENCE}}}) "
            f"* on (namespace, pod) group_left ({MODEL_LABELS}) {POD_MODEL} > 0"
        ), "15m", "warning", f"{MODEL}: server {{{{ $labels.pod }}}} cannot be scheduled",
            "No node fits it and Karpenter has not launched one: pool limit reached, or no capacity of its types."),
        Alert("LLMAutoscalerErrors", (
            f"label_replace(sum by (scaledObject) (increase(keda_scaled_object_errors_total{{{INFERENCE}}}[10m])), "
            '"model", "$1", "scaledObject", "(.+)") > 0'
        ), "10m", "warning", f"{MODEL}: KEDA cannot read its scaling metrics",
            "The replica count is frozen: the HPA does not scale down on missing metrics, and cannot scale up."),
        Alert("LLMGatewayLimitsDegraded", f'max by (namespace, pod) ({REDIS_BREAKER}{{state!="closed"}}) > 0', "2m",
              "warning", "Gateway {{ $labels.pod }} counts rate limits in its own memory: it cannot reach Redis",
              "Each gateway replica that cannot reach Redis allows a key its limit divided by the ready replicas, "
              "until Redis answers again."),
        Alert("KarpenterSpotInterruptionWave", (
            'sum(increase(karpenter_interruption_received_messages_total{message_type="spot_interrupted"}[30m])) '
            f">= {SPOT_INTERRUPTIONS_PER_30M}"
        ), "0m", "warning", "{{ $value | printf \"%.0f\" }} spot interruptions in 30 minutes",
            "AWS is reclaiming spot capacity; servers restart elsewhere and on-demand takes over if spot runs out."),
    ]


def adapter_recordings(cfg: StackConfig) -> list[Recording]:
    """Each adapter's answered requests per second and end-to-end latency at the gateway, labelled with the adapter
    and its model (and the model's tier), 0 while it has no traffic."""
    rules = []
    for key, m in cfg.models.items():
        for name in m.adapters:
            deployment = f'model_id=~"{name}|[a-z]+/{name}"'
            labels = {**model_labels(key, m), "adapter": name}
            rules.append(Recording(ADAPTER_REQUESTS,
                                   f"sum(rate({GATEWAY_LATENCY}_count{{{deployment}}}[5m])) or vector(0)", labels))
            rules += [Recording(ADAPTER_LATENCY[q], f"histogram_quantile({q / 100:g}, sum by (le) "
                                                   f"(rate({GATEWAY_LATENCY}_bucket{{{deployment}}}[5m])))", labels)
                      for q in ADAPTER_LATENCY]
    return rules


def prometheus_rule_groups(cfg: StackConfig, bands: KvBands | None = None) -> list[dict]:
    """`bands`: the KV capacity each vLLM model's servers may report (default: the plan's, `kv_bands`)."""
    kv = kv_recordings(cfg, kv_bands(cfg) if bands is None else bands)
    groups = [
        {"name": "llm-platform.models.config", "rules": [r.rule() for r in config_recordings(cfg)]},
        {"name": "llm-platform.models.capacity", "rules": [r.rule() for r in kv]},
        {"name": "llm-platform.models.series", "rules": [r.rule() for r in pod_recordings()]},
        {"name": "llm-platform.alerts", "rules": [a.rule() for a in model_alerts()]},
    ]
    adapters = adapter_recordings(cfg)
    if adapters:
        groups.insert(2, {"name": "llm-platform.adapters", "rules": [r.rule() for r in adapters]})
    return groups


def recorded_names(cfg: StackConfig) -> set[str]:
    return {r.record for r in (*config_recordings(cfg), *pod_recordings(), *adapter_recordings(cfg),
                               *kv_recordings(cfg, kv_bands(cfg)))}


# Scaler queries -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScalerQuery:
    name: str
    query: str
    threshold: float
    metric_type: str
    """AverageValue: the HPA divides the value by the replica count (a total to share); Value: compared as is."""
    activation_threshold: float | None = None
    """Set for a trigger whose job is waking a model at zero: above it, 0 -> 1. None leaves KEDA's default."""


# The gateway counts every request by the name the client asked for, also when no server is ready (LiteLLM
# 1.108.7, measured in tests/test_gateway_proxy.py), so it exists while a model has no server at all.
GATEWAY_REQUESTS = "litellm_proxy_total_requests_metric_total"
# The gateway trigger only wakes a model (KEDA's activation, 0 -> 1); above one server the engine's own signals
# decide, so its target is set out of reach.
ACTIVATION_ONLY_TARGET = 100000


def gateway_request_names(key: str, m: ModelDeployment) -> list[str]:
    """The names a request for this model's servers can carry at the gateway: its key, its adapters' names, the
    tiers it or an adapter serves, and `auto` (the complexity router may pick such a tier). A request for an adapter
    wakes its base model's servers, which are the adapter's too."""
    tiers = [t for t in TIERS if t == m.tier or any(a.tier == t for a in m.adapters.values())]
    return [key, *m.adapters, *tiers, *(["auto"] if tiers else [])]


def gateway_requests_query(key: str, m: ModelDeployment) -> str:
    """Requests for the model in the last 2 minutes. A series the gateway creates for a model's first request starts
    at 1 and has no earlier sample for increase() to compare, so series younger than the window count whole."""
    selector = f'{GATEWAY_REQUESTS}{{requested_model=~"{"|".join(gateway_request_names(key, m))}"}}'
    return (f"(sum(increase({selector}[2m])) or vector(0)) + "
            f"(sum({selector} unless {selector} offset 2m) or vector(0))")


def scaler_queries(key: str, m: ModelDeployment) -> list[ScalerQuery]:
    """KEDA's Prometheus scaler fails on a result of several series ("returned multiple elements"), and reads an
    empty result or NaN as 0 only by default: each query is one `sum(...)` over the model's recorded series, and
    `or vector(0)` when the model has no server yet. A latency quantile over no traffic is NaN; `>= 0` drops it."""
    scaling, selector = m.autoscaling, f'{{model="{key}"}}'
    candidates = [
        ("waiting-requests", f"sum({WAITING}{selector}) or vector(0)", scaling.waiting_requests_per_replica,
         "AverageValue"),
        ("p99-latency", f"sum({LATENCY[99]}{selector} >= 0) or vector(0)", scaling.p99_latency_seconds, "Value"),
        ("gpu-utilization", f"sum({GPU_UTIL}{selector}) or vector(0)", scaling.gpu_utilization_percent, "Value"),
    ]
    queries = [ScalerQuery(name, query, threshold, kind) for name, query, threshold, kind in candidates
               if threshold is not None]
    if m.min_replicas == 0:
        queries.append(ScalerQuery("gateway-requests", gateway_requests_query(key, m), ACTIVATION_ONLY_TARGET,
                                   "Value", activation_threshold=0))
    return queries
