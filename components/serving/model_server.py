"""What vLLM and TGI servers share: one interface (ModelServerArgs), the pod around the engine's container, and the
Deployment (or, for a model across nodes, the LeaderWorkerSet), Service and PodDisruptionBudget. Each engine module
supplies only its container (`VllmService`, `TgiService`); switching a model's engine is one config key.

Decisions are plain functions of the config, tested without a Pulumi runtime: resources, probe budgets, labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from catalog.engines import NEEDS_QUANTIZED_CHECKPOINT
from catalog.instances import efa_interfaces, types_in_pool
from catalog.models import MODELS
from components.compute.gpu_node_pool import GPU_TAINT, POOL_LABEL
from components.serving import leader_worker_set as lws
from components.shared.disruption import evict_one_at_a_time, surge_one_at_a_time
from components.shared.labels import PLATFORM_LABELS
from config import GpuPool, ModelDeployment
from config.schema import PRE_STOP_SLEEP_SECONDS, TERMINATION_MARGIN_SECONDS
from planning.capacity import DTYPE_BYTES, GiB, lora_bytes_per_gpu, weights_bytes_per_gpu

FP32_BYTES = 4

NAMESPACE = "llm-inference"
SERVER_SERVICE_ACCOUNT = "model-server"
"""Read-only access to the model registry (EKS Pod Identity)."""
TOKEN_SECRET = "huggingface-token"
TOKEN_SECRET_KEY = "token"
REGISTRY_PREFIX = "models"
"""Registry layout: s3://<bucket>/models/<Hugging Face repository>/ holds that repository's files."""
CACHE_PATH = "/cache"

# Share of a node's per-GPU vCPUs and memory a server requests; the rest is left for the kubelet's reservation,
# the eviction threshold and the DaemonSets (CNI, kube-proxy, Pod Identity agent, device plugin, exporters).
# EKS reserves about 1 GiB and 0.1 vCPU on a 4 vCPU / 16 GiB g5.xlarge (kube-reserved formula of the EKS AMIs);
# the DaemonSets take roughly another 0.5 vCPU and 1 GiB, so 75% fits the smallest GPU instances.
NODE_SHARE = 0.75
# /dev/shm: PyTorch and NCCL pass tensors between tensor-parallel workers through shared memory; Docker's 64 MiB
# default breaks TP > 1. 1 GiB covers one worker's needs; each further worker adds 2 GiB.
SHM_BASE_GIB = 1
SHM_PER_EXTRA_WORKER_GIB = 2
# Model start-up budget. These are planning assumptions, not measurements: Hugging Face Hub downloads to one pod
# at ~100 MiB/s (the low end of what hub downloads reach from AWS), S3 in the same region at ~500 MiB/s (one
# streaming reader), plus 5 minutes for weight loading, torch.compile and CUDA graph capture (vLLM 0.32 start-up
# logs show compile ~30 s and graph capture under 1 minute on an H100; the rest is margin). Doubled, and never
# below 10 minutes, because a probe that gives up early restarts the download from scratch.
HUB_GIB_PER_SECOND = 100 / 1024
S3_GIB_PER_SECOND = 500 / 1024
ENGINE_WARMUP_SECONDS = 300
MIN_STARTUP_SECONDS = 600
STARTUP_PROBE_PERIOD = 10
CACHE_HEADROOM_GIB = 10
"""Beyond the weights: tokenizer, config files, compile caches."""
TMP_GIB = 10
"""/tmp: compile scratch (torch inductor, Triton) and the engines' sockets."""
NODE_LAUNCH_SECONDS = 600
"""A new GPU node before the server's start-up budget begins: Karpenter's launch, the AMI's boot and the image
pull (10 minutes covers a p5 launch and a ~10 GB vLLM image)."""
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


@dataclass(frozen=True)
class ModelServerArgs:
    key: str
    """The `models` key: names the Deployment, Service, PDB and the served model."""
    deployment: ModelDeployment
    pool: GpuPool
    region: str
    registry_bucket: pulumi.Input[str]
    """The model registry's bucket; only read when `deployment.source` is registry."""
    token_secret: str | None
    """The Secret holding the Hugging Face token, or None when the stack has none (registry-only stacks)."""
    depends_on: list[pulumi.Resource]
    """The namespace, service account and token Secret: they must exist before the pod."""
    group_controller: list[pulumi.Resource] = field(default_factory=list)
    """The LeaderWorkerSet controller's release (its CRD): a multi-node model's group needs it."""


# Decisions ------------------------------------------------------------------------------------------------------

def checkpoint_gib(m: ModelDeployment) -> float:
    """Size of the files the server downloads: the checkpoint as published, whatever the in-flight quantization."""
    on_disk = m.quantization if m.quantization in NEEDS_QUANTIZED_CHECKPOINT[m.engine] else "none"
    return weights_bytes_per_gpu(MODELS[m.model], 1, DTYPE_BYTES[m.dtype], on_disk) / GiB


def startup_budget_seconds(m: ModelDeployment) -> int:
    """A multi-node replica's leader starts its clock when its own node is up, but cannot answer until every
    worker's node has launched too (Karpenter launches them one by one) and loaded: one more node launch. Each
    stage's pod reads only its layers, but the whole checkpoint is budgeted, as for one node."""
    rate = S3_GIB_PER_SECOND if m.source == "registry" else HUB_GIB_PER_SECOND
    seconds = ENGINE_WARMUP_SECONDS + checkpoint_gib(m) / rate
    waiting_for_workers = NODE_LAUNCH_SECONDS if m.multi_node else 0
    return max(MIN_STARTUP_SECONDS, math.ceil(2 * seconds / 60) * 60) + waiting_for_workers


def adapters_gib(m: ModelDeployment) -> float:
    """The adapters' files: each adapter's A and B matrices at its own rank, counted at fp32 (the most a PEFT
    checkpoint stores), which is an upper bound for bf16 ones."""
    arch = MODELS[m.model]
    return sum(lora_bytes_per_gpu(arch, 1, 1, a.rank, FP32_BYTES) for a in m.adapters.values()) / GiB


def cache_gib(m: ModelDeployment, streams_from_s3: bool) -> int:
    """The model cache volume. A server that streams weights straight from S3 keeps only small files."""
    weights = 0.0 if streams_from_s3 else checkpoint_gib(m)
    return math.ceil(weights * 1.1 + adapters_gib(m)) + CACHE_HEADROOM_GIB


def progress_deadline_seconds(m: ModelDeployment) -> int:
    """A rollout is late only after a node launch plus the whole start-up budget; Kubernetes' default (600 s) is
    shorter than every budget, so normal rollouts would report ProgressDeadlineExceeded."""
    return NODE_LAUNCH_SECONDS + startup_budget_seconds(m)


def protected_from_voluntary_disruption(m: ModelDeployment) -> bool:
    """A model that can be down to one server (minReplicas 0 or 1) loses all its capacity for a whole load (up to
    the start-up budget) when Karpenter consolidates or replaces that server's node; with two or more, the PDB
    keeps the others serving. Drift and expiry still replace protected nodes once the NodePool's
    terminationGracePeriod has passed, so AMI and node upgrades cannot be blocked forever."""
    return m.min_replicas <= 1


def shm_gib(m: ModelDeployment) -> int:
    return SHM_BASE_GIB + SHM_PER_EXTRA_WORKER_GIB * (m.tensor_parallel_size - 1)


def resources(m: ModelDeployment, pool: GpuPool, cache: int) -> dict:
    """GPUs equal the tensor-parallel size. CPU and memory are NODE_SHARE of the per-GPU slice of the smallest
    instance type in the pool that Karpenter may launch for it, so the pod fits every one of them. Memory is also
    the limit (/dev/shm counts against it); CPU has no limit, so tokenization bursts are not throttled."""
    tp = m.tensor_parallel_size
    candidates = [t for t in types_in_pool(pool.instance_families, pool.instance_types) if t.gpus >= tp]
    cpu = min(t.vcpus * tp / t.gpus for t in candidates) * NODE_SHARE
    memory = math.floor(min(t.memory_gib * tp / t.gpus for t in candidates) * NODE_SHARE)
    devices = {"nvidia.com/gpu": str(tp), **efa_request(m, pool)}
    requests = {"cpu": f"{math.floor(cpu * 2) / 2:g}", "memory": f"{memory}Gi", **devices,
                "ephemeral-storage": f"{cache + TMP_GIB}Gi"}
    return {"requests": requests, "limits": {"memory": f"{memory}Gi", **devices}}


EFA_RESOURCE = "vpc.amazonaws.com/efa"


def efa_request(m: ModelDeployment, pool: GpuPool) -> dict[str, str]:
    """A multi-node server on an EFA pool takes every adapter of its node (the fewest any of the pool's types has):
    NCCL spreads a stage's traffic over all of them. Single-node servers do not need EFA."""
    if not (pool.efa and m.multi_node):
        return {}
    return {EFA_RESOURCE: str(min(efa_interfaces(t.name) for t in types_in_pool(pool.instance_families,
                                                                                 pool.instance_types)))}


def labels(key: str, engine: str, tier: str | None) -> dict[str, str]:
    result = {
        "app.kubernetes.io/name": engine,
        "app.kubernetes.io/instance": key,
        "app.kubernetes.io/component": "model-server",
        **PLATFORM_LABELS,
        "llm-platform.io/model": key,
    }
    if tier:
        result["llm-platform.io/tier"] = tier
    return result


def selector(key: str) -> dict[str, str]:
    """Without the engine: a selector cannot change, and switching engine must stay an in-place update."""
    return {"app.kubernetes.io/instance": key, "app.kubernetes.io/component": "model-server"}


def endpoint_selector(key: str, m: ModelDeployment) -> dict[str, str]:
    """The pods that serve the API: every server, or each multi-node group's leader (one endpoint per group)."""
    return {**selector(key), **(lws.endpoint_labels() if m.multi_node else {})}


def probes(m: ModelDeployment, port_name: str) -> dict:
    health = {"path": "/health", "port": port_name}
    return {
        "startupProbe": {"httpGet": health, "periodSeconds": STARTUP_PROBE_PERIOD, "timeoutSeconds": 5,
                         "failureThreshold": startup_budget_seconds(m) // STARTUP_PROBE_PERIOD},
        "readinessProbe": {"httpGet": health, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        # A saturated server answers /health late; restart only after a minute of silence.
        "livenessProbe": {"httpGet": health, "periodSeconds": 15, "timeoutSeconds": 10, "failureThreshold": 4},
    }


CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# Servers run as this non-root user (above the host's system and login ranges) whatever the image's default, so the
# namespace can enforce the `restricted` Pod Security Standard. Python, PyTorch, Triton and vLLM put their caches
# under HOME (~/.cache, ~/.triton), which is the cache volume; USER keeps getpass.getuser() working for a UID
# that has no passwd entry (torch's compile cache asks for it); /tmp is its own volume.
SERVER_UID = 10001
HOME_PATH = CACHE_PATH
"""HOME must exist when the server starts (some tools write files directly in it): the cache volume's root does."""


def runtime_env() -> list[dict]:
    return [{"name": "HOME", "value": HOME_PATH}, {"name": "USER", "value": "model-server"}]


def pod_security(m: ModelDeployment) -> tuple[dict, dict]:
    """The pod's and each container's security context."""
    pod = {"runAsNonRoot": True, "runAsUser": SERVER_UID, "runAsGroup": SERVER_UID, "fsGroup": SERVER_UID,
           "seccompProfile": {"type": "RuntimeDefault"}}
    return pod, {**CONTAINER_SECURITY, "readOnlyRootFilesystem": m.read_only_root_filesystem}


TOKEN_VOLUME = "huggingface-token"
TOKEN_DIR = "/var/run/secrets/huggingface"
TOKEN_FILE = f"{TOKEN_DIR}/{TOKEN_SECRET_KEY}"


def hub_token_secret(args: ModelServerArgs) -> str | None:
    """The token Secret for a server that downloads from the Hub; a registry-sourced server gets none."""
    return args.token_secret if args.deployment.source == "huggingface" else None


def token_file_mount() -> dict:
    """The token as a read-only file (see `pod_spec`), for engines that read one (huggingface_hub's HF_TOKEN_PATH)."""
    return {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True}


def token_env_from_secret(token_secret: str) -> dict:
    """The token as an environment variable, for an engine that reads nothing else."""
    return {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": token_secret, "key": TOKEN_SECRET_KEY}}}


def pod_spec(args: ModelServerArgs, container: dict, init_containers: list[dict], cache: int) -> dict:
    m = args.deployment
    pod_context, container_context = pod_security(m)
    spec = {
        "serviceAccountName": SERVER_SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,  # Pod Identity mounts its own token; the API is never called
        "nodeSelector": {POOL_LABEL: m.gpu_pool},
        "tolerations": [{"key": GPU_TAINT["key"], "operator": "Equal", "value": GPU_TAINT["value"],
                         "effect": GPU_TAINT["effect"]}],
        "securityContext": pod_context,
        "terminationGracePeriodSeconds": PRE_STOP_SLEEP_SECONDS + m.drain_seconds + TERMINATION_MARGIN_SECONDS,
        "containers": [{
            **container,
            "env": [*runtime_env(), *container.get("env", [])],
            "resources": resources(m, args.pool, cache),
            "securityContext": container_context,
            "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SLEEP_SECONDS}}},
            **probes(m, "http"),
            "volumeMounts": [{"name": "shm", "mountPath": "/dev/shm"},
                             {"name": "cache", "mountPath": CACHE_PATH},
                             {"name": "tmp", "mountPath": "/tmp"},
                             *container.get("volumeMounts", [])],
        }],
        "volumes": [
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_gib(m)}Gi"}},
            {"name": "cache", "emptyDir": {"sizeLimit": f"{cache}Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": f"{TMP_GIB}Gi"}},
        ],
    }
    if any(mount["name"] == TOKEN_VOLUME for c in (container, *init_containers) for mount in c.get("volumeMounts", [])):
        # Owner and group read only: the pod's fsGroup makes the file readable by the (non-root) server.
        spec["volumes"].append({"name": TOKEN_VOLUME, "secret": {
            "secretName": args.token_secret, "defaultMode": 0o440,
            "items": [{"key": TOKEN_SECRET_KEY, "path": TOKEN_SECRET_KEY}]}})
    if init_containers:
        spec["initContainers"] = [{**c, "env": [*runtime_env(), *c.get("env", [])], "securityContext": container_context}
                                  for c in init_containers]
    if m.multi_node:
        spec["affinity"] = lws.same_zone_as_group(args.key)
    elif m.max_replicas > 1:
        spec["topologySpreadConstraints"] = spread_constraints(args.key)
    return spec


def spread_constraints(key: str) -> list[dict]:
    """Zones: best effort (ScheduleAnyway), because GPU capacity is often in one zone only and refusing would block
    scale-up. Nodes: required for the first two replicas (minDomains 2 counts a missing second node as empty, so
    Karpenter launches one), so one node's loss never takes every replica; later replicas may share nodes, which
    keeps an 8-GPU node full of TP-4 servers."""
    match = {"matchLabels": selector(key)}
    return [
        {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": match},
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
         "minDomains": 2, "labelSelector": match},
    ]


def min_servers(m: ModelDeployment) -> int:
    """The fewest servers a model runs: its minReplicas. At 0, the gateway's request counter wakes it (KEDA
    activation, components/observability/signals.py). New Deployments start with this many; the autoscaler's
    minimum is the same."""
    return m.min_replicas


# Once the Deployment exists, KEDA's HPA writes spec.replicas through the scale subresource. With server-side apply,
# pulumi-kubernetes drops an ignored field from its apply when another field manager owns it, or sends the live value
# (provider/pkg/await/await.go, handleSSAIgnoreFields), so `pulumi up` never resets a scaled model.
REPLICAS_OWNED_BY_AUTOSCALER = ["spec.replicas"]


def pod_template(args: ModelServerArgs, pod: dict, port: int | None) -> dict:
    """`port`: where the pod serves its metrics (None: it serves none, as a multi-node group's workers)."""
    m = args.deployment
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    protected = protected_from_voluntary_disruption(m) or m.multi_node
    return {
        "metadata": {
            "labels": labels(args.key, m.engine, m.tier),
            "annotations": {**(scrape if port else {}), **({DO_NOT_DISRUPT: "true"} if protected else {})},
        },
        "spec": pod,
    }


def deployment_spec(args: ModelServerArgs, pod: dict, port: int) -> dict:
    m = args.deployment
    return {
        # Only at creation: KEDA's HPA owns the count afterwards (the Deployment ignores changes to it).
        "replicas": min_servers(m),
        "selector": {"matchLabels": selector(args.key)},
        # One extra server during a rollout, never one fewer: capacity is GPUs, and a new one takes minutes.
        "strategy": surge_one_at_a_time(),
        "progressDeadlineSeconds": progress_deadline_seconds(m),
        "template": pod_template(args, pod, port),
    }


def group_spec(args: ModelServerArgs, pod: dict, port: int) -> dict:
    """A multi-node model's LeaderWorkerSet: the leader's pod as rendered, each worker the same pod with the
    worker's container (components/serving/leader_worker_set.py)."""
    m = args.deployment
    [leader] = pod["containers"]
    worker_pod = {**pod, "containers": [lws.worker_container(leader)]}
    return lws.leader_worker_set_spec(m.pipeline_parallel_size, min_servers(m), pod_template(args, pod, port),
                                      pod_template(args, worker_pod, None))


def service_spec(key: str, m: ModelDeployment, port: int) -> dict:
    return {"type": "ClusterIP", "selector": endpoint_selector(key, m),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}


def pdb_spec(key: str, m: ModelDeployment) -> dict:
    """One server at a time may be evicted: drains proceed even with one replica, and never take a whole model
    down when it has more. No pod of a multi-node group may be (`leader_worker_set.never_evict`)."""
    return lws.never_evict(selector(key)) if m.multi_node else evict_one_at_a_time(selector(key))


# Component ------------------------------------------------------------------------------------------------------

class ModelServer(pulumi.ComponentResource):
    """Base of VllmService and TgiService: subclasses set PORT and the pure `pod_parts`. Both register under one
    component type, so switching a model's engine updates its Deployment in place (a rolling update) instead of
    creating a second one under the same name."""

    PORT: int
    workload: k8s.apps.v1.Deployment | k8s.apiextensions.CustomResource
    """The Deployment, or a multi-node model's LeaderWorkerSet."""
    service: k8s.core.v1.Service
    pdb: k8s.policy.v1.PodDisruptionBudget
    endpoint: str
    """In-cluster base URL of the OpenAI-compatible API."""

    def __init__(self, name: str, args: ModelServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:ModelServer", name, None, opts)
        m = args.deployment
        cache = cache_gib(m, self.streams_from_s3(m))
        metadata = {"name": args.key, "namespace": NAMESPACE, "labels": labels(args.key, m.engine, m.tier)}
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)

        def spec(bucket: str) -> dict:
            container, init_containers = self.pod_parts(args, bucket)
            pod = pod_spec(args, container, init_containers, cache)
            return (group_spec if m.multi_node else deployment_spec)(args, pod, self.PORT)

        # Loading a model takes minutes to an hour: `pulumi up` does not wait for it. Readiness is for monitoring
        # and alerts to watch.
        workload_metadata = {**metadata, "annotations": {"pulumi.com/skipAwait": "true"}}
        workload_opts = pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(
            ignore_changes=REPLICAS_OWNED_BY_AUTOSCALER))
        workload_spec = pulumi.Output.from_input(args.registry_bucket).apply(spec)
        if m.multi_node:
            self.workload = k8s.apiextensions.CustomResource(
                f"{name}-group", api_version=lws.API_VERSION, kind=lws.KIND, metadata=workload_metadata,
                spec=workload_spec, opts=pulumi.ResourceOptions.merge(workload_opts, pulumi.ResourceOptions(
                    depends_on=args.group_controller)))
        else:
            self.workload = k8s.apps.v1.Deployment(f"{name}-deployment", metadata=workload_metadata,
                                                   spec=workload_spec, opts=workload_opts)
        self.service = k8s.core.v1.Service(f"{name}-service", metadata=metadata,
                                           spec=service_spec(args.key, m, self.PORT), opts=child)
        self.pdb = k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=metadata, spec=pdb_spec(args.key, m),
                                                     opts=child)
        self.endpoint = f"http://{args.key}.{NAMESPACE}.svc.cluster.local:{self.PORT}"
        self.register_outputs({"endpoint": self.endpoint})

    @staticmethod
    def streams_from_s3(m: ModelDeployment) -> bool:
        """Whether the engine reads registry weights straight from S3 (then the cache holds only small files)."""
        return False

    @classmethod
    def pod_parts(cls, args: ModelServerArgs, bucket: str) -> tuple[dict, list[dict]]:
        """The engine's container (name, image, command, args, env, ports) and its init containers."""
        raise NotImplementedError
