"""A real Prometheus (Debian's 2.42, unpacked by `make tools`) on 127.0.0.1, loaded with the rendered prod rules,
scraping stand-in exporters through the relabelling the rendered monitors ask for. It proves what promtool cannot:
that the PodMonitor's relabelling puts `model` and `tier` on every model-server series, that the Karpenter
ServiceMonitor's metric relabelling keeps only GPU price series, that DCGM's honorLabels keeps each GPU's pod, and
that every recording and alerting rule evaluates without error on live data (no "many-to-many matching").

The stand-ins serve the metric names and labels the real exporters expose (tests/data/metrics/), with counters
that grow with time. Kubernetes service discovery is replaced by static targets carrying the `__meta_kubernetes_*`
labels it would set, and the operator's own relabelling (namespace, pod) is added the way it adds it.
"""

from __future__ import annotations

import http.server
import subprocess
import time

import pytest
import yaml

from components.observability.signals import scaler_queries
from tests.conftest import Rendered
from tests.local_http import serve
from tests.prometheus import OPERATOR_RELABELINGS, Api, pod_target, relabel
from tests.servers import free_port
from tests.tools import stop, tool

NS = "llm-inference"
START = time.monotonic()
# pod -> (model, tier, engine)
PODS = {"llama-8b-a": ("llama-8b", "fast", "vllm"), "llama-8b-b": ("llama-8b", "fast", "vllm"),
        "llama-70b-tgi-a": ("llama-70b-tgi", "", "tgi")}


def _line(name: str, value: float, **labels) -> str:
    text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name}{{{text}}} {value}\n" if labels else f"{name} {value}\n"


def _exposition(path: str) -> str:
    """What each stand-in exporter serves now. Counters grow by a fixed rate per second."""
    t = time.monotonic() - START
    out = ""
    if path.startswith("/vllm/"):
        pod = path.rsplit("/", 1)[1]
        served = {"model_name": PODS[pod][0], "engine": "0"}  # vLLM's own labels
        out += _line("vllm:num_requests_waiting", 12 if pod.endswith("a") else 18, **served)
        out += _line("vllm:num_requests_running", 20, **served)
        out += _line("vllm:kv_cache_usage_perc", 0.5, **served)
        out += _line("vllm:request_success_total", 2 * t, finished_reason="stop", **served)
        out += _line("vllm:request_success_total", 0, finished_reason="error", **served)
        out += _line("vllm:generation_tokens_total", 100 * t, **served)
        for le, count in (("2.5", 0), ("5.0", 2 * t), ("+Inf", 2 * t)):
            out += _line("vllm:e2e_request_latency_seconds_bucket", count, le=le, **served)
    elif path == "/tgi":
        out += _line("tgi_queue_size", 7) + _line("tgi_batch_current_size", 3) + _line("tgi_request_count", t)
        for le, count in (("5", 0), ("10", t), ("+Inf", t)):
            out += _line("tgi_request_duration_bucket", count, le=le)
    elif path == "/dcgm":
        # DCGM's Kubernetes mapping: each GPU's series names the pod holding it; an idle GPU names none.
        for i, (pod, util) in enumerate((("llama-8b-a", 60), ("llama-8b-b", 80), ("llama-70b-tgi-a", 50))):
            out += _line("DCGM_FI_DEV_GPU_UTIL", util, gpu=str(i), UUID=f"GPU-{i}", namespace=NS, pod=pod,
                         container=PODS[pod][2])
        out += _line("DCGM_FI_DEV_GPU_UTIL", 0, gpu="3", UUID="GPU-3")
    elif path == "/kube-state-metrics":
        for pod, (model, tier, _) in PODS.items():
            labels = {"namespace": NS, "pod": pod, "label_llm_platform_io_model": model}
            out += _line("kube_pod_labels", 1, **({**labels, "label_llm_platform_io_tier": tier} if tier else labels))
        out += _line("kube_deployment_status_replicas_available", 2, namespace=NS, deployment="llama-8b")
        out += _line("kube_deployment_status_replicas_available", 1, namespace=NS, deployment="llama-70b-tgi")
    elif path == "/karpenter":
        for instance, price in (("g6e.xlarge", 0.9), ("m7i.large", 0.1), ("p5.48xlarge", 40.0)):
            out += _line("karpenter_cloudprovider_instance_type_offering_price_estimate", price,
                         instance_type=instance, capacity_type="spot", zone="us-east-1a")
        out += _line("karpenter_interruption_received_messages_total", 0, message_type="spot_interrupted")
    elif path == "/keda":
        out += _line("keda_scaled_object_errors_total", 0, namespace=NS, scaledObject="llama-8b")
    return out


class _Exporters(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        body = _exposition(self.path).encode()
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _named(stack: Rendered, kind: str, name: str) -> dict:
    [found] = [m for m in stack.kind(kind) if m["metadata"]["name"] == name]
    return found["spec"]


def _scrape_configs(prod: Rendered, exporters: str) -> list[dict]:
    pod_monitor = _named(prod, "PodMonitor", "model-servers")["podMetricsEndpoints"][0]
    karpenter = _named(prod, "ServiceMonitor", "karpenter")["endpoints"][0]
    dcgm = prod.releases["dcgm-exporter"]["values"]["serviceMonitor"]
    operator = OPERATOR_RELABELINGS

    def target(path: str, namespace: str, pod: str, **pod_labels) -> dict:
        return pod_target(exporters, path, namespace, pod, **pod_labels)

    servers = [target(f"/vllm/{pod}" if engine == "vllm" else "/tgi", NS, pod, llm_platform_io_model=model,
                      llm_platform_io_tier=tier, app_kubernetes_io_name=engine)
               for pod, (model, tier, engine) in PODS.items()]
    return [
        {"job_name": "model-servers", "static_configs": servers,
         "relabel_configs": operator + relabel(pod_monitor["relabelings"])},
        {"job_name": "dcgm-exporter", "honor_labels": dcgm["honorLabels"], "relabel_configs": operator,
         "static_configs": [target("/dcgm", "monitoring", "dcgm-exporter-x1")]},
        {"job_name": "kube-state-metrics", "honor_labels": True, "relabel_configs": operator,
         "static_configs": [target("/kube-state-metrics", "monitoring", "kube-state-metrics-0")]},
        {"job_name": "karpenter", "relabel_configs": operator,
         "metric_relabel_configs": relabel(karpenter["metricRelabelings"]),
         "static_configs": [target("/karpenter", "kube-system", "karpenter-0")]},
        {"job_name": "keda", "relabel_configs": operator,
         "static_configs": [target("/keda", "keda", "keda-operator-0")]},
    ]


@pytest.fixture(scope="module")
def prometheus(prod: Rendered, tmp_path_factory):
    binary = tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    exporters = serve(_Exporters)
    [rule] = prod.kind("PrometheusRule")
    (work / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    (work / "prometheus.yaml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(work / "rules.yaml")],
        "scrape_configs": _scrape_configs(prod, f"127.0.0.1:{exporters.server_address[1]}"),
    }))
    port = free_port()
    log = (work / "prometheus.log").open("w")
    proc = subprocess.Popen([str(binary), f"--config.file={work / 'prometheus.yaml'}",
                             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = Api(f"http://127.0.0.1:{port}", work / "prometheus.log")
    try:
        api.wait_for('model:llm_requests:rate5m{model="llama-8b"}', proc)
        yield api
    finally:
        stop(proc)
        exporters.stop()
        log.close()


def test_every_rule_evaluates_without_error(prometheus: Api):
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) > 40
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken


def test_model_server_series_carry_model_and_tier_from_the_pod_labels(prometheus: Api):
    series = prometheus.query('vllm:num_requests_waiting or tgi_queue_size')
    labels = {(s["metric"]["pod"], s["metric"]["model"], s["metric"].get("tier"), s["metric"]["engine"])
              for s in series}
    assert labels == {("llama-8b-a", "llama-8b", "fast", "vllm"), ("llama-8b-b", "llama-8b", "fast", "vllm"),
                      ("llama-70b-tgi-a", "llama-70b-tgi", None, "tgi")}
    assert all(s["metric"]["namespace"] == NS for s in series)


def test_gpu_series_keep_the_pod_holding_the_gpu(prometheus: Api):
    series = {s["metric"]["gpu"]: s["metric"] for s in prometheus.query("DCGM_FI_DEV_GPU_UTIL")}
    assert series["0"]["pod"] == "llama-8b-a" and series["0"]["namespace"] == NS
    assert series["3"]["pod"] == "dcgm-exporter-x1"  # an idle GPU: the exporter's own pod, not a model's
    [avg] = prometheus.query('model:llm_gpu_utilization_percent:avg{model="llama-8b"}')
    assert float(avg["value"][1]) == 70


def test_only_gpu_instance_prices_are_kept(prometheus: Api):
    series = prometheus.query("karpenter_cloudprovider_instance_type_offering_price_estimate")
    assert {s["metric"]["instance_type"] for s in series} == {"g6e.xlarge", "p5.48xlarge"}
    assert not any(name.startswith("__tmp") for s in series for name in s["metric"])


def test_scaler_queries_return_one_series_on_live_data(prometheus: Api, prod: Rendered):
    for key in ("llama-8b", "llama-70b-tgi", "llama-70b"):
        for q in scaler_queries(key, prod.config.models[key]):
            result = prometheus.query(q.query)
            assert len(result) == 1, (key, q.name, result)
    [waiting] = prometheus.query(scaler_queries("llama-8b", prod.config.models["llama-8b"])[0].query)
    assert float(waiting["value"][1]) == 30


def test_alerts_evaluate_on_live_data(prometheus: Api):
    """llama-70b and llama-405b-fp8 have no ready server here: their LLMModelDown alert is pending (for: 5m)."""
    alerts = prometheus.get("/api/v1/alerts")["data"]["alerts"]
    down = {a["labels"]["model"] for a in alerts if a["labels"]["alertname"] == "LLMModelDown"}
    assert down == {"llama-70b", "llama-405b-fp8"}
