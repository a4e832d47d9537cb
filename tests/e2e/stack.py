"""The stack the end-to-end run deploys on 127.0.0.1, and what each rendered artefact becomes off a cluster.

Everything here comes from the functions that render the real stack (vLLM arguments, the LiteLLM config, key
policy and hashes, the gateway's container, recording and alerting rules, monitors, Alertmanager routing). Each
change made to run on one machine without a GPU is a named function below with the reason; nothing else differs.
"""

from __future__ import annotations

import re
from pathlib import Path

import config
from catalog.models import load_model
from components.edge import gateway
from components.observability import monitoring, signals
from components.serving import model_server, replica_router
from components.serving.vllm_service import ADAPTERS_PATH, VllmService, vllm_args
from planning import capacity
from tests.prometheus import OPERATOR_RELABELINGS, pod_target, relabel

# Two tiers with a server each, so routing, fallback and per-tier cost are real; the fast one has two, behind its
# replica router (the quality model's maximum is 1, so it keeps its Service); a third model at zero replicas for
# the scale-from-zero signal. All three are the same catalog model (the planner's checks run on it); every server
# loads the same tiny local checkpoint instead.
FAST, QUALITY, ASLEEP = "small", "large", "asleep"
ADAPTER = "small-support"
"""A LoRA adapter on the fast model (tests/e2e/tiny_adapter.py writes it), served by both its replicas."""
SERVED = (FAST, QUALITY)
ROUTED_REPLICAS = 2
"""Servers of the fast model, behind its replica router."""
# Limits small enough to cross in a few requests: `limited` by requests, `metered` by tokens; `shared` for the
# Redis fault check (two gateways: while Redis is down each allows half).
RPM_LIMIT = 4
TPM_LIMIT = 300
SHARED_RPM_LIMIT = 6
# The quality server runs two sequences at a time and alerts at 2 waiting per server (2 x waitingRequestsPerReplica),
# so a burst of a few dozen requests must queue and fire LLMQueueDepthHigh.
QUALITY_MAX_SEQS = 2
QUALITY_QUEUE_TARGET = 1
DRAIN_SECONDS = 30
PRICES = {FAST: {"input": 0.1, "output": 0.2}, QUALITY: {"input": 1.0, "output": 2.0}, ADAPTER: {"input": 0.3, "output": 0.6}}
MAX_MODEL_LEN = 2048


def stack_config() -> config.StackConfig:
    common = {"model": "llama-3.1-8b", "gpuPool": "gpu", "maxModelLen": MAX_MODEL_LEN, "drainSeconds": DRAIN_SECONDS}
    return config.parse("e2e", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"gpu": {"instanceFamilies": ["g6e"], "gpuLimit": 8}},
        "models": {
            FAST: {**common, "tier": "fast", "costPer1kTokens": PRICES[FAST], "maxReplicas": 2,
                   "adapters": {ADAPTER: {"checkpoint": "e2e/small-support", "rank": 8,
                                          "costPer1kTokens": PRICES[ADAPTER]}}},
            QUALITY: {**common, "tier": "quality", "costPer1kTokens": PRICES[QUALITY], "maxReplicas": 1,
                      "maxNumSeqs": QUALITY_MAX_SEQS,
                      "autoscaling": {"waitingRequestsPerReplica": QUALITY_QUEUE_TARGET},
                      # Long generations on one core are slow: keep the latency alert out of the queue alert's way.
                      "slo": {"p99LatencySeconds": 120}},
            ASLEEP: {**common, "minReplicas": 0, "maxReplicas": 1},
        },
        "monitoring": {"alerting": {"slack": True}},
        "gateway": {"ingress": {"enabled": False}, "keys": {
            "team": {"models": ["*"], "requestsPerMinute": 100000, "tokensPerMinute": 10000000},
            "fast-only": {"models": ["fast"], "requestsPerMinute": 100000, "tokensPerMinute": 10000000},
            "limited": {"models": ["fast"], "requestsPerMinute": RPM_LIMIT, "tokensPerMinute": 10000000},
            "metered": {"models": ["fast"], "requestsPerMinute": 100000, "tokensPerMinute": TPM_LIMIT},
            "shared": {"models": ["fast"], "requestsPerMinute": SHARED_RPM_LIMIT, "tokensPerMinute": 10000000},
            "adapter-only": {"models": [ADAPTER], "requestsPerMinute": 100000, "tokensPerMinute": 10000000},
        }},
    })


# vLLM ------------------------------------------------------------------------------------------------------------

# Flags a CPU cannot honour, with the reason; the e2e stack sets none of them, and a rendered list that has one
# fails loudly rather than running something other than what the cluster runs.
CPU_CANNOT = {
    "--quantization": "vLLM's CPU backend has no FP8/AWQ/GPTQ kernels for these checkpoints",
    "--kv-cache-dtype": "the CPU attention backend keeps its KV cache in the model's dtype",
    "--load-format": "runai_streamer streams from the S3 registry, which does not exist here",
}


def server_args(key: str, m: config.ModelDeployment, model_dir: str, port: int,
                adapters_dir: str | None = None) -> list[str]:
    """The rendered `vllm serve` arguments with four substitutions: the local tiny checkpoint for the Hub or S3
    location (nothing can be downloaded), the local adapters' folder for the pod's (where its init containers put
    them), 127.0.0.1 for 0.0.0.0 (nothing here listens beyond loopback), and a free port for 8000 (two servers share
    one host). Everything else, including --shutdown-timeout and the LoRA limits, is as rendered.
    On vLLM's CPU backend --gpu-memory-utilization is a share of the host's memory (vllm/v1/worker/cpu_worker.py,
    0.32.0), which two servers at 0.92 could not both have; the run sets VLLM_CPU_KVCACHE_SPACE, which fixes the KV
    cache size and skips that check. So the capacity planner's GPU-memory arithmetic is not exercised here."""
    rendered = vllm_args(key, m, "e2e-registry", port)
    unsupported = sorted(set(rendered) & set(CPU_CANNOT))
    if unsupported:
        raise ValueError(f"{key}: {unsupported} cannot run on a CPU ({[CPU_CANNOT[f] for f in unsupported]})")
    if m.adapters and adapters_dir is None:
        raise ValueError(f"{key} serves adapters {sorted(m.adapters)}: give the folder that holds them")
    args = [model_dir, *(a.replace(f"={ADAPTERS_PATH}/", f"={adapters_dir}/") for a in rendered[1:])]
    args[args.index("--host") + 1] = "127.0.0.1"
    return args


# A model across two nodes -----------------------------------------------------------------------------------------

SPLIT = "split"
"""A model whose replica is a group of two pods (pipeline parallel 2, one GPU each), run as two vLLM processes."""


def multi_node_config() -> config.StackConfig:
    """A stack with one multi-node model: the tiny checkpoint has two decoder layers, one per stage."""
    return config.parse("e2e-multinode", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"gpu": {"instanceTypes": ["g6e.xlarge", "g6e.2xlarge"], "gpuLimit": 8}},
        # maxReplicas 2 renders what prod's does: a replica router in front, so --enable-scale-out on every member.
        "models": {SPLIT: {"model": "llama-3.1-8b", "gpuPool": "gpu", "maxModelLen": MAX_MODEL_LEN,
                           "pipelineParallelSize": 2, "maxReplicas": 2, "drainSeconds": DRAIN_SECONDS}},
        "gateway": {"ingress": {"enabled": False}},
    })


def group_containers(cfg: config.StackConfig, key: str) -> tuple[dict, dict]:
    """The leader's and a worker's container as the LeaderWorkerSet renders them (the same functions `pulumi up`
    runs: VllmService.pod_parts, model_server.pod_spec and group_spec)."""
    m = cfg.models[key]
    args = model_server.ModelServerArgs(key=key, deployment=m, pool=cfg.gpu_pools[m.gpu_pool], region="us-west-2",
                                        registry_bucket="e2e-registry", token_secret=None, depends_on=[])
    container, init = VllmService.pod_parts(args, "e2e-registry")
    pod = model_server.pod_spec(args, container, init, model_server.cache_gib(m, VllmService.streams_from_s3(m)))
    group = model_server.group_spec(args, pod, VllmService.PORT)["leaderWorkerTemplate"]
    return group["leaderTemplate"]["spec"]["containers"][0], group["workerTemplate"]["spec"]["containers"][0]


def group_member_args(container: dict, model_dir: str, worker_index: int, port: int, master_port: int) -> list[str]:
    """One group member's rendered `vllm serve` arguments with what a pod gets from Kubernetes and LWS, and the
    one-machine substitutions server_args makes: LWS's environment ($(LWS_LEADER_ADDRESS) is the leader's pod
    address, here 127.0.0.1; $(LWS_WORKER_INDEX) the pod's place in the group), the local checkpoint for the S3 or
    Hub location, 127.0.0.1 for 0.0.0.0, and free ports for the API (8000) and the rendezvous (29501): each pod has
    its own address in a cluster, here both processes share one."""
    expand = {"$(LWS_LEADER_ADDRESS)": "127.0.0.1", "$(LWS_WORKER_INDEX)": str(worker_index)}
    args = [expand.get(a, a) for a in container["args"]]
    args[0] = model_dir
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    args[args.index("--master-port") + 1] = str(master_port)
    unsupported = sorted(set(args) & set(CPU_CANNOT))
    if unsupported:
        raise ValueError(f"{unsupported} cannot run on a CPU ({[CPU_CANNOT[f] for f in unsupported]})")
    return args


# Monitoring ------------------------------------------------------------------------------------------------------

ALERT_FOR_IN_TEST = "5s"


KV_CACHE_SPACE_GIB = 1
"""VLLM_CPU_KVCACHE_SPACE of every server here: on a CPU vLLM's KV cache is this, not a share of GPU memory."""


def kv_bands(cfg: config.StackConfig, model_dir: Path) -> signals.KvBands:
    """The KV capacity each vLLM model's servers may report here: the planner's CPU case (the KV space in CPU
    blocks, `capacity.cpu_kv_tokens`) for the checkpoint they really load, instead of the catalog model on the
    pool's GPUs, with the cluster's tolerance."""
    arch = load_model(config_path=model_dir / "config.json")
    return {key: signals.bands([capacity.cpu_kv_tokens(arch, KV_CACHE_SPACE_GIB, m.pipeline_parallel_size)],
                               m.max_model_len)
            for key, m in cfg.models.items() if m.engine == "vllm"}


def rule_groups(cfg: config.StackConfig, model_dir: Path) -> list[dict]:
    """The rendered rules with every alert's `for` cut to a few seconds: in a cluster they wait minutes (15 for
    the queue alert) so that a blip does not page; the condition itself is unchanged. The KV capacity band is the
    CPU plan of the checkpoint in `model_dir` (`kv_bands`)."""
    groups = signals.prometheus_rule_groups(cfg, kv_bands(cfg, model_dir))
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["for"] = ALERT_FOR_IN_TEST
    return groups


ROUTE_TIMING_IN_TEST = {"groupWait": "1s", "groupInterval": "5s"}


def alertmanager_spec(cfg: config.StackConfig) -> dict:
    """The rendered routing with its waits cut likewise: a group's first notification waits 30 s in a cluster (to
    batch alerts that fire together) and later ones 5 minutes; routes, receivers and inhibition are unchanged."""
    spec = monitoring.alertmanager_config_spec(cfg.monitoring.alerting)

    def cut(route: dict) -> None:
        route.update({k: v for k, v in ROUTE_TIMING_IN_TEST.items() if k in route})
        for child in route.get("routes", []):
            cut(child)

    cut(spec["route"])
    return spec


def pod_labels(key: str, m: config.ModelDeployment, labels: dict[str, str] | None = None) -> dict[str, str]:
    """A pod's labels (a model server's unless given) as Kubernetes service discovery names them (`.`, `/`, `-`
    become `_`)."""
    labels = model_server.labels(key, m.engine, m.tier) if labels is None else labels
    return {name.replace(".", "_").replace("/", "_").replace("-", "_"): value for name, value in labels.items()}


def scrape_configs(cfg: config.StackConfig, servers: dict[str, str], gateways: dict[str, str],
                   state_metrics: str, routers: dict[str, str]) -> list[dict]:
    """Monitors as the operator would write them. `servers`, `gateways` and `routers` (their metrics ports) map a
    pod name to its address; a server's or router's pod name starts with its model key."""
    [endpoint] = monitoring.model_server_pod_monitor_spec()["podMetricsEndpoints"]
    [gateway_endpoint] = gateway.service_monitor_spec()["endpoints"]
    [router_endpoint] = replica_router.pod_monitor_spec()["podMetricsEndpoints"]
    model_targets = []
    for pod, address in servers.items():
        key = next(k for k in cfg.models if re.fullmatch(rf"{re.escape(k)}-\d+", pod))
        model_targets.append(pod_target(address, endpoint["path"], model_server.NAMESPACE, pod,
                                        **pod_labels(key, cfg.models[key])))
    return [
        {"job_name": "model-servers", "static_configs": model_targets,
         "relabel_configs": OPERATOR_RELABELINGS + relabel(endpoint["relabelings"])},
        {"job_name": "gateway", "relabel_configs": OPERATOR_RELABELINGS,
         "metric_relabel_configs": relabel(gateway_endpoint.get("metricRelabelings", [])),
         "static_configs": [pod_target(address, gateway_endpoint["path"], gateway.NAMESPACE, pod)
                            for pod, address in gateways.items()]},
        {"job_name": "replica-routers", "static_configs": [
            pod_target(address, router_endpoint["path"], model_server.NAMESPACE, pod,
                       **pod_labels(key, cfg.models[key], replica_router.labels(key)))
            for pod, address in routers.items() for key in cfg.models if pod.startswith(f"{key}-router-")],
         "relabel_configs": OPERATOR_RELABELINGS + relabel(router_endpoint["relabelings"])},
        {"job_name": "kube-state-metrics", "honor_labels": True, "relabel_configs": OPERATOR_RELABELINGS,
         "static_configs": [pod_target(state_metrics, "/metrics", monitoring.NAMESPACE, "kube-state-metrics-0")]},
    ]


def prometheus_config(scrape: list[dict], rules_path: str, alertmanager: str | None) -> dict:
    return {
        # The cluster scrapes every 15 s; 3 s lets rates and alerts move within a short run and leaves a busy
        # server (two cores shared by everything) time to answer.
        "global": {"scrape_interval": "3s", "scrape_timeout": "3s", "evaluation_interval": "1s"},
        "rule_files": [rules_path],
        "scrape_configs": scrape,
        # Two cores shared with busy model servers: give Alertmanager longer than the default 10 s to take alerts.
        **({"alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}], "timeout": "30s"}]}}
           if alertmanager else {}),
    }
