"""Checks that span fields: run after every field is individually valid. Each returns every problem it finds."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import replace

from catalog.aws import CACHE_ENGINE_VERSIONS
from catalog.engines import NEEDS_QUANTIZED_CHECKPOINT, TGI_QUANTIZE, VLLM_QUANTIZATION, vllm_extra_arg_problems
from catalog.instances import SPOT_INTERRUPTION_NOTICE_SECONDS, efa_interfaces, types_in_pool
from catalog.models import MODELS, ModelArch
from config.errors import HIDDEN, Problem
from config.schema import (
    DNS_LABEL,
    PATTERN_WORDS,
    PRE_STOP_SLEEP_SECONDS,
    SERVICE_NAME,
    TERMINATION_MARGIN_SECONDS,
    TIERS,
    GpuPool,
    LoraAdapter,
    ModelDeployment,
    StackConfig,
)
from planning import capacity

LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
AMI_VERSION = {"al2023": r"^(latest|v[0-9]{8})$", "bottlerocket": r"^(latest|v[0-9]+\.[0-9]+\.[0-9]+)$"}
# Labels the platform sets itself on GPU nodes; a pool may not override them.
RESERVED_LABEL_PREFIXES = ("karpenter.sh/", "karpenter.k8s.aws/", "kubernetes.io/", "k8s.io/", "llm-platform.io/")


def check(cfg: StackConfig) -> list[Problem]:
    return [*_check_cluster(cfg), *_check_pools(cfg), *_check_tags(cfg), *_check_models(cfg), *_check_serving(cfg),
            *_check_multi_node(cfg), *_check_adapters(cfg), *_check_monitoring(cfg), *_check_gateway(cfg),
            *_check_redis(cfg)]


# Model names the gateway gives a meaning of its own: the complexity router (components/edge/gateway.py AUTO), the
# tier groups and the grant of everything. A model key equal to one would be listed twice in LiteLLM's config.
RESERVED_MODEL_NAMES = ("auto", *TIERS, "*")
ROUTER_SUFFIX = "-router"
"""A routed model's router Service is <key>-router (components/serving/replica_router.py name())."""


# Each alert receiver's secret: why a stack needs it, and an example value.
RECEIVER_SECRETS = {
    "pagerdutyRoutingKey": ("monitoring.alerting.pagerduty is on (an Events API v2 routing key)", "<routing key>"),
    "slackWebhookUrl": ("monitoring.alerting.slack is on (a Slack incoming-webhook URL)",
                        "https://hooks.slack.com/services/..."),
}


def required_secrets(cfg: StackConfig) -> dict[str, str]:
    """The secret keys this stack needs, each with why and an example value for `pulumi config set --secret`."""
    required = {"grafanaAdminPassword": ("Grafana's admin login is created from it", "<a long random password>")}
    from_hub = [key for key, m in cfg.models.items() if m.source == "huggingface"]
    from_hub += [name for m in cfg.models.values() for name, a in m.adapters.items() if a.source == "huggingface"]
    if from_hub:
        required["huggingfaceToken"] = (
            f"models {', '.join(from_hub)} download from Hugging Face (gated repositories need an account that "
            "accepted their license); or use source: registry", "hf_...")
    required |= {key: RECEIVER_SECRETS[key] for key in cfg.monitoring.alerting.secret_keys}
    required["gatewayMasterKey"] = ("the gateway's admin key is created from it", "sk-$(openssl rand -hex 32)")
    required["redisAuthToken"] = ("Redis (ElastiCache) requires an AUTH token with TLS; 16-128 characters without "
                                  "spaces, '/', '\"' or '@'", "$(openssl rand -hex 32)")
    messages = {key: f"is required because {why}; set it with `pulumi config set --secret llm-platform:{key} "
                     f"{example}`" for key, (why, example) in required.items()}
    for name in cfg.gateway.keys:
        messages[f"{GATEWAY_KEYS}.{name}"] = (
            f"is required because gateway.keys.{name} is declared; set it with `pulumi config set --secret --path "
            f"'llm-platform:{GATEWAY_KEYS}.{name}' sk-$(openssl rand -hex 32)`")
    return messages


GATEWAY_KEYS = "gatewayKeys"
"""The secret object holding each client API key's value by name (`gatewayKeys.<name>`)."""


def missing_secrets(cfg: StackConfig, secrets_set: set[str]) -> list[Problem]:
    """Secrets a stack needs but has not set, and key values with no `gateway.keys` entry. Checked at load, so
    `pulumi up` stops before creating anything. `secrets_set` holds secret keys and `gatewayKeys.<name>` paths."""
    problems = [Problem(key, None, why) for key, why in required_secrets(cfg).items() if key not in secrets_set]
    names = {path.removeprefix(f"{GATEWAY_KEYS}.") for path in secrets_set if path.startswith(f"{GATEWAY_KEYS}.")}
    return problems + key_value_problems(cfg, names)


def key_value_problems(cfg: StackConfig, names: set[str]) -> list[Problem]:
    """Client key values (gatewayKeys.<name>) with no gateway.keys entry to give them models and limits."""
    return [Problem(f"{GATEWAY_KEYS}.{name}", HIDDEN, f"has no gateway.keys.{name} entry (its models and limits); "
                                                      f"declared keys: {', '.join(cfg.gateway.keys) or 'none'}")
            for name in sorted(names) if name not in cfg.gateway.keys]


# ElastiCache's AUTH token rule: 16 to 128 printable ASCII characters other than space, '/', '"' and '@'.
# Source: docs.aws.amazon.com/AmazonElastiCache/latest/dg/auth.html; checked 2026-12-02.
REDIS_AUTH_TOKEN = r'^[!#-.0-?A-~]{16,128}$'


def redis_auth_token_problems(token: str | None) -> list[Problem]:
    """The token's value is never shown; only what is wrong with it."""
    if token is None or re.fullmatch(REDIS_AUTH_TOKEN, token):
        return []
    return [Problem("redisAuthToken", HIDDEN, f"ElastiCache refuses it: it has {len(token)} characters; allowed: "
                                              "16 to 128 printable ASCII characters other than space, '/', '\"' and "
                                              "'@' (e.g. $(openssl rand -hex 32))")]


def nodepool_names(pool: str, capacity_types: list[str]) -> list[str]:
    """Karpenter NodePool names for one pool: one per capacity type."""
    return [f"{pool}-{capacity}" for capacity in capacity_types]


def _check_cluster(cfg: StackConfig) -> list[Problem]:
    problems = []
    c = cfg.cluster
    vpc, services = ipaddress.ip_network(c.vpc_cidr), ipaddress.ip_network(c.service_cidr)
    if vpc.overlaps(services):
        problems.append(Problem("cluster.serviceCidr", c.service_cidr, f"must not overlap cluster.vpcCidr ({c.vpc_cidr})"))
    ng = c.system_node_group
    if not ng.min_size <= ng.desired_size <= ng.max_size:
        problems.append(Problem(
            "cluster.systemNodeGroup",
            {"minSize": ng.min_size, "desiredSize": ng.desired_size, "maxSize": ng.max_size},
            "need minSize <= desiredSize <= maxSize",
        ))
    if not c.endpoint_public_access and c.public_access_cidrs != ["0.0.0.0/0"]:
        problems.append(Problem(
            "cluster.publicAccessCidrs", c.public_access_cidrs, "only applies when cluster.endpointPublicAccess is true"
        ))
    return problems


def _check_pools(cfg: StackConfig) -> list[Problem]:
    problems: list[Problem] = []
    owners: dict[str, str] = {}  # Kubernetes object name -> pool key that produces it
    for key, pool in cfg.gpu_pools.items():
        path = f"gpuPools.{key}"
        if not re.fullmatch(DNS_LABEL, key):
            problems.append(Problem(path, key, "pool names must be DNS labels: lowercase letters, digits and '-', at most 32 characters"))
        if not pool.instance_families and not pool.instance_types:
            problems.append(Problem(path, {"instanceFamilies": [], "instanceTypes": []}, "a pool needs at least one instance family or instance type"))
        for field, values in (("instanceFamilies", pool.instance_families), ("instanceTypes", pool.instance_types),
                              ("capacityTypes", pool.capacity_types)):
            duplicates = sorted({v for v in values if values.count(v) > 1})
            if duplicates:
                problems.append(Problem(f"{path}.{field}", values, f"lists {duplicates} more than once"))
        if not pool.capacity_types:
            problems.append(Problem(f"{path}.capacityTypes", [], "allowed: one or both of 'spot', 'on-demand'"))
        types = types_in_pool(pool.instance_families, pool.instance_types)
        if types:
            smallest = min(t.gpus for t in types)
            if pool.gpu_limit < smallest:
                problems.append(Problem(
                    f"{path}.gpuLimit", pool.gpu_limit,
                    f"the smallest instance in this pool has {smallest} GPUs, so the pool could never launch a node; "
                    f"use at least {smallest}",
                ))
        if not re.fullmatch(AMI_VERSION[pool.ami_family], pool.ami_version):
            problems.append(Problem(
                f"{path}.amiVersion", pool.ami_version,
                f"allowed for {pool.ami_family}: 'latest' or a release like "
                f"{'v20251103' if pool.ami_family == 'al2023' else 'v1.46.0'}",
            ))
        for label, value in pool.labels.items():
            if not re.fullmatch(LABEL_KEY, label) or label.startswith(RESERVED_LABEL_PREFIXES):
                problems.append(Problem(f"{path}.labels", label, f"must be a valid label key outside {', '.join(RESERVED_LABEL_PREFIXES)}"))
            if not re.fullmatch(LABEL_VALUE, value):
                problems.append(Problem(f"{path}.labels.{label}", value, "must be a valid label value (63 characters of [A-Za-z0-9-_.])"))
        for name in [key, *nodepool_names(key, pool.capacity_types)]:
            if name in owners and owners[name] != key:
                problems.append(Problem(path, key, f"produces the Kubernetes object name '{name}', which pool '{owners[name]}' also produces; rename one"))
            owners.setdefault(name, key)
    return problems


# Tag keys AWS reserves, or Karpenter sets itself and refuses in an EC2NodeClass.
RESERVED_TAG_PREFIXES = ("aws:", "kubernetes.io/cluster/", "karpenter.sh/", "karpenter.k8s.aws/", "eks:")


def _check_tags(cfg: StackConfig) -> list[Problem]:
    problems = []
    for key, value in cfg.tags.items():
        if key.lower().startswith(RESERVED_TAG_PREFIXES) or not 1 <= len(key) <= 128:
            problems.append(Problem(
                f"tags.{key}", key, f"tag keys are 1-128 characters and may not start with {', '.join(RESERVED_TAG_PREFIXES)}"
            ))
        if len(value) > 256:
            problems.append(Problem(f"tags.{key}", value, "tag values are at most 256 characters"))
    return problems


MAX_SPOT_DRAIN_SECONDS = SPOT_INTERRUPTION_NOTICE_SECONDS - PRE_STOP_SLEEP_SECONDS - TERMINATION_MARGIN_SECONDS


def _check_models(cfg: StackConfig) -> list[Problem]:
    problems: list[Problem] = []
    for key, m in cfg.models.items():
        path = f"models.{key}"
        if not re.fullmatch(SERVICE_NAME, key):
            problems.append(Problem(path, key, f"a model key names its Kubernetes Service: {PATTERN_WORDS[SERVICE_NAME]}"))
        if key in RESERVED_MODEL_NAMES:
            problems.append(Problem(path, key, f"is a name the gateway reserves ({', '.join(RESERVED_MODEL_NAMES)}: the "
                                               "complexity router, the tiers and the grant of everything); rename it"))
        if key.endswith(ROUTER_SUFFIX) and key.removesuffix(ROUTER_SUFFIX) in cfg.models \
                and cfg.models[key.removesuffix(ROUTER_SUFFIX)].routed:
            problems.append(Problem(path, key, f"is the name of model '{key.removesuffix(ROUTER_SUFFIX)}'s replica "
                                               "router Service; rename it"))
        if m.min_replicas > m.max_replicas:
            problems.append(Problem(f"{path}.minReplicas", m.min_replicas, f"must not exceed maxReplicas ({m.max_replicas})"))
        triggers = m.autoscaling
        if (triggers.waiting_requests_per_replica, triggers.p99_latency_seconds,
                triggers.gpu_utilization_percent) == (None, None, None):
            problems.append(Problem(f"{path}.autoscaling", "all triggers null", "keep at least one of "
                                    "waitingRequestsPerReplica, p99LatencySeconds, gpuUtilizationPercent"))
        if m.model not in MODELS:
            problems.append(Problem(f"{path}.model", m.model, f"allowed: {', '.join(MODELS)}"))
        if m.gpu_pool not in cfg.gpu_pools:
            problems.append(Problem(f"{path}.gpuPool", m.gpu_pool, f"allowed: {', '.join(cfg.gpu_pools)}"))
        if m.model in MODELS and m.gpu_pool in cfg.gpu_pools:
            problems.extend(_check_fit(path, m, cfg.gpu_pools[m.gpu_pool]))
        if m.gpu_pool in cfg.gpu_pools and m.max_replicas * m.gpus_per_replica > cfg.gpu_pools[m.gpu_pool].gpu_limit:
            limit = cfg.gpu_pools[m.gpu_pool].gpu_limit
            shape = f"tensorParallelSize {m.tensor_parallel_size}" + (
                f" x pipelineParallelSize {m.pipeline_parallel_size}" if m.multi_node else "")
            problems.append(Problem(f"{path}.maxReplicas", m.max_replicas, (
                f"{m.max_replicas} replicas x {shape} need "
                f"{m.max_replicas * m.gpus_per_replica:,} GPUs, more than gpuPools.{m.gpu_pool}.gpuLimit ({limit}) "
                f"lets one NodePool launch; use at most {limit // m.gpus_per_replica} or raise gpuLimit")))
        if m.gpu_pool in cfg.gpu_pools and "spot" in cfg.gpu_pools[m.gpu_pool].capacity_types \
                and m.drain_seconds > MAX_SPOT_DRAIN_SECONDS:
            problems.append(Problem(f"{path}.drainSeconds", m.drain_seconds, (
                f"pool '{m.gpu_pool}' may run on spot, which gives {SPOT_INTERRUPTION_NOTICE_SECONDS} s notice; the "
                f"{PRE_STOP_SLEEP_SECONDS} s preStop, the drain and a {TERMINATION_MARGIN_SECONDS} s margin must fit "
                f"in it: use at most {MAX_SPOT_DRAIN_SECONDS}, or capacityTypes [on-demand] for that pool")))
    return problems


def sizing_request(m: ModelDeployment) -> capacity.SizingRequest:
    """The capacity planner's request for one replica of a catalog model, before a GPU is chosen (memory 0)."""
    return capacity.SizingRequest(
        MODELS[m.model], 0.0, tensor_parallel_size=m.tensor_parallel_size,
        pipeline_parallel_size=m.pipeline_parallel_size, dtype=m.dtype, quantization=m.quantization,
        kv_cache_dtype=m.kv_cache_dtype, gpu_memory_utilization=m.gpu_memory_utilization,
        max_model_len=m.max_model_len, max_num_seqs=m.max_num_seqs,
        # Adapters on a mixture of experts are refused by _check_adapters; the fit check sizes the rest without them.
        **({"lora_slots": m.lora_slots, "lora_rank": m.lora_rank}
           if m.adapters and not MODELS[m.model].is_moe else {}),
        # Calibration records are measured vLLM start-ups: TGI's overheads are its own.
        **({} if m.engine == "vllm" else {"calibrations": ()}))


def kv_plans(m: ModelDeployment, pool: GpuPool, model: ModelArch | None = None) -> dict[str, capacity.Sizing]:
    """The planner's sizing of one replica on each GPU the pool may launch (one entry per GPU kind): what the
    running servers are compared with (`llmctl verify`, the KV capacity alert). `model`: the architecture the
    servers really load, when not the catalog model the config names."""
    out = {}
    for instance in types_in_pool(pool.instance_families, pool.instance_types):
        gpu = instance.gpu_spec
        if gpu.name not in out and instance.gpus >= m.tensor_parallel_size:
            out[gpu.name] = capacity.size(replace(sizing_request(m), model=model or MODELS[m.model],
                                                  gpu_memory_gib=gpu.memory_gib, gpu_name=gpu.name))
    return out


PLANNER_KEYS = {"lora_slots": "maxLoras", "lora_rank": "maxLoraRank"}
"""Planner inputs that are not a ModelDeployment field of the same name."""


def _check_fit(path: str, m, pool) -> list[Problem]:
    """The model must fit on every instance type its pool may launch: Karpenter may pick any of them."""
    template = sizing_request(m)
    input_problems = capacity.validate(replace(template, gpu_memory_gib=1.0))
    if input_problems:
        # Every input the planner checks here came from one of the model's own keys.
        return [Problem(f"{path}.{PLANNER_KEYS.get(p.field) or ModelDeployment.model_fields[p.field].alias}",
                        p.value, p.why) for p in input_problems]
    problems = []
    for instance in types_in_pool(pool.instance_families, pool.instance_types):
        gpu = instance.gpu_spec
        if m.tensor_parallel_size > instance.gpus:
            problems.append(Problem(f"{path}.tensorParallelSize", m.tensor_parallel_size,
                                    f"{instance.name} in pool '{m.gpu_pool}' has {instance.gpus} GPUs; use at most "
                                    f"{instance.gpus} or remove {instance.name} from the pool"))
            continue
        req = replace(template, gpu_memory_gib=gpu.memory_gib, gpu_name=gpu.name)
        sizing = capacity.size(req)
        if not sizing.fits:
            shape = f"tensorParallelSize {m.tensor_parallel_size}" + (
                f" and pipelineParallelSize {m.pipeline_parallel_size}" if m.multi_node else "")
            problems.append(Problem(path, m.model, f"does not fit on {instance.name} at {shape}: {sizing.reason}; "
                                    f"fix: {capacity.suggestion(req, instance.gpus, m.engine == 'vllm')}"))
    return problems


def _check_multi_node(cfg: StackConfig) -> list[Problem]:
    """A model across nodes runs as LeaderWorkerSet groups of vLLM pods, one pipeline stage per node; and EFA and
    placement groups are only asked of pools that can have them."""
    problems = []
    for key, pool in cfg.gpu_pools.items():
        without = [t.name for t in types_in_pool(pool.instance_families, pool.instance_types) if not efa_interfaces(t.name)]
        if pool.efa and without:
            problems.append(Problem(f"gpuPools.{key}.efa", True, f"{', '.join(without)} cannot attach EFA; remove them "
                                    "from the pool or set efa: false"))
    for key, m in cfg.models.items():
        if not m.multi_node:
            continue
        path = f"models.{key}.pipelineParallelSize"
        if m.engine != "vllm":
            problems.append(Problem(path, m.pipeline_parallel_size, "applies only to engine: vllm (TGI serves a "
                                    "model from one node)"))
        if m.adapters:
            problems.append(Problem(f"models.{key}.adapters", sorted(m.adapters), "a multi-node model serves no "
                                    "adapters yet (the planner does not split LoRA slots across stages); remove them "
                                    "or use pipelineParallelSize 1"))
        if m.gpu_pool in cfg.gpu_pools:
            pool = cfg.gpu_pools[m.gpu_pool]
            other = [f"{t.name} ({t.gpus} GPUs)" for t in types_in_pool(pool.instance_families, pool.instance_types)
                     if t.gpus != m.tensor_parallel_size]
            if other:
                problems.append(Problem(path, m.pipeline_parallel_size, (
                    f"each node of a group runs one stage on tensorParallelSize {m.tensor_parallel_size} GPUs, so "
                    f"every instance type of pool '{m.gpu_pool}' must have exactly {m.tensor_parallel_size}: "
                    f"remove {', '.join(other)} from it, or use a pool of such types")))
    return problems


def _check_serving(cfg: StackConfig) -> list[Problem]:
    """Settings each engine can actually run with."""
    problems = []
    for key, m in cfg.models.items():
        path = f"models.{key}"
        if m.quantization in NEEDS_QUANTIZED_CHECKPOINT[m.engine] and m.checkpoint is None:
            problems.append(Problem(f"{path}.quantization", m.quantization,
                                    f"{m.engine} needs a checkpoint already quantized with {m.quantization}; set "
                                    f"{path}.checkpoint to such a Hugging Face repository, or use "
                                    f"{_in_flight_quantizations(m.engine)}"))
        if m.revision is not None and m.source == "registry":
            problems.append(Problem(f"{path}.revision", m.revision,
                                    "applies only to source: huggingface; the registry holds one copy per path"))
        if m.engine == "tgi":
            if m.extra_args:
                problems.append(Problem(f"{path}.extraArgs", m.extra_args, "applies only to engine: vllm"))
            if "routing" in m.model_fields_set and m.routing.policy != "none":
                problems.append(Problem(f"{path}.routing.policy", m.routing.policy,
                                        "applies only to engine: vllm (the replica router is not checked against "
                                        "TGI, whose replicas keep their Service); use none or leave routing out"))
            if m.dtype != "auto" and m.quantization != "none":
                problems.append(Problem(f"{path}.dtype", m.dtype,
                                        "TGI cannot force a dtype together with quantization; use dtype: auto"))
        else:
            for problem in vllm_extra_arg_problems(m.extra_args):
                problems.append(Problem(f"{path}.extraArgs", m.extra_args, problem))
    return problems


def _check_monitoring(cfg: StackConfig) -> list[Problem]:
    problems = []
    replicas, nodes = cfg.monitoring.replicas, cfg.cluster.system_node_group.min_size
    if replicas > nodes:
        problems.append(Problem("monitoring.replicas", replicas,
                                f"each replica needs its own system node and cluster.systemNodeGroup.minSize is "
                                f"{nodes}; use at most {nodes} or raise minSize"))
    return problems


def _in_flight_quantizations(engine: str) -> str:
    """The quantizations the engine applies to a 16-bit checkpoint itself, e.g. 'fp8 or bitsandbytes-nf4'."""
    methods = VLLM_QUANTIZATION if engine == "vllm" else TGI_QUANTIZE
    usable = [q for q in methods if q != "none" and q not in NEEDS_QUANTIZED_CHECKPOINT[engine]]
    return ", ".join(usable[:-1]) + f" or {usable[-1]}"


def tiers_served(cfg: StackConfig) -> dict[str, list[str]]:
    """Each tier that at least one model or adapter serves, with their names, in TIERS order."""
    members = {tier: [key for key, m in cfg.models.items() if m.tier == tier]
               + [name for m in cfg.models.values() for name, a in m.adapters.items() if a.tier == tier]
               for tier in TIERS}
    return {tier: names for tier, names in members.items() if names}


def adapter_names(cfg: StackConfig) -> dict[str, str]:
    """Every adapter's name with the model key that serves it."""
    return {name: key for key, m in cfg.models.items() for name in m.adapters}


def _check_adapters(cfg: StackConfig) -> list[Problem]:
    """Adapter names are model names at the gateway, so they share the model keys' namespace; the limits vLLM
    sizes its LoRA slots by must hold every adapter."""
    problems: list[Problem] = []
    owners: dict[str, str] = {}
    routers = {f"{key}{ROUTER_SUFFIX}" for key, m in cfg.models.items() if m.routed}
    for key, m in cfg.models.items():
        path = f"models.{key}"
        lora_keys = [k for k in ("max_loras", "max_lora_rank", "max_cpu_loras") if k in m.model_fields_set]
        if not m.adapters:
            problems += [Problem(f"{path}.{ModelDeployment.model_fields[k].alias}", getattr(m, k),
                                 "applies only to a model with adapters") for k in lora_keys]
            continue
        if m.engine != "vllm":
            problems.append(Problem(f"{path}.adapters", sorted(m.adapters), "applies only to engine: vllm (TGI's "
                                    "adapter loading is not checked here)"))
        if m.model in MODELS and MODELS[m.model].is_moe:
            problems.append(Problem(f"{path}.adapters", sorted(m.adapters), f"{m.model} is a mixture of experts, "
                                    "whose LoRA memory the capacity planner does not size; serve adapters on a "
                                    "dense model"))
        for name, adapter in m.adapters.items():
            problems += _adapter_problems(f"{path}.adapters.{name}", name, adapter, m, cfg, routers, owners, key)
        slots = m.lora_slots
        if slots > len(m.adapters):
            problems.append(Problem(f"{path}.maxLoras", slots, f"must be at most the number of adapters "
                                    f"({len(m.adapters)}): each slot reserves GPU memory whether used or not"))
        if m.cpu_lora_slots < slots:
            problems.append(Problem(f"{path}.maxCpuLoras", m.cpu_lora_slots, f"must be at least maxLoras ({slots}), "
                                    "as vLLM requires"))
    return problems


def _adapter_problems(path: str, name: str, adapter: LoraAdapter, m: ModelDeployment, cfg: StackConfig,
                      routers: set[str], owners: dict[str, str], key: str) -> list[Problem]:
    problems = []
    if not re.fullmatch(SERVICE_NAME, name):
        problems.append(Problem(path, name, f"an adapter's name is a model name and a folder: "
                                            f"{PATTERN_WORDS[SERVICE_NAME]}"))
    if name in RESERVED_MODEL_NAMES:
        problems.append(Problem(path, name, f"is a name the gateway reserves ({', '.join(RESERVED_MODEL_NAMES)}); "
                                            "rename it"))
    elif name in cfg.models:
        problems.append(Problem(path, name, f"is also a model key (models.{name}); clients could not tell them "
                                            "apart: rename one"))
    elif name in routers:
        problems.append(Problem(path, name, "is the name of a replica router Service; rename it"))
    elif name in owners:
        problems.append(Problem(path, name, f"models.{owners[name]} already serves an adapter of this name; "
                                            "adapter names are unique across the stack"))
    owners.setdefault(name, key)
    if adapter.rank > m.lora_rank:
        problems.append(Problem(f"{path}.rank", adapter.rank, f"is above the model's maxLoraRank ({m.lora_rank}); "
                                f"raise maxLoraRank to at least {adapter.rank} or leave it out"))
    if adapter.revision is not None and adapter.source == "registry":
        problems.append(Problem(f"{path}.revision", adapter.revision,
                                "applies only to source: huggingface; upload a new version under a new registry "
                                "path instead"))
    return problems


def _check_gateway(cfg: StackConfig) -> list[Problem]:
    problems = []
    g = cfg.gateway
    served = tiers_served(cfg)
    adapters = adapter_names(cfg)
    callable_names = {*cfg.models, *adapters, *served, "*", *(["auto"] if served else [])}
    for name, key in g.keys.items():
        path = f"gateway.keys.{name}"
        if not re.fullmatch(DNS_LABEL, name):
            problems.append(Problem(path, name, "key names must be DNS labels: lowercase letters, digits and '-', "
                                    "at most 32 characters"))
        for entry in key.models:
            if entry in TIERS and entry not in served:
                problems.append(Problem(f"{path}.models", entry, f"no model serves tier '{entry}'; tiers served: "
                                        f"{', '.join(served) or 'none'} (set models.<key>.tier)"))
            elif entry not in callable_names and entry not in TIERS:  # an unserved tier is reported above
                problems.append(Problem(f"{path}.models", entry, "allowed: a model key "
                                        f"({', '.join(cfg.models) or 'none'}), an adapter "
                                        f"({', '.join(adapters) or 'none'}), a served tier "
                                        f"({', '.join(served) or 'none'}), 'auto' or '*'"))
    if g.max_replicas < g.replicas:
        problems.append(Problem("gateway.maxReplicas", g.max_replicas, f"must be at least gateway.replicas ({g.replicas})"))
    ingress = g.ingress
    if ingress.enabled:
        if (ingress.certificate_arn is None) == (ingress.route53_zone_id is None):
            problems.append(Problem("gateway.ingress", {"certificateArn": ingress.certificate_arn,
                                                        "route53ZoneId": ingress.route53_zone_id},
                                    "set exactly one: certificateArn (an existing ACM certificate) or route53ZoneId "
                                    "(the program creates the certificate); or enabled: false"))
        if ingress.route53_zone_id is not None and ingress.host is None:
            problems.append(Problem("gateway.ingress.host", None, "is required with route53ZoneId: the certificate "
                                    "and DNS record are made for it"))
        if ingress.certificate_arn is not None and f":acm:{cfg.cluster.region}:" not in ingress.certificate_arn:
            problems.append(Problem("gateway.ingress.certificateArn", ingress.certificate_arn,
                                    f"must be a certificate in cluster.region ({cfg.cluster.region}): an ALB only "
                                    "uses certificates from its own region"))
    return problems


def _check_redis(cfg: StackConfig) -> list[Problem]:
    r = cfg.redis
    allowed = CACHE_ENGINE_VERSIONS[r.engine]
    if r.engine_version is not None and r.engine_version not in allowed:
        return [Problem("redis.engineVersion", r.engine_version,
                        f"allowed for {r.engine}: {', '.join(allowed)} (versions whose parameter group family, "
                        f"{r.engine}<major>, this program renders)")]
    return []
