"""Typed stack configuration. Field defaults live here; Pulumi.yaml only documents the keys.

YAML keys are camelCase (the Pulumi convention); Python attributes are snake_case.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from catalog.aws import CACHE_NODE_TYPES, REGIONS, SYSTEM_INSTANCE_TYPES
from catalog.instances import INSTANCE_FAMILIES, INSTANCE_TYPES
from catalog.models import MODELS
from catalog.versions import KUBERNETES_VERSIONS
from config.errors import did_you_mean
from planning.capacity import LORA_RANKS, MAX_LORA_SLOTS, MAX_NUM_SEQS, MAX_PIPELINE_STAGES

# Karpenter v1 duration and budget formats, from the karpenter.sh_nodepools CRD (v1.14.1).
DURATION_OR_NEVER = r"^(([0-9]+(s|m|h))+|Never)$"
DURATION = r"^([0-9]+(s|m|h))+$"
BUDGET_NODES = r"^((100|[0-9]{1,2})%|[0-9]+)$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$"
# A Service name (RFC 1035 label): a model key names the model's Service, which must start with a letter.
SERVICE_NAME = r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$"
HF_REPO = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$"
IAM_PRINCIPAL_ARN = r"^arn:aws(-cn|-us-gov)?:(iam|sts)::[0-9]{12}:(role|user|assumed-role)/.+$"
# Prometheus duration, as its --storage.tsdb.retention.time flag takes it.
PROMETHEUS_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
SLACK_CHANNEL = r"^[#@]?[a-z0-9][a-z0-9._-]{0,79}$"
# ACM certificate ARN, e.g. arn:aws:acm:us-east-1:123456789012:certificate/<uuid>.
ACM_CERTIFICATE_ARN = r"^arn:aws(-cn|-us-gov)?:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]{36}$"
ROUTE53_ZONE_ID = r"^Z[A-Z0-9]{1,31}$"
DNS_NAME = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
ENGINE_VERSION = r"^[0-9]+\.[0-9]+$"
AMI_VERSION = r"^(latest|v[0-9][0-9.]*)$"
REVISION = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$"
CLUSTER_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
# What each pattern above allows, in words: an error shows these, never the regular expression.
PATTERN_WORDS = {
    DURATION_OR_NEVER: "a duration like 30s, 15m, 720h or 1h30m, or Never",
    DURATION: "a duration like 30s, 15m or 1h30m",
    BUDGET_NODES: "a share of nodes like 10% (0-100%) or a node count like 2",
    DNS_LABEL: "lowercase letters, digits and '-', starting and ending with a letter or digit, at most 32 characters",
    SERVICE_NAME: "lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, at "
                  "most 32 characters",
    HF_REPO: "a Hugging Face repository id like meta-llama/Llama-3.1-8B-Instruct",
    IAM_PRINCIPAL_ARN: "an IAM role or user ARN like arn:aws:iam::123456789012:role/admins",
    PROMETHEUS_DURATION: "a duration like 15d, 12h or 2w",
    SLACK_CHANNEL: "a channel like #llm-alerts (lowercase letters, digits, '.', '_' and '-')",
    ACM_CERTIFICATE_ARN: "an ACM certificate ARN like arn:aws:acm:us-east-1:123456789012:certificate/<uuid>",
    ROUTE53_ZONE_ID: "a hosted zone id like Z0123456789ABCDEFGHIJ",
    DNS_NAME: "a lowercase DNS name like llm.example.com",
    ENGINE_VERSION: "a major.minor version like 8.2",
    AMI_VERSION: "latest or a release like v20251103",
    REVISION: "a branch, tag or commit like main or v1.0 (letters, digits, '.', '_', '-' and '/')",
    CLUSTER_NAME: "letters, digits, '_' and '-', starting with a letter or digit, at most 63 characters",
}
INT32_MAX = 2**31 - 1
"""Replica counts land in Kubernetes int32 fields (Deployment, ScaledObject)."""
MAX_GPU_LIMIT = 10_000
"""This program's ceiling on a pool's gpuLimit: far beyond any one account's GPU quota, and it bounds the cost
model's and the NodePools' numbers."""
TIERS = ("fast", "balanced", "quality")
# A model server's shutdown: load balancers and endpoints stop sending to a terminating pod during the preStop
# sleep; the engine then drains for drainSeconds; the margin lets it exit before the kubelet's SIGKILL.
PRE_STOP_SLEEP_SECONDS = 15
TERMINATION_MARGIN_SECONDS = 15


class _Model(BaseModel):
    # strict: a number is a number and a boolean is true or false; "8", yes, on and 1 are not coerced (Pulumi reads
    # YAML 1.2, where yes and on are text). allow_inf_nan: .inf and 1e309 are not thresholds.
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              strict=True, allow_inf_nan=False)


class SystemNodeGroup(_Model):
    """The managed node group that runs controllers (Karpenter, CoreDNS, add-ons); never model servers."""

    instance_types: list[str] = Field(default_factory=lambda: ["m7i.large", "m6i.large"], min_length=1,
                                      max_length=10)
    """Default m7i.large, m6i.large: two families so one sold-out family does not block node replacement. x86_64
    types from large up (catalog/aws.py SYSTEM_INSTANCE_TYPES): the group runs the AL2023 x86_64 AMI."""
    min_size: int = Field(default=2, ge=1, le=100)
    """Default 2: Karpenter runs two replicas with hard anti-affinity; excludes 0 (nothing could schedule it).
    At most 100 (this program's ceiling: system nodes run controllers, not models)."""
    desired_size: int = Field(default=2, ge=1, le=100)
    max_size: int = Field(default=4, ge=1, le=100)
    disk_size_gib: int = Field(default=50, ge=20, le=1000)
    capacity_type: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    """Default ON_DEMAND: losing the node that runs Karpenter stalls every GPU scale-up."""

    @field_validator("instance_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        return _known("system instance type", v, SYSTEM_INSTANCE_TYPES)


class Cluster(_Model):
    region: str
    """Required. AWS region for every resource; the program builds its own AWS provider from it."""
    name: Annotated[str, Field(pattern=CLUSTER_NAME)] | None = None
    """EKS cluster name. Default `llm-<stack>`. Also the `karpenter.sh/discovery` tag value and the queue name."""
    kubernetes_version: str = "1.35"
    """Kubernetes minor version. Allowed: catalog.versions.KUBERNETES_VERSIONS."""
    availability_zones: int = Field(default=3, ge=2, le=6)
    """Number of AZs, from the region's first opted-in zones. Default 3; at least 2 (EKS requires two)."""
    vpc_cidr: str = "10.0.0.0/16"
    """IPv4 VPC block, /16 to /20, inside RFC 1918 (10/8, 172.16/12, 192.168/16) or RFC 6598 (100.64/10). Private
    subnets get 1/8 of it per AZ; public subnets share the last 1/8."""
    service_cidr: str = "172.20.0.0/16"
    """Kubernetes Service IP range, /12 to /24 inside RFC 1918 (EKS's rule); must not overlap the VPC or Docker's
    172.17.0.0/16."""
    nat_gateways: Literal["single", "perAz"] = "perAz"
    """`perAz` (default) survives an AZ outage; `single` saves ~$32/month per extra AZ (dev)."""
    endpoint_public_access: bool = True
    """Default true so `pulumi up` from outside the VPC can reach the API; the private endpoint is always on."""
    public_access_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], max_length=40)
    """CIDRs allowed to reach the public endpoint. Default everywhere (IAM still authenticates); narrow it in prod."""
    admin_role_arns: list[Annotated[str, Field(pattern=IAM_PRINCIPAL_ARN)]] = Field(default_factory=list, max_length=50)
    """IAM principals given cluster-admin through EKS access entries, besides the identity that runs `pulumi up`."""
    log_types: list[Literal["api", "audit", "authenticator", "controllerManager", "scheduler"]] = Field(
        default_factory=lambda: ["api", "audit", "authenticator"]
    )
    deletion_protection: bool = False
    addon_versions: dict[str, Annotated[str, Field(max_length=64)]] = Field(default_factory=dict, max_length=20)
    """Pin EKS add-on versions by add-on name; unset add-ons get EKS's default version for the cluster version."""
    log_retention_days: Literal[30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288,
                                3653] = 90
    """Default 90: how long the control-plane logs (CloudWatch), VPC flow logs and S3 access logs (the audit bucket)
    are kept; the values CloudWatch Logs accepts, from 30 days."""
    system_node_group: SystemNodeGroup = Field(default_factory=SystemNodeGroup)

    @field_validator("region")
    @classmethod
    def _known_region(cls, v: str) -> str:
        if v not in REGIONS:
            raise ValueError(f"not an AWS region{did_you_mean(v, REGIONS)}; allowed: {', '.join(REGIONS)}")
        return v

    @field_validator("kubernetes_version")
    @classmethod
    def _supported_version(cls, v: str) -> str:
        if v not in KUBERNETES_VERSIONS:
            raise ValueError(f"must be one of {', '.join(KUBERNETES_VERSIONS)}")
        return v

    @field_validator("vpc_cidr")
    @classmethod
    def _vpc_cidr(cls, v: str) -> str:
        net = _ipv4_network(v)
        if not 16 <= net.prefixlen <= 20:
            raise ValueError("must be an IPv4 block from /16 to /20")
        if not any(net.subnet_of(block) for block in (*RFC1918, RFC6598)):
            raise ValueError("must be inside RFC 1918 (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16) or RFC 6598 "
                             "(100.64.0.0/10); loopback, link-local and public blocks are not VPC ranges")
        return v

    @field_validator("service_cidr")
    @classmethod
    def _service_cidr(cls, v: str) -> str:
        net = _ipv4_network(v)
        if not 12 <= net.prefixlen <= 24:
            raise ValueError("must be an IPv4 block from /12 to /24 (EKS limits)")
        if not any(net.subnet_of(block) for block in RFC1918):
            raise ValueError("must be inside RFC 1918 (10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16), as EKS requires")
        if net.overlaps(DOCKER_BRIDGE):
            raise ValueError(f"must not overlap {DOCKER_BRIDGE} (Docker's bridge network, which EKS reserves)")
        return v

    @field_validator("public_access_cidrs")
    @classmethod
    def _public_cidrs(cls, v: list[str]) -> list[str]:
        return _ipv4_networks(v)


class GpuPool(_Model):
    """One GPU capacity pool. Becomes an EC2NodeClass and one Karpenter NodePool per capacity type."""

    instance_families: list[str] = Field(default_factory=list, max_length=20)
    """EC2 families (e.g. g6e). With instance_types, the pool admits the union. At least one of the two is required."""
    instance_types: list[str] = Field(default_factory=list, max_length=50)
    capacity_types: list[Literal["spot", "on-demand"]] = Field(default_factory=lambda: ["spot", "on-demand"])
    """Default both: a spot NodePool weighted above an on-demand one, so Karpenter tries spot first."""
    gpu_limit: int = Field(gt=0, le=MAX_GPU_LIMIT)
    """Required, 1 to 10,000. Cap on `nvidia.com/gpu` per NodePool (Karpenter limits are per NodePool, so with both
    capacity types the pool can hold up to this many spot GPUs plus this many on-demand GPUs). Each model's
    maxReplicas x tensorParallelSize must fit in it: spot may be gone, and on-demand alone must hold the peak."""
    consolidation_policy: Literal["WhenEmptyOrUnderutilized", "WhenEmpty"] = "WhenEmptyOrUnderutilized"
    consolidate_after: Annotated[str, Field(pattern=DURATION_OR_NEVER)] = "15m"
    """Default 15m: long enough that a model server's multi-minute load is not undone by a brief lull."""
    disruption_budget: Annotated[str, Field(pattern=BUDGET_NODES)] = "10%"
    """Share (or count) of the pool's nodes Karpenter may disrupt at once. Default 10%."""
    expire_after: Annotated[str, Field(pattern=DURATION_OR_NEVER)] = "720h"
    """Default 720h (30 days): nodes pick up new AMIs and patches; `Never` disables expiry."""
    termination_grace_period: Annotated[str, Field(pattern=DURATION)] = "1h"
    """Upper bound on a node drain; default 1h leaves room for in-flight generations to finish."""
    ami_family: Literal["al2023", "bottlerocket"] = "al2023"
    """Karpenter picks the NVIDIA variant of the family for GPU instances. AL2 has no GPU AMIs from Kubernetes 1.33."""
    ami_version: Annotated[str, Field(pattern=AMI_VERSION)] = "latest"
    """`latest` or a release (al2023: v20251103; bottlerocket: v1.46.0). Pin it in production: `latest` drifts
    every node whenever AWS publishes an AMI."""
    root_volume_gib: int = Field(default=300, ge=200, le=16384)
    """Encrypted gp3 root volume. At least 200 GiB: vLLM/TGI images are 10-20 GiB and weights are cached on disk."""
    instance_store_raid0: bool = True
    """Default true: stripe the instance's local NVMe into RAID0 for images and the model cache."""
    labels: dict[str, str] = Field(default_factory=dict, max_length=20)
    efa: bool = False
    """Default false. Attach every Elastic Fabric Adapter the instance type has, so NCCL between the nodes of a
    multi-node model bypasses the kernel's TCP stack: the EFA device plugin runs on the pool's nodes, its model
    servers request the adapters, and the cluster security group admits all traffic from itself (EFA needs it).
    Every instance type of the pool must support EFA."""
    max_idle_gpu_share: float = Field(default=0.25, ge=0, le=1)
    """Default 0.25. `llmctl plan` warns when more than this share of the pool's GPUs would sit idle at the models'
    minimum or maximum replicas (replicas that do not fill the nodes they are packed on), with the idle GPUs' price
    per hour. 1 turns the warning off."""
    placement_group: bool = False
    """Default false. Launch the pool's nodes in one cluster placement group the program creates: one zone and one
    network spine, the lowest latency between the nodes of a multi-node model. Capacity in one placement group is
    scarcer than in a region, so launches may fail that a zone-spread pool would get."""

    @field_validator("instance_families")
    @classmethod
    def _known_families(cls, v: list[str]) -> list[str]:
        return _known("GPU instance family", v, sorted(INSTANCE_FAMILIES))

    @field_validator("instance_types")
    @classmethod
    def _known_types(cls, v: list[str]) -> list[str]:
        return _known("GPU instance type", v, sorted(INSTANCE_TYPES))


class ScalingPolicy(_Model):
    """One direction of the autoscaler's behaviour: wait `stabilizationSeconds` for the signal to hold, then change
    the replica count by at most `pods` every `periodSeconds`."""

    stabilization_seconds: int = Field(ge=0, le=3600)
    pods: int = Field(ge=1, le=100)
    period_seconds: int = Field(ge=1, le=1800)
    """At most 1800: the Kubernetes HPA's limit."""


class Autoscaling(_Model):
    """KEDA triggers on the in-cluster Prometheus, per model, for vLLM and TGI alike. The replica count is the
    largest any trigger asks for; a trigger set to null is left out, and at least one must remain."""

    waiting_requests_per_replica: float | None = Field(default=10, gt=0, le=10_000)
    """Default 10 (the seed's): queued requests per server before another one starts."""
    p99_latency_seconds: float | None = Field(default=5, gt=0, le=3600)
    """Default 5 (the seed's): p99 end-to-end request latency over 5 minutes. End-to-end time grows with the
    length of the answer: raise it, or set null, for a model that writes long answers."""
    gpu_utilization_percent: float | None = Field(default=70, gt=0, le=100)
    """Default 70 (the seed's): average utilisation of the model's GPUs (DCGM)."""
    polling_interval_seconds: int = Field(default=15, ge=5, le=300)
    """Default 15: how often KEDA reads the triggers (Prometheus records them every 15 s)."""
    scale_up: ScalingPolicy = Field(
        default_factory=lambda: ScalingPolicy(stabilization_seconds=60, pods=2, period_seconds=60))
    """Default (the seed's): after a 60 s window, at most 2 more servers per 60 s."""
    scale_down: ScalingPolicy = Field(
        default_factory=lambda: ScalingPolicy(stabilization_seconds=300, pods=1, period_seconds=120))
    """Default (the seed's): after a 300 s window, at most 1 fewer server per 120 s."""


class Slo(_Model):
    """Alert thresholds for one model."""

    p99_latency_seconds: float = Field(default=10, gt=0, le=3600)
    """Default 10: warn when p99 end-to-end latency stays above it for 10 minutes. Twice the scaler's default
    target: autoscaling should keep latency well below it, so crossing it means scaling is not keeping up."""
    error_rate_percent: float = Field(default=5, gt=0, le=100)
    """Default 5: warn when more than this share of requests fails on the server for 10 minutes."""


ROUTING_POLICIES = ("cache_aware", "power_of_two", "round_robin", "random", "none")


class Routing(_Model):
    """How a model's requests are spread over its replicas: by the vLLM project's router (components/serving/
    replica_router.py), which the gateway calls instead of the servers' Service. Applies to vLLM models with
    maxReplicas > 1; a model that can only have one server needs no choice."""

    policy: Literal[ROUTING_POLICIES] = "cache_aware"
    """Default cache_aware: a request goes to the replica whose cache most likely holds its prompt's prefix (the
    router keeps an approximate prefix tree per replica), unless the replicas' loads differ by more than the balance
    thresholds. power_of_two: the less loaded of two random replicas. round_robin and random: no cache awareness.
    none: no router; the Service picks a replica at random. consistent_hash is left out: the gateway sends no
    session identity, and without one the router (0.1.17) hashes every chat request alike, onto one replica."""
    replicas: int = Field(default=2, ge=1, le=10)
    """Default 2: router pods on different system nodes, so one can restart or be drained. Each keeps its own
    prefix tree (README, Replica routing, measures what a second one costs)."""
    cache_threshold: float = Field(default=0.7, ge=0, le=1)
    """Default 0.7 (the router's is 0.3): the share of a prompt that must match a replica's tree for a
    cache-directed choice; below it the request goes to the replica with the smallest tree. At 0.3 a shared system
    prompt alone matches, and every conversation lands on one replica (`make bench`: 96 of 96 requests, README,
    Replica routing); at 0.7 a conversation's later turns stay where its history is and new ones spread. cache_aware only."""
    balance_abs_threshold: int = Field(default=4, ge=0, le=100000)
    """Default 4 (the router's is 64): with balance_rel_threshold, when in-flight requests differ by more than this
    between the busiest and the idlest replica, the request goes to the idlest instead. cache_aware only."""
    balance_rel_threshold: float = Field(default=1.5, ge=1, le=1000)
    """Default 1.5 (the router's): ...and the busiest has more than this many times the idlest's load."""


class TokenCost(_Model):
    """What the gateway charges per 1,000 tokens of one model, in USD; every response reports it in the
    `x-litellm-response-cost` header and the gateway's spend metrics."""

    input: float = Field(default=0, ge=0, le=1000)
    """Default 0: per 1,000 prompt tokens."""
    output: float = Field(default=0, ge=0, le=1000)
    """Default 0: per 1,000 generated tokens."""


DEFAULT_LORA_SLOTS = 4
"""Default --max-loras (vLLM's own is 1, which runs one adapter's requests at a time): enough for a few adapters
sharing a batch, at a few hundred MiB of GPU memory for an 8B model at rank 16."""
MAX_ADAPTERS_PER_MODEL = 64
"""This program's ceiling: every adapter is fetched before its server starts and held in host memory, so a
model's start-up and host memory grow with the count."""


class LoraAdapter(_Model):
    """A LoRA adapter served on its model's servers under its own name (the `adapters` key): clients call that
    name, and a gateway key may be granted it with or without the base model."""

    checkpoint: Annotated[str, Field(pattern=HF_REPO)]
    """Required. Where the adapter's files are: a Hugging Face repository (source huggingface), or the registry
    path below models/ (source registry: s3://<registry>/models/<checkpoint>/ holds adapter_config.json and
    adapter_model.safetensors)."""
    source: Literal["huggingface", "registry"] = "registry"
    """Default registry: a team's own fine-tune, uploaded by the sync job (README, "LoRA adapters"). huggingface
    downloads it (with the huggingfaceToken secret) at the pinned revision."""
    revision: Annotated[str, Field(pattern=REVISION)] | None = None
    """Hub branch, tag or commit (source huggingface only). Default: main. Pin a commit in production: every
    replica must load the same adapter."""
    rank: int = Field(ge=1, le=max(LORA_RANKS))
    """Required. The adapter's LoRA rank (`r` in its adapter_config.json); at most the model's maxLoraRank."""
    cost_per_1k_tokens: TokenCost | None = Field(default=None, alias="costPer1kTokens")
    """Default: the base model's prices."""
    tier: Literal["fast", "balanced", "quality"] | None = None
    """Default none: only clients that name the adapter reach it. A tier puts the adapter in that tier's group too,
    so tier and `auto` requests may be answered by it (a fine-tune is not a general-purpose model, so the base
    model's tier is not inherited)."""


class ModelDeployment(_Model):
    """One model server: which model, on which engine and pool, sized how. Checked against every instance type of
    its pool by the capacity planner before anything is created."""

    model: str
    """Required. A catalog model (catalog/models.py), e.g. llama-3.1-8b."""
    engine: Literal["vllm", "tgi"] = "vllm"
    """Default vllm. TGI is in maintenance mode upstream."""
    gpu_pool: str
    """Required. A key of gpuPools; the model must fit on every instance type of that pool."""
    tensor_parallel_size: int = Field(default=1, ge=1, le=64)
    """GPUs per node of a replica. Must divide the model's attention heads and fit on the pool's instances."""
    pipeline_parallel_size: int = Field(default=1, ge=1, le=MAX_PIPELINE_STAGES)
    """Default 1: a replica is one pod on one node. Above 1, a replica is a group of this many pods on as many
    nodes (a LeaderWorkerSet), each holding a contiguous share of the layers on tensorParallelSize GPUs, for a model
    one node cannot hold. vLLM only; every instance type of the pool must have exactly tensorParallelSize GPUs.
    At most 8 (this program's ceiling: each stage adds a network hop to every token)."""
    dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    quantization: Literal["none", "fp8", "int8", "awq", "gptq", "bitsandbytes-nf4"] = "none"
    """Default none: the checkpoint as published (an FP8 checkpoint stays FP8)."""
    kv_cache_dtype: Literal["auto", "fp8"] = "auto"
    gpu_memory_utilization: float = Field(default=0.92, gt=0, le=1)
    """Default 0.92, vLLM's own default."""
    max_model_len: int | None = Field(default=None, gt=0, le=INT32_MAX)
    """Default: the model's full context. At least one request of this length must fit in the KV cache."""
    max_num_seqs: int | None = Field(default=None, gt=0, le=MAX_NUM_SEQS)
    """Default: vLLM's for the GPU (256 below 70 GiB, 1024 above). At most 65,536 (this program's ceiling: vLLM
    sizes per-sequence buffers by it at start)."""
    min_replicas: int = Field(default=1, ge=0, le=INT32_MAX)
    """0 lets the autoscaler scale the model to zero."""
    max_replicas: int = Field(default=1, ge=1, le=INT32_MAX)
    """Default 1. maxReplicas x tensorParallelSize x pipelineParallelSize must fit in the pool's gpuLimit."""
    tier: Literal["fast", "balanced", "quality"] | None = None
    """Gateway routing tier this model serves, if any. Clients reach it by its key, by its tier, and through
    the gateway's complexity router (`auto`)."""
    source: Literal["huggingface", "registry"] = "huggingface"
    """Default huggingface: download from the Hub (needs the huggingfaceToken secret). `registry` loads from the
    platform's S3 model registry under models/<checkpoint>/, which you fill first (see README)."""
    checkpoint: Annotated[str, Field(pattern=HF_REPO)] | None = None
    """Hugging Face repository to serve instead of the catalog's (e.g. a pre-quantized AWQ build of the same
    architecture). Default: the catalog model's own repository."""
    revision: Annotated[str, Field(pattern=REVISION)] | None = None
    """Hub branch, tag or commit to pin (huggingface source only). Default: the repository's main branch."""
    enable_prefix_caching: bool = True
    """Default true: reuse the KV cache of shared prompt prefixes (system prompts, chat history). vLLM only."""
    extra_args: list[Annotated[str, Field(max_length=1000)]] = Field(default_factory=list, max_length=100)
    """Extra vLLM command-line arguments, e.g. ["--enable-chunked-prefill"]. vLLM only; a flag the platform sets
    from another key, or one vLLM has removed, is rejected. `make test-upstream` parses them with the real vLLM."""
    read_only_root_filesystem: bool = True
    """Default true: the server writes only to its volumes (the cache, /tmp, /dev/shm), with HOME on the cache
    volume. Set false only if an engine release writes elsewhere (its log names the path); please report it."""
    drain_seconds: int = Field(default=90, ge=0, le=3600)
    """Default 90: on shutdown, in-flight requests get this long to finish before they are aborted. A server's
    whole shutdown (PRE_STOP_SLEEP_SECONDS, then the drain, then TERMINATION_MARGIN_SECONDS) must fit spot's
    two-minute notice on a spot-capable pool, so 90 is the most there; on-demand-only pools allow up to 3600."""
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    slo: Slo = Field(default_factory=Slo)
    cost_per_1k_tokens: TokenCost = Field(default_factory=TokenCost, alias="costPer1kTokens")
    """Default 0 for both: the gateway then reports a cost of 0 for this model."""
    routing: Routing = Field(default_factory=Routing)
    """Default cache_aware through the replica router, for vLLM models with maxReplicas > 1."""
    adapters: dict[str, LoraAdapter] = Field(default_factory=dict, max_length=MAX_ADAPTERS_PER_MODEL)
    """Default none. LoRA adapters every server of this model loads at start (vLLM only), keyed by the name clients
    call; names are unique across the stack. At most 64 (this program's ceiling)."""
    max_loras: int | None = Field(default=None, ge=1, le=MAX_LORA_SLOTS)
    """Default: the number of adapters, at most 4. How many adapters one batch may mix (vLLM's --max-loras); each
    slot reserves GPU memory for maxLoraRank on every layer, which the capacity planner counts."""
    max_lora_rank: Literal[LORA_RANKS] | None = None
    """Default: the smallest value vLLM accepts that holds the largest adapter's rank."""
    max_cpu_loras: int | None = Field(default=None, ge=1, le=MAX_ADAPTERS_PER_MODEL)
    """Default: the number of adapters, so all stay in host memory and switching never reads the disk again.
    At least maxLoras."""

    @property
    def lora_slots(self) -> int:
        """--max-loras: adapters one batch may mix."""
        return self.max_loras or min(len(self.adapters), DEFAULT_LORA_SLOTS)

    @property
    def lora_rank(self) -> int:
        """--max-lora-rank: the rank every slot is sized for."""
        largest = max((a.rank for a in self.adapters.values()), default=1)
        return self.max_lora_rank or next(r for r in LORA_RANKS if r >= largest)

    @property
    def cpu_lora_slots(self) -> int:
        """--max-cpu-loras: adapters kept in host memory."""
        return self.max_cpu_loras or max(len(self.adapters), self.lora_slots)

    @property
    def nodes_per_replica(self) -> int:
        """Pods (and nodes) one replica spans: its pipeline stages."""
        return self.pipeline_parallel_size

    @property
    def multi_node(self) -> bool:
        return self.pipeline_parallel_size > 1

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def routed(self) -> bool:
        """Whether the model's replicas sit behind a replica router: vLLM only (the router's cache-aware choice asks
        vLLM to tokenize; TGI keeps its Service), more than one possible replica, and a policy other than none."""
        return self.engine == "vllm" and self.max_replicas > 1 and self.routing.policy != "none"

    @property
    def repository(self) -> str:
        """The Hugging Face repository whose files are served (also the registry path below models/)."""
        return self.checkpoint or MODELS[self.model].hf_id


class ModelRegistry(_Model):
    """The S3 bucket that holds model weights for `source: registry` models."""

    noncurrent_version_days: int = Field(default=30, ge=1, le=3650)
    """Default 30: an overwritten or deleted weight file stays recoverable this long, then expires."""
    force_destroy: bool = False
    """Default false: `pulumi destroy` refuses to delete a bucket that still holds weights."""


class Alerting(_Model):
    """Where Alertmanager sends alerts. Both off (the default) is valid: alerts then show only in the Prometheus
    and Alertmanager UIs, and `llmctl plan` says so."""

    pagerduty: bool = False
    """Page PagerDuty for `critical` alerts. The Events API v2 routing key is the secret pagerdutyRoutingKey."""
    slack: bool = False
    """Post `warning` and `critical` alerts to Slack. The incoming-webhook URL is the secret slackWebhookUrl."""
    slack_channel: Annotated[str, Field(pattern=SLACK_CHANNEL)] | None = None
    """Channel to post to instead of the webhook's own, e.g. `#llm-alerts`. Default: the webhook's channel."""

    @property
    def secret_keys(self) -> list[str]:
        """The secret config keys the receivers that are on need."""
        return [key for key, on in (("pagerdutyRoutingKey", self.pagerduty), ("slackWebhookUrl", self.slack)) if on]


class Monitoring(_Model):
    """kube-prometheus-stack (Prometheus, Alertmanager, Grafana), the DCGM exporter, rules and dashboards."""

    retention: Annotated[str, Field(pattern=PROMETHEUS_DURATION)] = "15d"
    """Default 15d: how long Prometheus keeps samples (it also stops at 85% of `storageGib`)."""
    storage_gib: int = Field(default=50, ge=10, le=16384)
    """Default 50: each Prometheus replica's gp3 volume."""
    replicas: int = Field(default=2, ge=1, le=5)
    """Default 2: Prometheus and Alertmanager replicas, on different system nodes, so one can restart or be
    drained while the other scrapes, evaluates and routes. Needs as many system nodes (cluster.systemNodeGroup)."""
    alerting: Alerting = Field(default_factory=Alerting)


class GatewayKey(_Model):
    """One client API key. Its value is the secret `gatewayKeys.<name>`; the gateway only holds its SHA-256."""

    models: list[str] = Field(min_length=1, max_length=100)
    """Required. What the key may call: model keys, tiers (fast, balanced, quality: the tier's group and its
    models), `auto` (the complexity router, which may pick any tier) or `*` for everything."""
    requests_per_minute: int = Field(gt=0, le=1_000_000_000)
    """Required. Requests per minute over all gateway replicas; past it the key gets 429 with retry-after."""
    tokens_per_minute: int = Field(gt=0, le=1_000_000_000)
    """Required. Prompt plus generated tokens per minute over all gateway replicas."""


class ResponseCache(_Model):
    """Answers kept in Redis and returned for an identical request. Off by default: it caches every request,
    including sampled (temperature > 0) ones, whose answers are meant to differ."""

    enabled: bool = False
    ttl_seconds: int = Field(default=600, ge=1, le=86400)
    """Default 600: how long a cached answer is served."""


class GatewayIngress(_Model):
    """The ALB in front of the gateway (AWS Load Balancer Controller). HTTPS only: a certificate comes from
    `certificateArn`, or is created in ACM and validated through `route53ZoneId`."""

    enabled: bool = True
    """Default true. False leaves the gateway reachable only inside the cluster (`kubectl port-forward`)."""
    host: Annotated[str, Field(pattern=DNS_NAME, max_length=253)] | None = None
    """The DNS name clients use, e.g. llm.example.com. Required with route53ZoneId (the certificate's name)."""
    certificate_arn: Annotated[str, Field(pattern=ACM_CERTIFICATE_ARN)] | None = None
    """An existing ACM certificate in the cluster's region. Excludes route53ZoneId."""
    route53_zone_id: Annotated[str, Field(pattern=ROUTE53_ZONE_ID)] | None = None
    """A public hosted zone holding `host`: the program creates the certificate, its DNS validation records and
    an alias record to the load balancer. Excludes certificateArn."""
    scheme: Literal["internet-facing", "internal"] = "internet-facing"
    """Default internet-facing; `internal` puts the ALB in the private subnets, reachable from the VPC only."""
    allowed_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1, max_length=50)
    """Source ranges the ALB's security group admits. Default everywhere (API keys still authenticate)."""
    sticky_sessions: bool = False
    """Default false. True pins a client to one gateway replica with an ALB cookie for an hour."""

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        return _ipv4_networks(v)


class Gateway(_Model):
    """The LiteLLM proxy every client request goes through: API keys, limits, tier routing and cost."""

    replicas: int = Field(default=2, ge=1, le=20)
    """Default 2: the fewest replicas; with 2 or more, a PDB keeps one up during node drains."""
    max_replicas: int = Field(default=6, ge=1, le=50)
    """Default 6: the CPU autoscaler's ceiling."""
    request_timeout_seconds: int = Field(default=300, ge=10, le=3600)
    """Default 300 (the seed's): a request longer than this is cut off; the ALB's idle timeout matches it."""
    keys: dict[str, GatewayKey] = Field(default_factory=dict, max_length=1000)
    """Keyed map of client API keys; each name (a DNS label) needs the secret `gatewayKeys.<name>`."""
    response_cache: ResponseCache = Field(default_factory=ResponseCache)
    ingress: GatewayIngress = Field(default_factory=GatewayIngress)
    fallbacks_across_grants: bool = True
    """Default true: when a tier has no ready server, its fallback tier answers even for a key that was not granted
    that tier (availability first; the response's `x-litellm-model-id` and `x-litellm-attempted-fallbacks` say so).
    False: a key gets answers only from what it was granted, and a 503 when that is down."""


class Redis(_Model):
    """The ElastiCache replication group the gateway shares limit counters (and its optional cache) through."""

    engine: Literal["valkey", "redis"] = "valkey"
    """Default valkey: the Redis-compatible engine AWS develops and prices lower."""
    engine_version: Annotated[str, Field(pattern=ENGINE_VERSION)] | None = None
    """Default: the newest version this program was checked with (catalog/versions.py) for the engine. Allowed:
    catalog/aws.py CACHE_ENGINE_VERSIONS (versions whose parameter group family this program renders)."""
    node_type: str = "cache.t4g.small"
    """Default cache.t4g.small: counters and a small cache need little memory. A current-generation ElastiCache
    node type (catalog/aws.py CACHE_NODE_TYPES)."""
    replicas: int = Field(default=1, ge=0, le=5)
    """Default 1: read replicas beside the primary. 0 is one node with no failover (dev); 1 or more turns on
    Multi-AZ with automatic failover."""
    snapshot_retention_days: int = Field(default=0, ge=0, le=35)
    """Default 0: counters and cached answers are disposable, so no snapshots are kept."""

    @field_validator("node_type")
    @classmethod
    def _known_node_type(cls, v: str) -> str:
        return _known("ElastiCache node type", [v], CACHE_NODE_TYPES)[0]


class StackConfig(_Model):
    """The whole validated configuration of one stack."""

    stack: str
    cluster: Cluster
    gpu_pools: dict[str, GpuPool] = Field(min_length=1, max_length=20)
    """Keyed map: each key names a pool (a DNS label) and becomes the prefix of its Kubernetes objects."""
    tags: dict[str, str] = Field(default_factory=dict, max_length=40)
    """AWS tags merged over the default set (project, stack, managed-by) on every taggable resource. At most 40:
    AWS allows 50 per resource, and the defaults and Karpenter's own tags take the rest."""
    models: dict[str, ModelDeployment] = Field(default_factory=dict, max_length=50)
    """Keyed map of model servers; each key names the deployment and its Service (starts with a letter). At most 50
    (this program's ceiling)."""
    model_registry: ModelRegistry = Field(default_factory=ModelRegistry)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    gateway: Gateway = Field(default_factory=Gateway)
    redis: Redis = Field(default_factory=Redis)

    @property
    def cluster_name(self) -> str:
        return self.cluster.name or f"llm-{self.stack}"

    @property
    def aws_tags(self) -> dict[str, str]:
        """The one tag set for every AWS resource: defaults, then the stack's own tags on top."""
        return {"project": "llm-platform", "stack": self.stack, "managed-by": "pulumi", **self.tags}


RFC1918 = tuple(ipaddress.ip_network(block) for block in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
RFC6598 = ipaddress.ip_network("100.64.0.0/10")
DOCKER_BRIDGE = ipaddress.ip_network("172.17.0.0/16")


def _known(what: str, values: list[str], allowed) -> list[str]:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        hints = "".join(did_you_mean(v, allowed) for v in unknown[:3])
        raise ValueError(f"unknown {what} {', '.join(unknown[:3])}{'...' if len(unknown) > 3 else ''}{hints}; "
                         f"allowed: {', '.join(allowed)}")
    return values


def _ipv4_network(value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise ValueError(f"not a valid CIDR block ({e})") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise ValueError("must be an IPv4 CIDR block")
    return net



def _ipv4_networks(values: list[str]) -> list[str]:
    for value in values:
        _ipv4_network(value)
    return values
