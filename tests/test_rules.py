"""The rendered PrometheusRule, checked by promtool: `check rules` on dev and prod, and `test rules` unit tests that
put each alert just above its threshold (it fires, with the model and the value in its summary) and just below
(silent), and evaluate the recording rules and every KEDA query over series from two pods of one model and one
pod of another: each query must return exactly one series with the right value.

Thresholds are written here as numbers, independently of components/observability/signals.py, so raising one there
fails a test.
Series carry the labels the model servers' PodMonitor gives them (namespace, pod, model, tier, engine).
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

import config
from components.observability.signals import scaler_queries
from config.checks import kv_plans
from tests.conftest import ROOT, Rendered
from tests.tools import tool

NS = "llm-inference"
# pod -> (model, tier, engine), as in prod: two vLLM servers of the fast 8B model, one TGI server without a tier.
PODS = {
    "llama-8b-a": ("llama-8b", "fast", "vllm"),
    "llama-8b-b": ("llama-8b", "fast", "vllm"),
    "llama-70b-tgi-a": ("llama-70b-tgi", None, "tgi"),
}


def labels(**pairs) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in pairs.items() if v is not None) + "}"


def server(metric: str, pod: str, **extra) -> str:
    model, tier, engine = PODS[pod]
    return metric + labels(namespace=NS, pod=pod, model=model, tier=tier, engine=engine, **extra)


def gpu(metric: str, pod: str, gpu_index: str = "0", namespace: str = NS) -> str:
    """DCGM with Kubernetes mapping: the GPU's series carries its pod's namespace, pod and container."""
    return metric + labels(gpu=gpu_index, UUID=f"GPU-{pod}-{gpu_index}", modelName="NVIDIA L40S",
                           namespace=namespace, pod=pod, container="vllm")


def breaker(pod: str, state: str) -> str:
    return "litellm_redis_circuit_breaker_state" + labels(namespace="llm-gateway", pod=pod, state=state)


def ready(model: str) -> str:
    return "kube_deployment_status_replicas_available" + labels(namespace=NS, deployment=model)


def router_workers(model: str, pod: str) -> str:
    """A replica router pod's count of the servers it can send to, as its PodMonitor labels it."""
    return "vllm_router_active_workers" + labels(namespace=NS, pod=pod, model=model)


ROUTED = ("llama-8b", "llama-70b", "llama-405b-fp8")
"""The prod models behind a replica router: vLLM with maxReplicas > 1 (the TGI model keeps its Service)."""


def counter(per_minute: float, minutes: int = 60) -> str:
    return f"0+{per_minute:g}x{minutes}"


def constant(value: float, minutes: int = 90) -> str:
    return f"{value:g}+0x{minutes}"


# What every test sees: kube-state-metrics' pod labels (allow-listed) and each prod model's ready servers.
WORLD = {
    **{"kube_pod_labels" + labels(namespace=NS, pod=pod, label_llm_platform_io_model=model,
                                  label_llm_platform_io_tier=tier): constant(1)
       for pod, (model, tier, _) in PODS.items()},
    ready("llama-8b"): constant(2), ready("llama-70b"): constant(2), ready("llama-405b-fp8"): constant(1),
    ready("llama-70b-tgi"): constant(1),
    **{router_workers(model, f"{model}-router-{i}"): constant(2) for model in ROUTED for i in "ab"},
}


def histogram(metric: str, pod: str, buckets: dict[str, float]) -> dict[str, str]:
    """Cumulative bucket counters growing by `per_minute` each minute (le -> per minute)."""
    return {server(f"{metric}_bucket", pod, le=le): counter(per_minute) for le, per_minute in buckets.items()}


def latency_between(low: float, high: float, pod: str = "llama-8b-a", per_minute: float = 60) -> dict[str, str]:
    """Every request of `pod` took between `low` and `high` seconds: p99 is low + 0.99 * (high - low)."""
    return histogram("vllm:e2e_request_latency_seconds", pod,
                     {f"{low:g}": 0, f"{high:g}": per_minute, "+Inf": per_minute})


PLANNED_8B = {gpu_: s.kv_cache_tokens for gpu_, s in kv_plans(
    config.load_stack_file(ROOT, "prod").models["llama-8b"], config.load_stack_file(ROOT, "prod").gpu_pools["small"]
).items()}
"""What the capacity planner promises prod's llama-8b per GPU kind of its pool (A10G, L4, L40S)."""


def kv_reported(pod: str, tokens: int) -> dict[str, str]:
    """vLLM's info series: its KV capacity is a label (`kv_cache_size_tokens`), the value always 1."""
    return {server("vllm:cache_config_info", pod, block_size="16", engine_index="0", kv_cache_size_tokens=str(tokens),
                   num_gpu_blocks=str(tokens // 16)): constant(1)}


@dataclass
class Case:
    id: str
    alert: str
    series: dict[str, str]
    eval_time: str
    fires: list[tuple[dict[str, str], str]] = field(default_factory=list)
    """(labels besides alertname, summary) of each alert expected to fire; empty for "stays silent"."""


FAST = {"model": "llama-8b", "tier": "fast"}
TGI = {"model": "llama-70b-tgi"}
POD_A = {"namespace": NS, "pod": "llama-8b-a", **FAST}
WARN, CRIT = {"severity": "warning"}, {"severity": "critical"}

CASES = [
    # A model whose minimum is at least 1 with no ready server pages; one ready server is enough.
    Case("model-down-fires", "LLMModelDown", {ready("llama-8b"): constant(0)}, "10m",
         [({**CRIT, **FAST}, "llama-8b has no ready server (minimum 2)")]),
    Case("model-down-one-ready-silent", "LLMModelDown", {ready("llama-8b"): constant(1)}, "10m"),
    # Every router pod of a routed model sees no server: every request fails. One router pod that sees none is
    # unready and gets no traffic: silent.
    Case("router-no-workers-fires", "LLMReplicaRouterNoWorkers", {
        router_workers("llama-8b", "llama-8b-router-a"): constant(0),
        router_workers("llama-8b", "llama-8b-router-b"): constant(0)}, "10m",
         [({**CRIT, **FAST}, "llama-8b: its replica router sees no server")]),
    Case("router-one-pod-without-workers-silent", "LLMReplicaRouterNoWorkers", {
        router_workers("llama-8b", "llama-8b-router-a"): constant(0)}, "10m"),
    Case("crash-loop-fires", "LLMModelServerCrashLooping", {
        "kube_pod_container_status_waiting_reason" + labels(namespace=NS, pod="llama-8b-a", container="vllm",
                                                            reason="CrashLoopBackOff"): constant(1)},
         "25m", [({**WARN, **POD_A}, "llama-8b: server llama-8b-a is crash-looping")]),
    Case("crash-loop-creating-silent", "LLMModelServerCrashLooping", {
        "kube_pod_container_status_waiting_reason" + labels(namespace=NS, pod="llama-8b-a", container="vllm",
                                                            reason="ContainerCreating"): constant(1)}, "25m"),
    # Queue alert at 2 x the 10 waiting per server the scaler aims for, per ready server (llama-8b has 2).
    Case("queue-above-20-per-server-fires", "LLMQueueDepthHigh", {
        server("vllm:num_requests_waiting", "llama-8b-a"): constant(21),
        server("vllm:num_requests_waiting", "llama-8b-b"): constant(20)}, "20m",
         [({**WARN, **FAST}, "llama-8b: 20.5 requests waiting per ready server")]),
    Case("queue-below-20-per-server-silent", "LLMQueueDepthHigh", {
        server("vllm:num_requests_waiting", "llama-8b-a"): constant(20),
        server("vllm:num_requests_waiting", "llama-8b-b"): constant(19)}, "20m"),
    Case("tgi-queue-fires", "LLMQueueDepthHigh", {server("tgi_queue_size", "llama-70b-tgi-a"): constant(21)}, "20m",
         [({**WARN, **TGI}, "llama-70b-tgi: 21 requests waiting per ready server")]),
    # Default SLO: p99 10 s.
    Case("latency-above-slo-fires", "LLMLatencyAboveSLO", latency_between(10, 12), "20m",
         [({**WARN, **FAST}, "llama-8b: p99 latency 11.98s is above its SLO")]),
    Case("latency-below-slo-silent", "LLMLatencyAboveSLO", latency_between(8, 10), "20m"),
    Case("tgi-latency-above-slo-fires", "LLMLatencyAboveSLO", histogram(
        "tgi_request_duration", "llama-70b-tgi-a", {"10": 0, "12": 60, "+Inf": 60}), "20m",
         [({**WARN, **TGI}, "llama-70b-tgi: p99 latency 11.98s is above its SLO")]),
    # Default error SLO 5%: 6 errors in 100 requests a minute fire, 4 do not; client aborts never count.
    Case("errors-above-5-percent-fire", "LLMErrorRateHigh", {
        server("vllm:request_success_total", "llama-8b-a", finished_reason="stop"): counter(94),
        server("vllm:request_success_total", "llama-8b-a", finished_reason="error"): counter(6)}, "20m",
         [({**WARN, **FAST}, "llama-8b: 6% of requests fail on the server")]),
    Case("errors-below-5-percent-silent", "LLMErrorRateHigh", {
        server("vllm:request_success_total", "llama-8b-a", finished_reason="stop"): counter(96),
        server("vllm:request_success_total", "llama-8b-a", finished_reason="error"): counter(4)}, "20m"),
    Case("client-aborts-are-not-errors", "LLMErrorRateHigh", {
        server("vllm:request_success_total", "llama-8b-a", finished_reason="stop"): counter(50),
        server("vllm:request_success_total", "llama-8b-a", finished_reason="abort"): counter(50)}, "20m"),
    Case("errors-under-a-request-a-minute-silent", "LLMErrorRateHigh", {
        server("vllm:request_success_total", "llama-8b-a", finished_reason="error"): "0+1x2 2+0x60"}, "20m"),
    Case("tgi-failures-fire", "LLMErrorRateHigh", {
        server("tgi_request_count", "llama-70b-tgi-a"): counter(100),
        server("tgi_request_failure", "llama-70b-tgi-a", err="generation"): counter(6)}, "20m",
         [({**WARN, **TGI}, "llama-70b-tgi: 6% of requests fail on the server")]),
    Case("tgi-validation-failures-silent", "LLMErrorRateHigh", {
        server("tgi_request_count", "llama-70b-tgi-a"): counter(100),
        server("tgi_request_failure", "llama-70b-tgi-a", err="validation"): counter(30)}, "20m"),
    # KV cache above 90% with preemptions.
    Case("kv-cache-full-and-preempting-fires", "LLMKVCacheExhausted", {
        server("vllm:kv_cache_usage_perc", "llama-8b-a"): constant(0.91),
        server("vllm:num_preemptions_total", "llama-8b-a"): counter(3)}, "20m",
         [({**WARN, **FAST}, "llama-8b: KV cache 91% full and requests preempted")]),
    Case("kv-cache-below-90-silent", "LLMKVCacheExhausted", {
        server("vllm:kv_cache_usage_perc", "llama-8b-a"): constant(0.89),
        server("vllm:num_preemptions_total", "llama-8b-a"): counter(3)}, "20m"),
    Case("kv-cache-full-without-preemption-silent", "LLMKVCacheExhausted", {
        server("vllm:kv_cache_usage_perc", "llama-8b-a"): constant(0.95),
        server("vllm:num_preemptions_total", "llama-8b-a"): constant(7)}, "20m"),
    # A vLLM server's KV capacity must be within 10% of the plan for some GPU its pool may launch: prod's llama-8b
    # is planned for ~22.7k tokens on A10G and L4 and ~192k on L40S, so 100k (between the two) is off plan.
    Case("kv-capacity-off-plan-fires", "LLMKVCapacityOffPlan", {
        **kv_reported("llama-8b-a", 100_000), **kv_reported("llama-8b-b", PLANNED_8B["L4"])}, "20m",
         [({**WARN, **FAST}, "llama-8b: 1 server(s) hold a KV cache more than 10% off the plan")]),
    Case("kv-capacity-off-plan-just-above-fires", "LLMKVCapacityOffPlan", {
        **kv_reported("llama-8b-a", round(PLANNED_8B["L40S"] * 1.11))}, "20m",
         [({**WARN, **FAST}, "llama-8b: 1 server(s) hold a KV cache more than 10% off the plan")]),
    Case("kv-capacity-near-a-planned-gpu-silent", "LLMKVCapacityOffPlan", {
        **kv_reported("llama-8b-a", round(PLANNED_8B["L4"] * 1.09)),
        **kv_reported("llama-8b-b", round(PLANNED_8B["L40S"] * 0.91))}, "20m"),
    # GPUs above 90% for 30 minutes.
    Case("gpus-above-90-fire", "LLMGPUSaturated", {
        gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(92), gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-b"): constant(90)},
         "35m", [({**WARN, **FAST}, "llama-8b: GPUs 91% busy for 30 minutes")]),
    Case("gpus-below-90-silent", "LLMGPUSaturated", {
        gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(90), gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-b"): constant(88)},
         "35m"),
    # Idle GPUs for an hour above the minimum (llama-8b's is 2) burn money; at the minimum they are expected.
    Case("idle-above-minimum-fires", "LLMGPUsIdle", {
        ready("llama-8b"): constant(3), gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(9)}, "70m",
         [({**WARN, **FAST}, "llama-8b: GPUs 9% busy above the minimum replicas")]),
    Case("busy-above-minimum-silent", "LLMGPUsIdle", {
        ready("llama-8b"): constant(3), gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(11)}, "70m"),
    Case("idle-at-minimum-silent", "LLMGPUsIdle", {
        ready("llama-8b"): constant(2), gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(1)}, "70m"),
    # Hardware XIDs page, for a model's GPU and for one nobody holds; program XIDs warn; XID 45 is routine.
    Case("fatal-xid-pages", "LLMGPUFatalXid", {
        gpu("DCGM_FI_DEV_XID_ERRORS", "llama-8b-a", "3"): constant(79),
        gpu("DCGM_FI_DEV_XID_ERRORS", "dcgm-exporter-x1", "1", namespace="monitoring"): constant(48)}, "1m", [
        ({**CRIT, **POD_A, "gpu": "3", "UUID": "GPU-llama-8b-a-3", "modelName": "NVIDIA L40S", "container": "vllm"},
         "GPU 3 of llama-8b-a reported XID 79"),
        ({**CRIT, "namespace": "monitoring", "pod": "dcgm-exporter-x1", "gpu": "1", "UUID": "GPU-dcgm-exporter-x1-1",
          "modelName": "NVIDIA L40S", "container": "vllm"}, "GPU 1 of dcgm-exporter-x1 reported XID 48"),
    ]),
    Case("program-xid-is-not-fatal", "LLMGPUFatalXid", {gpu("DCGM_FI_DEV_XID_ERRORS", "llama-8b-a"): constant(13)},
         "1m"),
    Case("program-xid-warns", "LLMGPUXid", {gpu("DCGM_FI_DEV_XID_ERRORS", "llama-8b-a"): constant(13)}, "1m", [
        ({**WARN, **POD_A, "gpu": "0", "UUID": "GPU-llama-8b-a-0", "modelName": "NVIDIA L40S", "container": "vllm"},
         "GPU 0 of llama-8b-a reported XID 13"),
    ]),
    Case("xid-45-is-routine", "LLMGPUXid", {gpu("DCGM_FI_DEV_XID_ERRORS", "llama-8b-a"): constant(45)}, "1m"),
    Case("double-bit-ecc-pages", "LLMGPUEccUncorrectable", {
        gpu("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "llama-8b-a"): "0+0x5 1+0x20"}, "8m", [
        ({**CRIT, **POD_A, "gpu": "0", "UUID": "GPU-llama-8b-a-0", "modelName": "NVIDIA L40S", "container": "vllm"},
         "GPU 0 of llama-8b-a has uncorrectable memory errors"),
    ]),
    Case("old-ecc-errors-silent", "LLMGPUEccUncorrectable", {
        gpu("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "llama-8b-a"): constant(4),
        gpu("DCGM_FI_DEV_ROW_REMAP_FAILURE", "llama-8b-a"): constant(0)}, "20m"),
    # A GPU server unschedulable for more than 15 minutes; less is Karpenter launching a node.
    Case("pending-15-minutes-fires", "LLMGPUPodsPending", {
        "kube_pod_status_unschedulable" + labels(namespace=NS, pod="llama-8b-a"): constant(1)}, "20m",
         [({**WARN, **POD_A}, "llama-8b: server llama-8b-a cannot be scheduled")]),
    Case("pending-10-minutes-silent", "LLMGPUPodsPending", {
        "kube_pod_status_unschedulable" + labels(namespace=NS, pod="llama-8b-a"): constant(1)}, "10m"),
    Case("scaler-errors-fire", "LLMAutoscalerErrors", {
        "keda_scaled_object_errors_total" + labels(namespace=NS, scaledObject="llama-8b"): counter(4)}, "25m",
         [({**WARN, "model": "llama-8b", "scaledObject": "llama-8b"}, "llama-8b: KEDA cannot read its scaling metrics")]),
    Case("scaler-without-errors-silent", "LLMAutoscalerErrors", {
        "keda_scaled_object_errors_total" + labels(namespace=NS, scaledObject="llama-8b"): constant(12)}, "25m"),
    # Three spot reclaims in 30 minutes are a wave; two are not.
    Case("three-spot-interruptions-fire", "KarpenterSpotInterruptionWave", {
        'karpenter_interruption_received_messages_total{message_type="spot_interrupted"}': "0+0x10 3+0x40"}, "30m",
         [(WARN, "3 spot interruptions in 30 minutes")]),
    Case("two-spot-interruptions-silent", "KarpenterSpotInterruptionWave", {
        'karpenter_interruption_received_messages_total{message_type="spot_interrupted"}': "0+0x10 2+0x40"}, "30m"),
    # A gateway pod whose Redis circuit breaker has stayed open (or probing) for 2 minutes; one that closed again
    # within a minute, and a healthy one, stay silent.
    Case("gateway-redis-breaker-open-fires", "LLMGatewayLimitsDegraded", {
        breaker("llm-gateway-a", "open"): "0 1+0x5", breaker("llm-gateway-a", "closed"): "1 0+0x5",
        breaker("llm-gateway-b", "closed"): constant(1)}, "5m",
         [({**WARN, "namespace": "llm-gateway", "pod": "llm-gateway-a"},
           "Gateway llm-gateway-a counts rate limits in its own memory: it cannot reach Redis")]),
    Case("gateway-redis-breaker-blip-silent", "LLMGatewayLimitsDegraded", {
        breaker("llm-gateway-a", "open"): "0 1 0+0x4", breaker("llm-gateway-a", "half_open"): "0 0 1 0+0x3"}, "5m"),
]


@pytest.fixture(scope="module")
def promtool():
    return tool("promtool")


def rule_groups(stack: Rendered) -> list[dict]:
    """A copy: tests that break a rule must not break it for the others."""
    [rule] = stack.kind("PrometheusRule")
    return copy.deepcopy(rule["spec"]["groups"])


@pytest.fixture(scope="module")
def prod_rules(prod: Rendered, tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(prod)}, sort_keys=False))
    return path


def run_promtool(promtool, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_rendered_rules_pass_promtool_check(promtool, stack: Rendered, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule_groups(stack)}, sort_keys=False))
    result = run_promtool(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_catches_a_broken_expression(promtool, prod: Rendered, tmp_path):
    groups = rule_groups(prod)
    groups[1]["rules"][1] = {**groups[1]["rules"][1], "expr": "sum by (model (rate(x[5m]))"}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    assert run_promtool(promtool, "check", "rules", path).returncode != 0


def _annotations(prod: Rendered, alert: str) -> dict[str, str]:
    [rule] = [r for g in rule_groups(prod) for r in g["rules"] if r.get("alert") == alert]
    return rule["annotations"]


def run_unit_test(promtool, rules, tests: list[dict], tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "test.yaml"
    path.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests},
                                   sort_keys=False))
    return run_promtool(promtool, "test", "rules", path)


def _series(series: dict[str, str]) -> list[dict]:
    return [{"series": name, "values": values} for name, values in {**WORLD, **series}.items()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_alert_fires_just_above_its_threshold_and_not_below(case: Case, promtool, prod, prod_rules, tmp_path):
    static = {k: v for k, v in _annotations(prod, case.alert).items() if k != "summary"}
    expected = [{"exp_labels": labels_, "exp_annotations": {"summary": summary, **static}}
                for labels_, summary in case.fires]
    result = run_unit_test(promtool, prod_rules, [{
        "interval": "1m",
        "input_series": _series(case.series),
        "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": expected}],
    }], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case(prod: Rendered):
    alerts = {r["alert"] for g in rule_groups(prod) for r in g["rules"] if "alert" in r}
    assert alerts == {c.alert for c in CASES if c.fires}
    assert alerts == {c.alert for c in CASES if not c.fires}


def test_a_raised_threshold_is_caught(promtool, prod: Rendered, tmp_path):
    """Guards the guard: with the GPU alert's threshold moved from 90 to 95, its 'fires' case must fail."""
    groups = rule_groups(prod)
    [alerts] = [g for g in groups if g["name"] == "llm-platform.alerts"]
    for rule in alerts["rules"]:
        if rule["alert"] == "LLMGPUSaturated":
            rule["expr"] = rule["expr"].replace("> 90", "> 95")
    rules = tmp_path / "raised.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    [case] = [c for c in CASES if c.id == "gpus-above-90-fire"]
    static = {k: v for k, v in _annotations(prod, case.alert).items() if k != "summary"}
    result = run_unit_test(promtool, rules, [{
        "interval": "1m", "input_series": _series(case.series),
        "alert_rule_test": [{"eval_time": case.eval_time, "alertname": case.alert, "exp_alerts": [
            {"exp_labels": case.fires[0][0], "exp_annotations": {"summary": case.fires[0][1], **static}}]}],
    }], tmp_path)
    assert result.returncode != 0


# Recording rules and scaler queries ------------------------------------------------------------------------------

# Two vLLM servers of llama-8b and one TGI server of llama-70b-tgi, busy, for 20 minutes. Rates are chosen to be
# exact in binary floating point (promtool compares values exactly).
TRAFFIC = {
    # llama-8b: 60 + 30 requests a minute; 15 server errors on one server, 15 client aborts on the other.
    server("vllm:request_success_total", "llama-8b-a", finished_reason="stop"): counter(45),
    server("vllm:request_success_total", "llama-8b-a", finished_reason="error"): counter(15),
    server("vllm:request_success_total", "llama-8b-b", finished_reason="stop"): counter(15),
    server("vllm:request_success_total", "llama-8b-b", finished_reason="abort"): counter(15),
    server("tgi_request_count", "llama-70b-tgi-a"): counter(30),
    # Every llama-8b request took between 2.5 and 5 s; every TGI request between 5 and 10 s.
    **latency_between(2.5, 5, "llama-8b-a"), **latency_between(2.5, 5, "llama-8b-b"),
    **histogram("tgi_request_duration", "llama-70b-tgi-a", {"5": 0, "10": 60, "+Inf": 60}),
    server("vllm:generation_tokens_total", "llama-8b-a"): counter(6000),
    server("vllm:generation_tokens_total", "llama-8b-b"): counter(3000),
    server("tgi_request_generated_tokens_sum", "llama-70b-tgi-a"): counter(1200),
    server("vllm:num_requests_waiting", "llama-8b-a"): constant(12),
    server("vllm:num_requests_waiting", "llama-8b-b"): constant(18),
    server("tgi_queue_size", "llama-70b-tgi-a"): constant(7),
    server("vllm:num_requests_running", "llama-8b-a"): constant(40),
    server("vllm:num_requests_running", "llama-8b-b"): constant(24),
    server("tgi_batch_current_size", "llama-70b-tgi-a"): constant(5),
    server("vllm:kv_cache_usage_perc", "llama-8b-a"): constant(0.5),
    server("vllm:kv_cache_usage_perc", "llama-8b-b"): constant(0.75),
    gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(60),
    gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-b"): constant(80),
    gpu("DCGM_FI_DEV_GPU_UTIL", "llama-70b-tgi-a"): constant(50),
    # A GPU nobody holds (DCGM labels it with the exporter's own pod): no model's average may include it.
    gpu("DCGM_FI_DEV_GPU_UTIL", "dcgm-exporter-x1", namespace="monitoring"): constant(0),
    gpu("DCGM_FI_DEV_FB_USED", "llama-8b-a"): constant(40000),
    gpu("DCGM_FI_DEV_FB_USED", "llama-8b-b"): constant(42000),
    # Cost: llama-8b-a holds the only GPU of a spot g6e.xlarge ($0.90/h); llama-8b-b holds 1 of the 4 GPUs of an
    # on-demand g6e.12xlarge ($10.49/h).
    "kube_node_labels" + labels(node="ip-1", label_node_kubernetes_io_instance_type="g6e.xlarge",
                                label_karpenter_sh_capacity_type="spot",
                                label_topology_kubernetes_io_zone="us-east-1a"): constant(1),
    "kube_node_labels" + labels(node="ip-2", label_node_kubernetes_io_instance_type="g6e.12xlarge",
                                label_karpenter_sh_capacity_type="on-demand",
                                label_topology_kubernetes_io_zone="us-east-1b"): constant(1),
    "karpenter_cloudprovider_instance_type_offering_price_estimate" + labels(
        instance_type="g6e.xlarge", capacity_type="spot", zone="us-east-1a"): constant(0.9),
    "karpenter_cloudprovider_instance_type_offering_price_estimate" + labels(
        instance_type="g6e.xlarge", capacity_type="on-demand", zone="us-east-1a"): constant(1.86),
    "karpenter_cloudprovider_instance_type_offering_price_estimate" + labels(
        instance_type="g6e.12xlarge", capacity_type="on-demand", zone="us-east-1b"): constant(10.49),
    'kube_node_status_capacity{node="ip-1", resource="nvidia_com_gpu", unit="integer"}': constant(1),
    'kube_node_status_capacity{node="ip-2", resource="nvidia_com_gpu", unit="integer"}': constant(4),
    "kube_pod_container_resource_requests" + labels(namespace=NS, pod="llama-8b-a", container="vllm", node="ip-1",
                                                    resource="nvidia_com_gpu", unit="integer"): constant(1),
    "kube_pod_container_resource_requests" + labels(namespace=NS, pod="llama-8b-b", container="vllm", node="ip-2",
                                                    resource="nvidia_com_gpu", unit="integer"): constant(1),
}

def p99(low: float, high: float, per_second: float) -> float:
    """histogram_quantile's linear interpolation inside the bucket (low, high] holding all `per_second` requests,
    in the order Prometheus computes it (so the float is identical)."""
    return low + (high - low) * ((0.99 * per_second) / per_second)


# (expression, {labels: value}) at 20 minutes; labels as written by promtool ("{}" for none).
RECORDED = [
    ('model:llm_requests:rate5m', {'{__name__="model:llm_requests:rate5m", model="llama-8b", tier="fast"}': 1.5,
                                   '{__name__="model:llm_requests:rate5m", model="llama-70b-tgi"}': 0.5}),
    ('model:llm_request_error_ratio:rate5m{model="llama-8b"}',
     {'{__name__="model:llm_request_error_ratio:rate5m", model="llama-8b", tier="fast"}': 0.25 / 1.5}),
    ('model:llm_request_errors:rate5m{model="llama-70b-tgi"}',
     {'{__name__="model:llm_request_errors:rate5m", model="llama-70b-tgi"}': 0}),
    ('model:llm_request_aborts:rate5m{model="llama-8b"}',
     {'{__name__="model:llm_request_aborts:rate5m", model="llama-8b", tier="fast"}': 0.25}),
    ('model:llm_e2e_latency_seconds:p99_5m', {
        '{__name__="model:llm_e2e_latency_seconds:p99_5m", model="llama-8b", tier="fast"}': p99(2.5, 5, 2),
        '{__name__="model:llm_e2e_latency_seconds:p99_5m", model="llama-70b-tgi"}': p99(5, 10, 1)}),
    ('model:llm_generation_tokens:rate5m', {
        '{__name__="model:llm_generation_tokens:rate5m", model="llama-8b", tier="fast"}': 150,
        '{__name__="model:llm_generation_tokens:rate5m", model="llama-70b-tgi"}': 20}),
    ('model:llm_requests_running:sum', {
        '{__name__="model:llm_requests_running:sum", model="llama-8b", tier="fast"}': 64,
        '{__name__="model:llm_requests_running:sum", model="llama-70b-tgi"}': 5}),
    ('model:llm_kv_cache_usage_ratio:max', {
        '{__name__="model:llm_kv_cache_usage_ratio:max", model="llama-8b", tier="fast"}': 0.75}),
    ('model:llm_gpu_memory_used_bytes:avg', {
        '{__name__="model:llm_gpu_memory_used_bytes:avg", model="llama-8b", tier="fast"}': 41000 * 1048576}),
    ('model:llm_replicas_ready:sum{model=~"llama-8b|llama-70b-tgi"}', {
        '{__name__="model:llm_replicas_ready:sum", model="llama-8b", tier="fast"}': 2,
        '{__name__="model:llm_replicas_ready:sum", model="llama-70b-tgi"}': 1}),
    ('model:llm_gpu_cost_dollars_per_hour:sum', {
        '{__name__="model:llm_gpu_cost_dollars_per_hour:sum", model="llama-8b", tier="fast"}': 0.9 + 10.49 / 4}),
]

# What each scaler query must return for each model: one series, no labels.
SCALER_VALUES = {
    "llama-8b": {"waiting-requests": 30, "p99-latency": p99(2.5, 5, 2), "gpu-utilization": 70},
    "llama-70b-tgi": {"waiting-requests": 7, "p99-latency": p99(5, 10, 1), "gpu-utilization": 50},
    # No server reports yet: every query is 0, not empty.
    "llama-70b": {"waiting-requests": 0, "p99-latency": 0, "gpu-utilization": 0},
}


def _expr_test(expr: str, samples: dict[str, float]) -> dict:
    return {"expr": expr, "eval_time": "20m",
            "exp_samples": [{"labels": lbls, "value": value} for lbls, value in samples.items()]}


def group_pod(pod: str, worker_index: str, ready: float) -> dict[str, str]:
    """A pod of prod's multi-node model as kube-state-metrics reports it: its allow-listed labels and readiness."""
    return {"kube_pod_labels" + labels(namespace=NS, pod=pod, label_llm_platform_io_model="llama-405b-bf16",
                                       label_leaderworkerset_sigs_k8s_io_worker_index=worker_index): constant(1),
            "kube_pod_status_ready" + labels(namespace=NS, pod=pod, condition="true"): constant(ready)}


def test_a_multi_node_models_ready_servers_are_its_ready_group_leaders(promtool, prod_rules, tmp_path):
    """It has no Deployment: each group counts once, by its leader (worker index 0); a ready worker does not count,
    nor a group whose leader is not ready."""
    groups = {**group_pod("llama-405b-bf16-0", "0", 1), **group_pod("llama-405b-bf16-0-1", "1", 1),
              **group_pod("llama-405b-bf16-1", "0", 0), **group_pod("llama-405b-bf16-1-1", "1", 1)}
    result = run_unit_test(promtool, prod_rules, [{
        "interval": "1m", "input_series": _series({**WORLD, **groups}),
        "promql_expr_test": [_expr_test('model:llm_replicas_ready:sum{model=~"llama-405b-bf16|llama-8b"}', {
            '{__name__="model:llm_replicas_ready:sum", model="llama-405b-bf16"}': 1,
            '{__name__="model:llm_replicas_ready:sum", model="llama-8b", tier="fast"}': 2})],
    }], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recording_rules_give_one_series_per_model_for_both_engines(promtool, prod_rules, tmp_path):
    result = run_unit_test(promtool, prod_rules, [{
        "interval": "1m", "input_series": _series(TRAFFIC),
        "promql_expr_test": [_expr_test(expr, samples) for expr, samples in RECORDED],
    }], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _scaler_tests(prod: Rendered, traffic: dict[str, str]) -> list[dict]:
    cfg = prod.config
    tests = []
    for key, expected in SCALER_VALUES.items():
        for q in scaler_queries(key, cfg.models[key]):
            tests.append(_expr_test(q.query, {"{}": expected[q.name]}))
    return [{"interval": "1m", "input_series": _series(traffic), "promql_expr_test": tests}]


def test_each_scaler_query_returns_exactly_one_series_with_the_right_value(promtool, prod, prod_rules, tmp_path):
    result = run_unit_test(promtool, prod_rules, _scaler_tests(prod, TRAFFIC), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaler_queries_are_zero_when_idle(promtool, prod, prod_rules, tmp_path):
    """No traffic: no latency samples (the quantile is NaN), nothing queued, GPUs at 0."""
    idle = {server("vllm:num_requests_waiting", "llama-8b-a"): constant(0),
            **latency_between(2.5, 5, "llama-8b-a", per_minute=0),
            gpu("DCGM_FI_DEV_GPU_UTIL", "llama-8b-a"): constant(0)}
    tests = [_expr_test(q.query, {"{}": 0}) for q in scaler_queries("llama-8b", prod.config.models["llama-8b"])]
    result = run_unit_test(promtool, prod_rules, [{"interval": "1m", "input_series": _series(idle),
                                                   "promql_expr_test": tests}], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_query_without_its_sum_is_caught(promtool, prod, prod_rules, tmp_path):
    """Guards the guard: the per-pod series, not summed, return two series for llama-8b and promtool says so."""
    test = _expr_test('vllm:num_requests_waiting{model="llama-8b"} or vector(0)', {"{}": 30})
    result = run_unit_test(promtool, prod_rules, [{"interval": "1m", "input_series": _series(TRAFFIC),
                                                   "promql_expr_test": [test]}], tmp_path)
    assert result.returncode != 0


def test_adapter_series_count_what_each_adapter_answered_directly_or_through_a_tier(promtool, prod, prod_rules,
                                                                                     tmp_path):
    """support-en answers 60/min named directly and 30/min through a tier group; support-de 6/min; a deployment whose
    name merely starts with support-en (support-en-v2) is not support-en's. Latency: every request in the 0.5 s
    bucket, so p50 is within it."""
    def answered(model_id: str, per_minute: int, pod: str = "gw-0") -> dict[str, str]:
        base = 'litellm_request_total_latency_metric_{}{{namespace="llm-gateway", pod="%s", model_id="%s"%s}}'
        return {base.format("count") % (pod, model_id, ""): f"0+{per_minute}x30",
                base.format("bucket") % (pod, model_id, ', le="0.5"'): f"0+{per_minute}x30",
                base.format("bucket") % (pod, model_id, ', le="+Inf"'): f"0+{per_minute}x30"}
    traffic = {**answered("support-en", 40), **answered("support-en", 20, "gw-1"), **answered("fast/support-en", 30),
               **answered("support-de", 6), **answered("support-en-v2", 600)}
    labels_ = {"support-en": '{adapter="support-en", model="llama-8b", tier="fast"}',
               "support-de": '{adapter="support-de", model="llama-8b", tier="fast"}'}
    by = "sum by (adapter, model, tier)"
    tests = [_expr_test(f'{by} (adapter:llm_requests:rate5m{{adapter="{name}"}})', {labels_[name]: rate})
             for name, rate in (("support-en", 1.5), ("support-de", 0.1))]
    tests.append(_expr_test(f'{by} (adapter:llm_requests:rate5m{{adapter="sql-assistant"}})',
                            {'{adapter="sql-assistant", model="llama-8b", tier="fast"}': 0}))
    tests.append(_expr_test(f'{by} (adapter:llm_e2e_latency_seconds:p50_5m{{adapter="support-en"}})',
                            {labels_["support-en"]: 0.25}))
    result = run_unit_test(promtool, prod_rules, [{"interval": "1m", "input_series": _series(traffic),
                                                   "promql_expr_test": tests}], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# The KV capacity band ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("low, high", [(0, 0), (0, 9), (5, 5), (9, 10), (99, 101), (10, 99), (100, 999),
                                       (20_419, 24_957), (1, 1_000_000), (603_835, 738_021), (1_193_472, 1_505_892)])
def test_the_band_regex_matches_exactly_the_integers_in_it(low, high):
    import re

    from components.observability.signals import integer_range_regex
    pattern = re.compile(f"(?:{integer_range_regex(low, high)})")
    probes = {0, 1, low - 1, low, low + 1, (low + high) // 2, high - 1, high, high + 1, high * 10, 10 ** len(str(high))}
    for value in sorted(v for v in probes if v >= 0):
        assert bool(pattern.fullmatch(str(value))) == (low <= value <= high), (low, high, value)
    assert not pattern.fullmatch(f"0{max(low, 1)}") and not pattern.fullmatch(f"-{low}") and not pattern.fullmatch("")


def test_the_band_regex_agrees_with_arithmetic_on_random_ranges():
    import random
    import re

    from components.observability.signals import integer_range_regex
    rng = random.Random(28)
    for _ in range(500):
        low = rng.randint(0, 10 ** rng.randint(1, 7))
        high = low + rng.randint(0, 10 ** rng.randint(0, 7))
        pattern = re.compile(f"(?:{integer_range_regex(low, high)})")
        for value in (low - 1, low, high, high + 1, rng.randint(max(low - 500, 0), high + 500)):
            if value >= 0:
                assert bool(pattern.fullmatch(str(value))) == (low <= value <= high), (low, high, value)


@pytest.mark.parametrize("planned, max_model_len, expected", [
    ([100_000], 8192, [(90_000, 110_000)]),
    ([100_000, 105_000], 8192, [(90_000, 115_500)]),           # overlapping bands merge
    ([22_688, 22_688, 191_648], 8192, [(20_420, 24_956), (172_484, 210_812)]),  # A10G, L4, L40S: two bands
    ([8_500], 8192, [(8_192, 9_350)]),
    ([105], 10, [(95, 115)]),  # 94.5 and 115.5 are not integers: the band is what is within 10%, inclusive
    ([], 8192, []),                           # never below one full-length request
])
def test_bands_are_each_plan_within_ten_percent(planned, max_model_len, expected):
    from components.observability.signals import bands
    assert bands(planned, max_model_len) == expected
