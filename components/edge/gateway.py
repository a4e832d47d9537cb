"""Gateway: the LiteLLM proxy in front of every model server. Clients call it with an API key and name a model
key, a tier (fast, balanced, quality) or `auto` (LiteLLM's rule-based complexity router picks the tier).

Keys are declarative (stack config); the gateway holds only their SHA-256 hashes and checks them with
`gateway_plugins/gateway_auth.py`. LiteLLM's database-backed virtual keys are not used: see the README (Gateway) for
switching to the `litellm-database` image with RDS Postgres.

Decisions are pure functions of the config, tested without a Pulumi runtime; `litellm_config` takes any set of
backend URLs, so tests (and the end-to-end run) point it at servers of their own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s
import yaml

from catalog import versions
from components.compute.cluster import SYSTEM_NODE_LABEL
from components.serving.model_server import CONTAINER_SECURITY
from components.shared.disruption import evict_one_at_a_time, surge_one_at_a_time
from components.shared.labels import PLATFORM_LABELS
from components.shared.secret import opaque_secret
from config import ModelDeployment
from config.schema import TIERS, Gateway, TokenCost

NAMESPACE = "llm-gateway"
NAME = "llm-gateway"
PORT = 4000
CONFIG_DIR = "/etc/litellm"
KEYS_DIR = "/etc/litellm-keys"
PLUGINS_DIR = Path(__file__).resolve().parents[2] / "gateway_plugins"
"""The code that runs inside the proxy (gateway_plugins/). The program reads it as files and never imports it: it
imports LiteLLM, which the program does not install. tests/test_layout.py holds both directions."""
AUTH_MODULE = "gateway_auth"
HOOKS_MODULE = "gateway_hooks"
"""gateway_plugins/gateway_auth.py and gateway_hooks.py, mounted beside config.yaml. The program shares no code with
them: the names below are their contract, and a test checks them."""
POLICY_FILE = "LLM_PLATFORM_KEY_POLICY"
HASHES_FILE = "LLM_PLATFORM_KEY_HASHES"
PEERS = "LLM_PLATFORM_GATEWAY_PEERS"
REQUEST_TIMEOUT = "LLM_PLATFORM_REQUEST_TIMEOUT_SECONDS"
ADMIN = "admin"
AUTO = "auto"
"""The model name that asks the complexity router to choose the tier."""
REDIS_SECRET = "redis-connection"
"""host, port, password (the AUTH token) of the gateway's Redis."""
KEYS_SECRET = f"{NAME}-keys"
"""hashes.json (mounted for gateway_auth.py) and master-key (LITELLM_MASTER_KEY, which LiteLLM requires)."""
# LiteLLM's complexity levels and the tier each prefers. A level whose tier no model serves goes to the nearest
# served tier, the more capable one on a tie: a wrong guess upward costs money, downward costs answer quality.
COMPLEXITY_TIERS = {"SIMPLE": "fast", "MEDIUM": "balanced", "COMPLEX": "quality", "REASONING": "quality"}
# Labels LiteLLM would put on its metrics whose values a client chooses: its address, user agent, key hash, `user`
# field, the request path (any path under a route's prefix), and `model` (on a refused request LiteLLM writes the
# client's string there; `requested_model` is bucketed to the served names or "other", `model_id` names the
# deployment). Left out at the source (prometheus_exclude_labels), so the series that remain count every request:
# dropping them in the ServiceMonitor instead would collide series that differ only in a dropped label. The key's
# name (api_key_alias) stays: gateway.keys bounds it.
EXCLUDED_METRIC_LABELS = ("client_ip", "user_agent", "hashed_api_key", "end_user", "user", "user_email", "route",
                          "model")
HEALTH_PATHS = ("/health/liveliness", "/health/readiness")
CLIENT_PATHS = {"/v1/chat/completions": "Exact", "/v1/completions": "Exact", "/v1/models": "Prefix"}
"""What the load balancer forwards beside the health paths (Ingress pathType by path): the routes a client key may
call (gateway_plugins/gateway_auth.py CLIENT_ROUTES; a test holds the two equal)."""
PEERS_SERVICE = f"{NAME}-peers"
"""A headless Service: its DNS name has one address per ready replica, which gateway_auth reads to share a key's
limits among the replicas while Redis is unreachable."""
# LiteLLM's retry back-off (litellm/constants.py, 1.108.7): 0.5 s doubling, plus up to 0.75 s of jitter, slept
# before a retry and once more after a last failed one. The one retry here goes through the Service to another
# replica of a model whose server refused or dropped the request: there is nothing to wait for.
RETRY_BACKOFF_ENV = {"INITIAL_RETRY_DELAY": "0.1", "JITTER": "0.1", "MAX_RETRY_DELAY": "1"}
# LiteLLM's Redis client and circuit breaker (RedisCache and litellm/constants.py, 1.108.7). Defaults: a 5 s socket
# timeout per command, and a breaker that opens after 5 timeouts spanning 5 s and probes again after 60 s: a hung
# Redis stalls requests 15 s before the breaker opens, and a recovered one is used again only after a minute.
# ElastiCache answers in well under a millisecond inside the VPC, so a quarter second is a generous bound, and a
# probe every 2 s notices recovery within seconds (each probe of a still-hung Redis costs one request that bound).
REDIS_TIMEOUT_SECONDS = 0.25
REDIS_CLIENT_ENV = {"REDIS_CONNECTION_POOL_TIMEOUT": "1", "REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD": "3",
                    "REDIS_CIRCUIT_BREAKER_TIMEOUT_MIN_DURATION": "1", "REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "2"}


# Decisions ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Served:
    """One name the gateway serves from a model's servers: the model itself, or one of its LoRA adapters (vLLM
    serves each under its own name, so the request carries it unchanged)."""

    name: str
    model_key: str
    tier: str | None
    cost: TokenCost


def served(models: dict[str, ModelDeployment]) -> list[Served]:
    """Every model and adapter, each with its tier (an adapter joins one only when its own `tier` says so) and its
    prices (an adapter's own, else its model's)."""
    result = []
    for key, m in models.items():
        result.append(Served(key, key, m.tier, m.cost_per_1k_tokens))
        result += [Served(name, key, a.tier, a.cost_per_1k_tokens or m.cost_per_1k_tokens)
                   for name, a in m.adapters.items()]
    return result


def served_tiers(models: dict[str, ModelDeployment]) -> list[str]:
    return [tier for tier in TIERS if any(s.tier == tier for s in served(models))]


def nearest_tier(wanted: str, served: list[str]) -> str:
    """The served tier closest to `wanted` in TIERS order; the more capable one on a tie."""
    position = TIERS.index(wanted)
    return min(served, key=lambda tier: (abs(TIERS.index(tier) - position), -TIERS.index(tier)))


def complexity_tiers(served: list[str]) -> dict[str, str]:
    return {level: nearest_tier(tier, served) for level, tier in COMPLEXITY_TIERS.items()}


def tier_fallbacks(served: list[str]) -> list[dict[str, list[str]]]:
    """Each served tier falls back to the next one down (quality -> balanced -> fast) when it cannot answer."""
    return [{tier: [served[i - 1]]} for i, tier in enumerate(served) if i > 0][::-1]


def backend_params(s: Served, base_url: str, timeout: int) -> dict:
    """One model server as LiteLLM's OpenAI-compatible provider. vLLM serves the model under its key
    (--served-model-name) and each adapter under its name (--lora-modules); TGI's Messages API ignores the name."""
    return {
        "model": f"openai/{s.name}",
        "api_base": f"{base_url.rstrip('/')}/v1",
        # The servers take no key; the OpenAI client needs a non-empty one.
        "api_key": "unused",
        "timeout": timeout,
        "input_cost_per_token": s.cost.input / 1000,
        "output_cost_per_token": s.cost.output / 1000,
    }


@dataclass(frozen=True)
class RedisSettings:
    """How the gateway reaches Redis: `os.environ/` references resolved inside the proxy, never values."""

    ssl: bool = True


def litellm_config(models: dict[str, ModelDeployment], backends: dict[str, str], gateway: Gateway,
                   redis: RedisSettings | None = RedisSettings()) -> dict:
    """LiteLLM's config.yaml. `backends` maps each model key to its server's base URL (its adapters are served
    there too). `redis` None leaves the limit counters in each replica's memory (a single replica, or a test without
    Redis)."""
    names = served(models)
    tiers = served_tiers(models)
    timeout = gateway.request_timeout_seconds
    # model_info.id must be unique per deployment; model_info.tier is LiteLLM's own (free/paid), so not used.
    model_list = [{"model_name": s.name, "litellm_params": backend_params(s, backends[s.model_key], timeout),
                   "model_info": {"id": s.name}} for s in names]
    # A tier is a model group: LiteLLM balances its requests over every model (and adapter) in it.
    model_list += [{"model_name": tier, "litellm_params": backend_params(s, backends[s.model_key], timeout),
                    "model_info": {"id": f"{tier}/{s.name}"}}
                   for tier in tiers for s in names if s.tier == tier]
    if tiers:
        model_list.append({"model_name": AUTO, "litellm_params": {
            "model": "auto_router/complexity_router",
            "complexity_router_config": {"tiers": complexity_tiers(tiers)},
            "complexity_router_default_model": nearest_tier("balanced", tiers),
        }})
    connection = {"host": "os.environ/REDIS_HOST", "port": "os.environ/REDIS_PORT",
                  "password": "os.environ/REDIS_PASSWORD", "ssl": redis.ssl,
                  "socket_timeout": REDIS_TIMEOUT_SECONDS, "socket_connect_timeout": REDIS_TIMEOUT_SECONDS} \
        if redis else None
    litellm_settings: dict = {
        "request_timeout": timeout,
        "callbacks": ["prometheus", f"{HOOKS_MODULE}.unavailable"],
        # LiteLLM's own service metrics, among them its Redis circuit breaker's state (the limits-degraded alert).
        "service_callback": ["prometheus_system"],
        "prometheus_exclude_labels": list(EXCLUDED_METRIC_LABELS),
        # In-cluster only: the Ingress never routes /metrics, and the NetworkPolicy admits Prometheus.
        "require_auth_for_metrics_endpoint": False,
        # Request bodies and answers stay out of logs and metrics labels.
        "turn_off_message_logging": True,
        # Error messages name neither model groups nor fallback wiring (LiteLLM's default appends both).
        "expose_router_debug_in_errors": False,
    }
    if gateway.response_cache.enabled and connection:
        litellm_settings |= {"cache": True, "cache_params": {
            "type": "redis", **connection, "ttl": gateway.response_cache.ttl_seconds}}
    general_settings: dict = {
        "custom_auth": f"{AUTH_MODULE}.user_api_key_auth",
    }
    if connection:
        # Shares the per-key rate-limit counters across replicas (router_settings.redis_* does not).
        general_settings["coordination_redis"] = connection
    return {
        "model_list": model_list,
        "router_settings": router_settings(tiers, timeout),
        "litellm_settings": litellm_settings,
        "general_settings": general_settings,
    }


def router_settings(served: list[str], timeout: int) -> dict:
    """How LiteLLM's router treats a failed call.

    - One retry, and only for what another replica can fix: a request a draining server refuses before sending any
      token (503 after SIGTERM on a spot reclaim or scale-down) or a refused connection goes again, through the
      Service, to another replica. Nothing else is retried: not a timeout (gateway_hooks gives each attempt only
      what is left of the request's time), and not an answer about the request itself (400, 404, 429, or a 500 a
      malformed input can cause, which a retry would only double). A stream that has started is never retried:
      the client already holds tokens.
    - No cooldowns. Each deployment here is a Kubernetes Service in front of a model's replicas, or the model's
      replica router: Kubernetes (or the router's pod watch) takes an unready replica out of it, and a Service with
      none refuses connections, which LiteLLM never cools down for.
      What would put a deployment in cooldown is an answer to one caller's request (a 404 for a route the server
      lacks, a 429, a 500 on a malformed input), and a cooled-down tier fails every other key's requests too."""
    no_retry = {f"{kind}Retries": 0 for kind in ("BadRequestError", "AuthenticationError", "TimeoutError",
                                                  "RateLimitError", "ContentPolicyViolationError", "NotFoundError",
                                                  "InternalServerError")}
    return {"fallbacks": tier_fallbacks(served), "num_retries": 1, "timeout": timeout,
            "retry_policy": {**no_retry, "ServiceUnavailableErrorRetries": 1}, "disable_cooldowns": True}


def allowed_models(entries: list[str], models: dict[str, ModelDeployment]) -> list[str]:
    """A key's `models` expanded to the names a request may carry: a tier admits its group and its members. A model
    key admits the base model only, never its adapters (nor an adapter its base): each is granted by name."""
    if "*" in entries:
        return ["*"]
    names: list[str] = []
    for entry in entries:
        names += [entry] + ([s.name for s in served(models) if s.tier == entry] if entry in TIERS else [])
    return sorted(set(names))


def served_names(models: dict[str, ModelDeployment]) -> list[str]:
    """Every name a request may carry: each model key and adapter, each served tier, and `auto` when a tier is
    served."""
    tiers = served_tiers(models)
    return sorted({*(s.name for s in served(models)), *tiers, *([AUTO] if tiers else [])})


def key_policy(gateway: Gateway, models: dict[str, ModelDeployment]) -> dict:
    """What gateway_auth needs, not secret, so it lives in the ConfigMap (and shows in `plan`): the names the gateway
    serves, the fallback rule, the replicas that share a key's limits when Redis is unreachable, and what each key
    may call and how fast."""
    return {
        "models": served_names(models),
        "fallbacksAcrossGrants": gateway.fallbacks_across_grants,
        "replicas": gateway.replicas,
        "keys": {name: {"models": allowed_models(key.models, models), "requestsPerMinute": key.requests_per_minute,
                        "tokensPerMinute": key.tokens_per_minute} for name, key in gateway.keys.items()},
    }


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_hashes(master_key: str, client_keys: dict[str, str]) -> str:
    """The Secret's content: SHA-256 of the master key (as `admin`) and of each client key, never the keys."""
    return json.dumps({ADMIN: key_hash(master_key), **{name: key_hash(v) for name, v in sorted(client_keys.items())}},
                      sort_keys=True)


def labels() -> dict[str, str]:
    return {"app.kubernetes.io/name": "litellm", "app.kubernetes.io/instance": NAME,
            "app.kubernetes.io/component": "gateway", **PLATFORM_LABELS}


def selector() -> dict[str, str]:
    return {"app.kubernetes.io/name": "litellm", "app.kubernetes.io/instance": NAME}


def probes() -> dict:
    return {
        # Startup loads the config and connects to Redis; allow two minutes.
        "startupProbe": {"httpGet": {"path": "/health/liveliness", "port": "http"}, "periodSeconds": 5,
                         "failureThreshold": 24},
        "readinessProbe": {"httpGet": {"path": "/health/readiness", "port": "http"}, "periodSeconds": 10,
                           "timeoutSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {"httpGet": {"path": "/health/liveliness", "port": "http"}, "periodSeconds": 15,
                          "timeoutSeconds": 5, "failureThreshold": 4},
    }


def pod_spec(config_checksum: str, gateway: Gateway) -> dict:
    secret_env = [{"name": f"REDIS_{part.upper()}", "valueFrom": {"secretKeyRef": {"name": REDIS_SECRET, "key": part}}}
                  for part in ("host", "port", "password")]
    return {
        "metadata": {"labels": labels(), "annotations": {"llm-platform.io/config-checksum": config_checksum}},
        "spec": {
            "nodeSelector": SYSTEM_NODE_LABEL,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            # Spread replicas over nodes and zones, but never block a rollout for it.
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": selector()}}
                for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")],
            # Longer than the ALB's deregistration delay plus the longest request.
            "terminationGracePeriodSeconds": 60,
            "containers": [{
                "name": "litellm",
                "image": versions.LITELLM.reference,
                # One worker per pod, scaled by pods: its metrics and, while Redis is down, its limit counters are
                # per process, and gateway_auth shares a key's limits among the pods the headless Service counts.
                "args": ["--config", f"{CONFIG_DIR}/config.yaml", "--port", str(PORT), "--num_workers", "1"],
                "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
                "env": [
                    # Never fetch the public price list: prices come from the config.
                    {"name": "LITELLM_LOCAL_MODEL_COST_MAP", "value": "True"},
                    {"name": "LITELLM_MASTER_KEY",
                     "valueFrom": {"secretKeyRef": {"name": KEYS_SECRET, "key": "master-key"}}},
                    {"name": POLICY_FILE, "value": f"{CONFIG_DIR}/key-policy.json"},
                    {"name": HASHES_FILE, "value": f"{KEYS_DIR}/hashes.json"},
                    {"name": PEERS, "value": f"{PEERS_SERVICE}.{NAMESPACE}.svc.cluster.local"},
                    {"name": REQUEST_TIMEOUT, "value": str(gateway.request_timeout_seconds)},
                    *({"name": name, "value": value} for name, value in {**REDIS_CLIENT_ENV,
                                                                           **RETRY_BACKOFF_ENV}.items()),
                    *secret_env,
                ],
                "resources": {"requests": {"cpu": CPU_REQUEST, "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
                "securityContext": CONTAINER_SECURITY,
                # The ALB keeps sending for a few seconds after a pod starts terminating.
                "lifecycle": {"preStop": {"sleep": {"seconds": 15}}},
                **probes(),
                "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                                 {"name": "keys", "mountPath": KEYS_DIR, "readOnly": True},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "config", "configMap": {"name": NAME}},
                        {"name": "keys", "secret": {"secretName": KEYS_SECRET,
                                                    "items": [{"key": "hashes.json", "path": "hashes.json"}]}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        },
    }


def peers_service_spec() -> dict:
    """Headless and ready pods only: a DNS lookup of it counts the replicas that take traffic."""
    return {"clusterIP": "None", "selector": selector(), "publishNotReadyAddresses": False,
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]}


# One LiteLLM worker per replica (one process, one core at most): measured by `make bench-gateway` (one core, a
# server answering in 50 ms), it adds ~20 ms at p50 up to ~20 requests/s and 30-35 ms at 30, starts to queue between
# 40 and 60, and saturates its core at 65-80 requests/s. Each request costs it ~22 ms of CPU.
CPU_REQUEST = "500m"
"""Half the core a worker can use: what a replica is sure of on a busy system node; it bursts above it."""
CPU_TARGET_PERCENT = 90
"""Scale out when replicas average 0.45 core: ~20 requests/s each, before latency climbs (README, Gateway)."""


def hpa_spec(gateway: Gateway) -> dict:
    """The proxy is CPU-bound (JSON, auth, limits, metrics); scale on CPU against its request."""
    return {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
        "minReplicas": gateway.replicas,
        "maxReplicas": gateway.max_replicas,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT}}}],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
    }


def service_monitor_spec() -> dict:
    return {
        "selector": {"matchLabels": selector()},
        "namespaceSelector": {"matchNames": [NAMESPACE]},
        # LiteLLM answers /metrics with a redirect to /metrics/. Client-chosen labels are left out at the source.
        "endpoints": [{"port": "http", "path": "/metrics/", "interval": "15s"}],
    }


def proxy_modules() -> dict[str, str]:
    """The Python files the proxy loads from its config directory, by file name."""
    return {f"{module}.py": (PLUGINS_DIR / f"{module}.py").read_text()
            for module in (AUTH_MODULE, HOOKS_MODULE)}


# Component ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GatewayArgs:
    gateway: Gateway
    models: dict[str, ModelDeployment]
    backends: dict[str, str]
    """Model key -> in-cluster base URL of its server."""
    master_key: pulumi.Output[str]
    client_keys: pulumi.Output[str]
    """The secret `gatewayKeys` object, as JSON: key name -> key value."""
    redis_host: pulumi.Input[str]
    redis_port: int
    redis_auth_token: pulumi.Output[str]
    depends_on: list[pulumi.Resource]
    """The system nodes and the monitoring CRDs (ServiceMonitor)."""


class GatewayService(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace
    service: k8s.core.v1.Service
    url: str
    """In-cluster base URL of the OpenAI-compatible API."""

    def __init__(self, name: str, args: GatewayArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:Gateway", name, None, opts)
        self.namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE, "labels": {
            **PLATFORM_LABELS, "pod-security.kubernetes.io/enforce": "restricted",
            # A rollout waits until the ALB sends traffic to the new pod before it stops an old one.
            "elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}}, opts=pulumi.ResourceOptions(parent=self))
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])
        metadata = {"name": NAME, "namespace": NAMESPACE, "labels": labels()}
        redis = opaque_secret(f"{name}-redis", name=REDIS_SECRET, namespace=NAMESPACE, data={
            "host": args.redis_host, "port": str(args.redis_port), "password": args.redis_auth_token},
            opts=in_namespace)
        config_files = {
            # YAML, not JSON: LiteLLM reads it with a YAML 1.1 loader, which takes JSON's `6e-07` for a string.
            "config.yaml": yaml.safe_dump(litellm_config(args.models, args.backends, args.gateway), sort_keys=True),
            **proxy_modules(),
            "key-policy.json": json.dumps(key_policy(args.gateway, args.models), indent=2, sort_keys=True),
        }
        config_map = k8s.core.v1.ConfigMap(f"{name}-config", metadata=metadata, data=config_files, opts=in_namespace)
        hashes = pulumi.Output.all(args.master_key, args.client_keys).apply(
            lambda values: key_hashes(values[0], json.loads(values[1]) if values[1] else {}))
        keys = opaque_secret(f"{name}-keys", name=KEYS_SECRET, namespace=NAMESPACE,
                             data={"hashes.json": hashes, "master-key": args.master_key}, opts=in_namespace)
        checksum = _checksum(config_files)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=metadata,
            spec={"replicas": args.gateway.replicas, "selector": {"matchLabels": selector()},
                  "strategy": surge_one_at_a_time(),
                  "template": pod_spec(checksum, args.gateway)},
            # The HPA owns the replica count once the Deployment exists.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[config_map, keys, redis, *args.depends_on],
                                        ignore_changes=["spec.replicas"]))
        self.service = k8s.core.v1.Service(f"{name}-service", metadata=metadata, spec={
            "type": "ClusterIP", "selector": selector(),
            "ports": [{"name": "http", "port": PORT, "targetPort": "http", "protocol": "TCP"}]}, opts=in_namespace)
        k8s.core.v1.Service(f"{name}-peers", metadata={**metadata, "name": PEERS_SERVICE}, spec=peers_service_spec(),
                            opts=in_namespace)
        if args.gateway.replicas > 1:
            k8s.policy.v1.PodDisruptionBudget(f"{name}-pdb", metadata=metadata, spec=evict_one_at_a_time(selector()),
                                              opts=in_namespace)
        k8s.autoscaling.v2.HorizontalPodAutoscaler(f"{name}-hpa", metadata=metadata, spec=hpa_spec(args.gateway),
                                                   opts=in_namespace)
        k8s.apiextensions.CustomResource(
            f"{name}-servicemonitor", api_version="monitoring.coreos.com/v1", kind="ServiceMonitor",
            metadata=metadata, spec=service_monitor_spec(),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace, *args.depends_on]))
        self.url = f"http://{NAME}.{NAMESPACE}.svc.cluster.local:{PORT}"
        self.register_outputs({"url": self.url})


def _checksum(files: dict[str, str]) -> str:
    """Rolls the pods when the config or the auth module changes (a ConfigMap update alone does not)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
