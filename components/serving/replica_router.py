"""ReplicaRouter: the vLLM project's router (vllm-project/router) between the gateway and one model's replicas.

A Service picks a replica at random, so with N replicas a conversation's next turn, or a shared system prompt, finds
its prefix in that replica's KV cache about 1/N of the time. The router keeps an approximate prefix tree per replica
and sends a request where its prefix most likely is (`cache_aware`), unless the replicas' loads differ too much.

One router per model, not one for all: the gateway already chooses the model, so a router only ever chooses among
one model's replicas; each model's router fails, scales and is configured on its own (a bad policy or a crash touches
one model); its Role, NetworkPolicy and metrics name one model. The router's multi-model mode (`--enable-igw`) was
not measured here.

It finds the replicas itself (Kubernetes pod discovery in the serving namespace: a pod is added once Running and
Ready, removed as soon as it is deleted) and checks their /health. The argument list is a pure function of the
config, and `make test-upstream` parses every rendered list with the router's own argument parser.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from catalog.versions import VLLM_ROUTER
from components.compute.cluster import SYSTEM_NODE_LABEL
from components.serving.model_server import CONTAINER_SECURITY, NAMESPACE, endpoint_selector
from components.serving.vllm_service import VllmService
from components.shared.disruption import evict_one_at_a_time, surge_one_at_a_time
from components.shared.labels import PLATFORM_LABELS
from config import ModelDeployment

PORT = 8000
METRICS_PORT = 29000
COMPONENT = "replica-router"
ROUTER_UID = 10001
HEALTH_CHECK_INTERVAL_SECONDS = 10
"""The router's own /health check of each replica (its default is 60 s). With its default 3 failures, a replica that
stopped answering without its pod being deleted (a node lost) is out of the choice within about 30 s; meanwhile a
request sent to it is retried once on another."""
ATTEMPTS = 2
"""The router's --retry-max-retries counts attempts: 2 is one retry, for what another replica can fix (a replica
that refused or dropped the connection, or answered 503 while draining). The router also retries 500, which a
malformed input can cause; more attempts would multiply that work (the gateway retries only 503s, once)."""
MAX_TREE_CHARACTERS = 8 * 1024 * 1024
"""Per replica (the router's default is 32 Mi characters): about 2 million prompt tokens, more than a replica's KV
cache holds for any catalog model and GPU, so the tree never forgets a prefix a replica may still have cached;
it also bounds the router's memory."""


@dataclass(frozen=True)
class ReplicaRouterArgs:
    key: str
    """The `models` key whose replicas the router chooses among."""
    deployment: ModelDeployment
    request_timeout_seconds: int
    """The gateway's request timeout: no request through the router lives longer."""
    depends_on: list[pulumi.Resource]
    """The serving namespace and the system nodes."""


# Decisions ------------------------------------------------------------------------------------------------------

def name(key: str) -> str:
    return f"{key}-router"


def labels(key: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "vllm-router", "app.kubernetes.io/instance": key,
            "app.kubernetes.io/component": COMPONENT, **PLATFORM_LABELS, "llm-platform.io/model": key}


def selector(key: str) -> dict[str, str]:
    return {"app.kubernetes.io/instance": key, "app.kubernetes.io/component": COMPONENT}


def endpoint(key: str) -> str:
    """In-cluster base URL of the router, which the gateway calls instead of the model's Service."""
    return f"http://{name(key)}.{NAMESPACE}.svc.cluster.local:{PORT}"


def router_args(key: str, m: ModelDeployment, request_timeout_seconds: int) -> list[str]:
    """`vllm-router` arguments. Its defaults bind 127.0.0.1 (both the API and the metrics) and look for replicas on
    port 80: a pod needs all three overridden."""
    selector_terms = [f"{label}={value}" for label, value in endpoint_selector(key, m).items()]
    args = ["--host", "0.0.0.0", "--port", str(PORT),
            "--prometheus-host", "0.0.0.0", "--prometheus-port", str(METRICS_PORT),
            "--service-discovery", "--service-discovery-namespace", NAMESPACE,
            "--service-discovery-port", str(VllmService.PORT), "--selector", *selector_terms,
            "--policy", m.routing.policy,
            "--request-timeout-secs", str(request_timeout_seconds),
            "--retry-max-retries", str(ATTEMPTS),
            # A breaker opens after failed requests, and one client's failing requests would then take a healthy
            # replica away from every client (the gateway disables LiteLLM's cooldowns for the same reason). A
            # replica that is really gone leaves through discovery or the health check.
            "--disable-circuit-breaker",
            "--health-check-interval-secs", str(HEALTH_CHECK_INTERVAL_SECONDS),
            "--health-check-endpoint", "/health"]
    if m.routing.policy == "cache_aware":
        args += ["--cache-threshold", f"{m.routing.cache_threshold:g}",
                 "--balance-abs-threshold", str(m.routing.balance_abs_threshold),
                 "--balance-rel-threshold", f"{m.routing.balance_rel_threshold:g}",
                 "--max-tree-size", str(MAX_TREE_CHARACTERS)]
    return args


def probes() -> dict:
    """Ready only with at least one healthy replica: at zero replicas the router's Service has no endpoints, the
    gateway's connection is refused, and the client gets the same 503 + retry-after as without a router. Alive as
    long as the process answers."""
    return {
        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "http"}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 15,
                          "timeoutSeconds": 5, "failureThreshold": 4},
    }


def pod_spec(args: ReplicaRouterArgs) -> dict:
    key = args.key
    return {
        "metadata": {"labels": labels(key)},
        "spec": {
            "serviceAccountName": name(key),
            "nodeSelector": SYSTEM_NODE_LABEL,
            "securityContext": {"runAsNonRoot": True, "runAsUser": ROUTER_UID, "runAsGroup": ROUTER_UID,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": topology, "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": selector(key)}}
                for topology in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")],
            # Longer than the longest request: a request through a stopping router finishes.
            "terminationGracePeriodSeconds": args.request_timeout_seconds + 15,
            "containers": [{
                "name": "router",
                "image": VLLM_ROUTER.reference,
                "command": ["vllm-router"],
                "args": router_args(key, args.deployment, args.request_timeout_seconds),
                "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"},
                          {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                "securityContext": {**CONTAINER_SECURITY, "readOnlyRootFilesystem": True},
                # The gateway's Service keeps sending for a few seconds after a router pod starts terminating.
                "lifecycle": {"preStop": {"sleep": {"seconds": 10}}},
                **probes(),
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
        },
    }


def role_rules() -> list[dict]:
    """Pod discovery, read-only, in the serving namespace only (a Role, not a ClusterRole)."""
    return [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def pod_monitor_spec() -> dict:
    """Every router's metrics, with `model` from the pod's label (the router's own series name only workers)."""
    return {
        "namespaceSelector": {"matchNames": [NAMESPACE]},
        "selector": {"matchLabels": {"app.kubernetes.io/component": COMPONENT, **PLATFORM_LABELS}},
        "podMetricsEndpoints": [{
            "port": "metrics", "path": "/metrics", "interval": "15s",
            "relabelings": [{"action": "replace", "sourceLabels": ["__meta_kubernetes_pod_label_llm_platform_io_model"],
                             "targetLabel": "model"}],
        }],
    }


# Component ------------------------------------------------------------------------------------------------------

class ReplicaRouter(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    endpoint: str

    def __init__(self, resource_name: str, args: ReplicaRouterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:ReplicaRouter", resource_name, None, opts)
        key, replicas = args.key, args.deployment.routing.replicas
        metadata = {"name": name(key), "namespace": NAMESPACE, "labels": labels(key)}
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        account = k8s.core.v1.ServiceAccount(f"{resource_name}-account", metadata=metadata, opts=child)
        role = k8s.rbac.v1.Role(f"{resource_name}-role", metadata=metadata, rules=role_rules(), opts=child)
        binding = k8s.rbac.v1.RoleBinding(
            f"{resource_name}-binding", metadata=metadata,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name(key)},
            subjects=[{"kind": "ServiceAccount", "name": name(key), "namespace": NAMESPACE}], opts=child)
        self.deployment = k8s.apps.v1.Deployment(
            f"{resource_name}-deployment",
            # Unready while the model has no ready replica (scaled to zero, or starting): `pulumi up` does not wait.
            metadata={**metadata, "annotations": {"pulumi.com/skipAwait": "true"}},
            spec={"replicas": replicas, "selector": {"matchLabels": selector(key)},
                  "strategy": surge_one_at_a_time(),
                  "template": pod_spec(args)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[account, role, binding, *args.depends_on]))
        self.service = k8s.core.v1.Service(f"{resource_name}-service", metadata=metadata, spec={
            "type": "ClusterIP", "selector": selector(key),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]}, opts=child)
        if replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(f"{resource_name}-pdb", metadata=metadata,
                                              spec=evict_one_at_a_time(selector(key)), opts=child)
        self.endpoint = endpoint(key)
        self.register_outputs({"endpoint": self.endpoint})
