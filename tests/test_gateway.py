"""The gateway, Redis and the edge: the rendered LiteLLM config, key policy, NetworkPolicies, Ingress, IAM and
ElastiCache, and the config errors. The real LiteLLM runs in tests/test_gateway_proxy.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import config
from components.edge import gateway, ingress
from gateway_plugins import gateway_auth, gateway_hooks
from tests.conftest import Rendered
from tests.test_config import raw, stack_values


def _config(stack: Rendered) -> dict:
    [cm] = [c for c in stack.kind("ConfigMap") if c["metadata"]["name"] == gateway.NAME]
    return yaml.safe_load(cm["data"]["config.yaml"])


@pytest.mark.parametrize(("wanted", "served", "expected"), [
    ("fast", ["fast", "balanced", "quality"], "fast"),
    ("balanced", ["fast", "quality"], "quality"),  # a tie goes to the more capable tier
    ("fast", ["balanced", "quality"], "balanced"),
    ("quality", ["fast"], "fast"),
    ("quality", ["fast", "balanced"], "balanced"),
])
def test_a_missing_tier_goes_to_the_nearest_served_one(wanted, served, expected):
    assert gateway.nearest_tier(wanted, served) == expected


def test_every_model_is_reachable_by_key_tier_and_router(prod: Rendered):
    cfg = _config(prod)
    names = {}
    for entry in cfg["model_list"]:
        names.setdefault(entry["model_name"], []).append(entry["litellm_params"])
    for key, m in prod.config.models.items():
        [params] = names[key]
        # A vLLM model with room for a second replica is called through its replica router; others by their Service.
        service = f"{key}-router" if m.engine == "vllm" and m.max_replicas > 1 else key
        assert params["api_base"] == f"http://{service}.llm-inference.svc.cluster.local:{8080 if m.engine == 'tgi' else 8000}/v1"
        assert params["model"] == f"openai/{key}" and params["timeout"] == 300
        if m.tier:
            assert params in names[m.tier]
    [router] = names["auto"]
    assert router["model"] == "auto_router/complexity_router"
    assert router["complexity_router_config"]["tiers"] == {
        "SIMPLE": "fast", "MEDIUM": "balanced", "COMPLEX": "quality", "REASONING": "quality"}
    # The TGI 70B has no tier: reachable by its key only.
    assert "llama-70b-tgi" not in {p["model"].split("/")[1] for t in ("fast", "balanced", "quality") for p in names[t]}


def test_tiers_fall_back_one_step_down(prod: Rendered, dev: Rendered):
    assert _config(prod)["router_settings"]["fallbacks"] == [{"quality": ["balanced"]}, {"balanced": ["fast"]}]
    assert _config(dev)["router_settings"]["fallbacks"] == []


def test_costs_are_per_token_from_the_config(prod: Rendered):
    """A model's prices, or an adapter's own (else its base model's)."""
    models = prod.config.models
    prices = {key: m.cost_per_1k_tokens for key, m in models.items()}
    prices |= {name: a.cost_per_1k_tokens or m.cost_per_1k_tokens for m in models.values()
               for name, a in m.adapters.items()}
    priced = set()
    for entry in _config(prod)["model_list"]:
        params = entry["litellm_params"]
        if params["model"].startswith("openai/"):
            cost = prices[params["model"].split("/")[1]]
            assert params["input_cost_per_token"] == pytest.approx(cost.input / 1000)
            assert params["output_cost_per_token"] == pytest.approx(cost.output / 1000)
            priced.add(params["model"].split("/")[1])
    assert priced == set(prices)
    assert models["llama-405b-fp8"].cost_per_1k_tokens.output == 0.012
    # support-en has its own price; sql-assistant inherits llama-8b's.
    assert prices["support-en"].output == 0.0009 and prices["sql-assistant"] == models["llama-8b"].cost_per_1k_tokens


def test_limits_are_shared_through_redis_and_metrics_are_open_in_cluster(prod: Rendered):
    cfg = _config(prod)
    redis = cfg["general_settings"]["coordination_redis"]
    assert redis == {"host": "os.environ/REDIS_HOST", "port": "os.environ/REDIS_PORT",
                     "password": "os.environ/REDIS_PASSWORD", "ssl": True,
                     "socket_timeout": 0.25, "socket_connect_timeout": 0.25}
    assert cfg["litellm_settings"]["require_auth_for_metrics_endpoint"] is False
    assert "cache" not in cfg["litellm_settings"]  # gateway.responseCache is off by default
    assert cfg["general_settings"]["custom_auth"] == "gateway_auth.user_api_key_auth"


def test_one_callers_failures_never_cool_a_deployment_down_for_the_others(prod: Rendered):
    """LiteLLM's router cools a deployment down after a 404, 429 or 5xx answer to any caller's request; each
    deployment here is a whole model behind its Service, so that would take the tier away from every key."""
    router = _config(prod)["router_settings"]
    assert router["disable_cooldowns"] is True
    # One retry, for what another replica can fix; never for a timeout (the request's time is spent) or for an
    # answer about the request itself.
    assert router["num_retries"] == 1
    policy = router["retry_policy"]
    assert policy["ServiceUnavailableErrorRetries"] == 1
    assert all(policy[f"{kind}Retries"] == 0 for kind in ("TimeoutError", "BadRequestError", "RateLimitError",
                                                          "NotFoundError", "AuthenticationError", "InternalServerError"))


def test_metrics_leave_out_every_label_a_client_chooses_and_errors_name_no_internals(prod: Rendered):
    settings = _config(prod)["litellm_settings"]
    assert {"client_ip", "user_agent", "hashed_api_key", "end_user", "user", "route"} <= set(
        settings["prometheus_exclude_labels"])
    assert "requested_model" not in settings["prometheus_exclude_labels"]  # KEDA wakes models on it
    assert "api_key_alias" not in settings["prometheus_exclude_labels"]  # bounded by gateway.keys
    assert settings["service_callback"] == ["prometheus_system"]  # the Redis circuit breaker's state
    assert settings["expose_router_debug_in_errors"] is False


def test_the_response_cache_uses_redis_with_its_ttl():
    values = stack_values("prod")
    values["llm-platform:gateway"]["responseCache"] = {"enabled": True, "ttlSeconds": 120}
    cfg = config.parse("prod", raw(values))
    settings = gateway.litellm_config(cfg.models, {k: "http://x" for k in cfg.models}, cfg.gateway)["litellm_settings"]
    assert settings["cache"] is True and settings["cache_params"]["type"] == "redis"
    assert settings["cache_params"]["ttl"] == 120 and settings["cache_params"]["password"] == "os.environ/REDIS_PASSWORD"
    assert settings["cache_params"]["socket_timeout"] == 0.25


def test_key_policy_expands_tiers_and_keeps_limits(prod: Rendered):
    [cm] = [c for c in prod.kind("ConfigMap") if c["metadata"]["name"] == gateway.NAME]
    policy = json.loads(cm["data"]["key-policy.json"])
    assert policy["keys"]["search-app"] == {"models": ["auto", "fast", "llama-8b"], "requestsPerMinute": 600,
                                            "tokensPerMinute": 400000}
    assert policy["keys"]["research"]["models"] == ["*"]
    served = {*prod.config.models, "support-en", "support-de", "sql-assistant", "fast", "balanced", "quality", "auto"}
    assert set(policy["models"]) == served
    # Adapters granted without their base model: the key reaches them and nothing else.
    assert policy["keys"]["support-desk"]["models"] == ["support-de", "support-en"]
    assert policy["fallbacksAcrossGrants"] is True and policy["replicas"] == prod.config.gateway.replicas
    # The auth and hooks modules ship beside the config, as the files in this repository.
    assert cm["data"]["gateway_auth.py"] == Path(gateway_auth.__file__).read_text()
    assert "gateway_hooks.py" in cm["data"]


def test_a_stack_without_tiers_serves_no_router(dev: Rendered):
    assert gateway.served_names({}) == []
    [cm] = [c for c in dev.kind("ConfigMap") if c["metadata"]["name"] == gateway.NAME]
    assert set(json.loads(cm["data"]["key-policy.json"])["models"]) == {*dev.config.models, "fast", "auto"}


def test_the_program_and_the_proxy_modules_agree_on_names():
    assert (gateway.POLICY_FILE, gateway.HASHES_FILE, gateway.ADMIN, gateway.PEERS) == (
        gateway_auth.POLICY_FILE, gateway_auth.HASHES_FILE, gateway_auth.ADMIN, gateway_auth.PEERS)
    assert gateway.REQUEST_TIMEOUT == gateway_hooks.REQUEST_TIMEOUT
    assert gateway.key_hash("sk-x") == gateway_auth.key_hash("sk-x")
    assert isinstance(gateway_hooks.unavailable, gateway_hooks.ModelUnavailable)


def test_the_load_balancer_forwards_exactly_the_routes_a_client_key_may_call():
    """An Ingress path the proxy refuses would be dead; a client route the Ingress does not forward would work
    inside the cluster only. Both lists change together (README, Gateway)."""
    forwarded = {(path, kind) for path, kind in gateway.CLIENT_PATHS.items()}

    def covered(route: str) -> bool:
        return any(route == path if kind == "Exact" else route == path or route.startswith(path + "/")
                   for path, kind in forwarded)

    routes = {route for _, route in gateway_auth.CLIENT_ROUTES}
    assert all(covered(route) for route in routes), routes
    assert all(any(covered(route) and (route == path or route.startswith(path)) for route in routes)
               for path, _ in forwarded), forwarded


def test_the_gateway_holds_only_hashes():
    text = gateway.key_hashes("sk-master", {"team": "sk-team-secret"})
    assert "sk-team-secret" not in text and "sk-master" not in text
    assert json.loads(text) == {"admin": gateway.key_hash("sk-master"), "team": gateway.key_hash("sk-team-secret")}


# Config errors --------------------------------------------------------------------------------------------------

def _problems(path: str, value) -> dict[str, str]:
    values = stack_values("prod")
    node = values
    keys = path.split(".")
    for part in keys[:-1]:
        node = node.setdefault(part, {})
    node[keys[-1]] = value
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(values))
    return {p.key: p.allowed for p in raised.value.problems}


def test_a_key_on_a_tier_no_model_serves_is_rejected():
    values = stack_values("dev")
    values["llm-platform:gateway"]["keys"]["dev-team"]["models"] = ["quality"]
    with pytest.raises(config.ConfigError) as raised:
        config.parse("dev", raw(values))
    [problem] = raised.value.problems
    assert problem.key == "gateway.keys.dev-team.models" and "no model serves tier 'quality'" in problem.allowed


def test_a_key_on_an_unknown_model_is_rejected_with_the_choices():
    problems = _problems("llm-platform:gateway.keys.research.models", ["llama-9000"])
    assert "allowed: a model key (llama-8b, llama-70b" in problems["gateway.keys.research.models"]


@pytest.mark.parametrize("limit", ["requestsPerMinute", "tokensPerMinute"])
def test_limits_must_be_positive(limit):
    problems = _problems(f"llm-platform:gateway.keys.research.{limit}", 0)
    assert "must be more than 0" in problems[f"gateway.keys.research.{limit}"]


def test_a_certificate_arn_of_the_wrong_shape_is_rejected():
    problems = _problems("llm-platform:gateway.ingress.certificateArn", "arn:aws:iam::123456789012:server-certificate/x")
    assert "gateway.ingress.certificateArn" in problems


def test_a_certificate_needs_exactly_one_source():
    values = stack_values("prod")
    values["llm-platform:gateway"]["ingress"]["certificateArn"] = (
        "arn:aws:acm:us-east-1:123456789012:certificate/12345678-1234-1234-1234-123456789012")
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(values))
    assert "set exactly one" in {p.key: p.allowed for p in raised.value.problems}["gateway.ingress"]


def test_a_redis_node_type_that_is_not_a_cache_type_is_rejected():
    problems = _problems("llm-platform:redis.nodeType", "m7g.large")
    assert "redis.nodeType" in problems


# Rendered resources ---------------------------------------------------------------------------------------------

def _allowed(policies: list[dict], namespace: str, pod: dict[str, str], source_ns: str, source: dict[str, str],
             port: str) -> bool:
    """Whether `source` may reach `pod` on `port` under NetworkPolicy semantics (ingress only)."""
    selecting = [p for p in policies if p["metadata"]["namespace"] == namespace and all(
        pod.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())]
    if not selecting:
        return True
    for p in selecting:
        for rule in p["spec"].get("ingress", []):
            ports_ok = any(str(r["port"]) == port for r in rule.get("ports", [])) or not rule.get("ports")
            for peer in rule.get("from", []):
                ns_ok = peer.get("namespaceSelector", {}).get("matchLabels", {}).get(
                    "kubernetes.io/metadata.name") == source_ns
                pod_ok = all(source.get(k) == v for k, v in peer.get("podSelector", {}).get("matchLabels", {}).items())
                if ports_ok and ns_ok and pod_ok:
                    return True
    return False


def test_only_the_gateway_and_prometheus_reach_the_model_servers(stack: Rendered):
    policies = stack.kind("NetworkPolicy")
    server = {"app.kubernetes.io/component": "model-server", "app.kubernetes.io/instance": "llama-8b"}
    allowed = lambda ns, labels: _allowed(policies, "llm-inference", server, ns, labels, "http")  # noqa: E731
    assert allowed("llm-gateway", gateway.selector())
    assert allowed("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert not allowed("default", {"app": "curl"})
    assert not allowed("llm-gateway", {"app": "other"})
    assert not allowed("monitoring", {"app.kubernetes.io/name": "grafana"})
    assert not allowed("llm-inference", {"app.kubernetes.io/component": "model-server"})


def test_the_vpc_cni_enforces_network_policies(stack: Rendered):
    [cni] = [r for r in stack.of_type("aws:eks/addon:Addon") if r["inputs"]["addonName"] == "vpc-cni"]
    assert json.loads(cni["inputs"]["configurationValues"]) == {"enableNetworkPolicy": "true"}


def test_the_ingress_routes_only_the_client_routes_and_health_over_tls(prod: Rendered):
    [ing] = prod.kind("Ingress")
    paths = {(p["path"], p["pathType"]) for r in ing["spec"]["rules"] for p in r["http"]["paths"]}
    assert paths == {("/v1/chat/completions", "Exact"), ("/v1/completions", "Exact"), ("/v1/models", "Prefix"),
                     ("/health/liveliness", "Exact"), ("/health/readiness", "Exact")}
    assert ing["spec"]["rules"][0]["host"] == "llm.example.com"
    notes = ing["metadata"]["annotations"]
    assert notes["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert notes["alb.ingress.kubernetes.io/ssl-policy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    attributes = notes["alb.ingress.kubernetes.io/load-balancer-attributes"].split(",")
    assert "idle_timeout.timeout_seconds=300" in attributes
    # The master key is refused on any request carrying X-Forwarded-For: the ALB must keep adding it.
    assert "routing.http.xff_header_processing.mode=append" in attributes
    assert "routing.http.drop_invalid_header_fields.enabled=true" in attributes
    assert notes["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:us-east-1:")
    assert "stickiness" not in notes["alb.ingress.kubernetes.io/target-group-attributes"]
    assert prod.outputs["gatewayUrl"] == "https://llm.example.com"


def test_sticky_sessions_are_an_option():
    cfg = config.parse("prod", raw(_with(stack_values("prod"), "stickySessions", True)))
    notes = ingress.ingress_annotations(cfg.gateway.ingress, "arn", 300)
    assert "stickiness.enabled=true" in notes["alb.ingress.kubernetes.io/target-group-attributes"]


def _with(values: dict, key: str, value) -> dict:
    values["llm-platform:gateway"]["ingress"][key] = value
    return values


def test_the_controller_may_change_only_this_clusters_load_balancers():
    policy = ingress.controller_policy("llm-prod")
    mutating = [s for s in policy["Statement"] if any(
        a.split(":")[1].startswith(("Delete", "Modify", "Set", "Register", "Deregister", "Revoke"))
        for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert mutating
    for statement in mutating:
        if statement["Sid"] == "ListenersAndRules":
            continue  # listeners and rules have no tags; they live on this cluster's load balancers
        text = json.dumps(statement.get("Condition", {}))
        assert "llm-prod" in text, statement["Sid"]


def test_the_controller_has_its_own_pod_identity(prod: Rendered):
    [assoc] = [r for r in prod.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")
               if r["inputs"]["serviceAccount"] == "aws-load-balancer-controller"]
    assert assoc["inputs"]["namespace"] == "kube-system"


def test_redis_is_private_encrypted_and_fails_over_in_prod(prod: Rendered, dev: Rendered):
    [group] = prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    g = group["inputs"]
    assert g["transitEncryptionEnabled"] is True and g["atRestEncryptionEnabled"] is True
    assert g["kmsKeyId"].startswith("arn:aws:kms:") and g["authToken"] == "[secret]"
    assert (g["engine"], g["engineVersion"], g["nodeType"]) == ("valkey", "8.2", "cache.r7g.large")
    assert g["numCacheClusters"] == 3 and g["automaticFailoverEnabled"] and g["multiAzEnabled"]
    [dev_group] = dev.of_type("aws:elasticache/replicationGroup:ReplicationGroup")
    assert dev_group["inputs"]["numCacheClusters"] == 1 and not dev_group["inputs"]["automaticFailoverEnabled"]
    [params] = prod.of_type("aws:elasticache/parameterGroup:ParameterGroup")
    assert params["inputs"]["family"] == "valkey8"
    assert {"name": "maxmemory-policy", "value": "allkeys-lru"} in params["inputs"]["parameters"]
    [sg] = [r for r in prod.of_type("aws:ec2/securityGroup:SecurityGroup") if "Redis" in r["inputs"]["description"]]
    [rule] = sg["inputs"]["ingress"]
    assert rule["securityGroups"] == ["sg-0clustermock"] and rule["fromPort"] == rule["toPort"] == 6379
    assert "cidrBlocks" not in rule


def test_the_gateway_pods_are_hardened_probed_and_scraped(prod: Rendered):
    [deploy] = [d for d in prod.kind("Deployment") if d["metadata"]["name"] == gateway.NAME]
    pod = deploy["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert c["image"] == "ghcr.io/berriai/litellm-non_root:v1.108.7"
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    env = {e["name"]: e for e in c["env"]}
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"]["value"] == "True"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "redis-connection", "key": "password"}
    assert "value" not in env["LITELLM_MASTER_KEY"]
    assert deploy["spec"]["replicas"] == 3 and "requests" in c["resources"]
    [pdb] = [p for p in prod.kind("PodDisruptionBudget") if p["metadata"]["namespace"] == gateway.NAMESPACE]
    assert pdb["spec"]["maxUnavailable"] == 1
    [hpa] = prod.kind("HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    [monitor] = [m for m in prod.kind("ServiceMonitor") if m["metadata"]["name"] == gateway.NAME]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics/" and "metricRelabelings" not in endpoint
    assert env[gateway.PEERS]["value"] == f"{gateway.PEERS_SERVICE}.llm-gateway.svc.cluster.local"
    assert env[gateway.REQUEST_TIMEOUT]["value"] == "300"
    assert env["REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT"]["value"] == "2"


def test_a_headless_service_lists_the_ready_gateway_replicas(prod: Rendered):
    [peers] = [s for s in prod.kind("Service") if s["metadata"]["name"] == gateway.PEERS_SERVICE]
    assert peers["metadata"]["namespace"] == gateway.NAMESPACE
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"] is False
    assert peers["spec"]["selector"] == gateway.selector()
