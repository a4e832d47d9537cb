"""The replica router as rendered: which models get one, the arguments it runs with, and what the cluster lets it
and its neighbours do (RBAC, NetworkPolicies, probes, disruption). The router running for real in front of servers
is tests/test_replica_router_proxy.py; its argument parser's verdict on the rendered lists, tests/upstream."""

from __future__ import annotations

import pytest
import yaml

import config
from catalog.engines import vllm_extra_arg_problems
from components.edge import gateway
from components.observability import monitoring
from components.serving import model_server, replica_router
from components.serving.vllm_service import vllm_args
from config.errors import ConfigError
from tests.conftest import Rendered
from tests.upstream import router_args

BASE = {"model": "llama-3.1-8b", "gpuPool": "p"}


def deployment(**fields) -> config.ModelDeployment:
    return config.ModelDeployment(**{**BASE, **fields})


def stack(models: dict) -> dict:
    return {"cluster": {"region": "us-west-2"}, "gpuPools": {"p": {"instanceFamilies": ["g6e"], "gpuLimit": 8}},
            "models": models, "gateway": {"ingress": {"enabled": False}}}


def problems(models: dict) -> str:
    with pytest.raises(ConfigError) as error:
        config.parse("t", stack(models))
    return str(error.value)


# Which models are routed, and how the servers are started ------------------------------------------------------

@pytest.mark.parametrize(("fields", "routed", "scale_out"), [
    ({}, False, False),                                                     # one replica: nothing to choose
    ({"maxReplicas": 2}, True, True),                                       # the default policy, cache_aware
    ({"maxReplicas": 2, "routing": {"policy": "round_robin"}}, True, False),  # no tokenizing, no scale-out endpoints
    ({"maxReplicas": 2, "routing": {"policy": "power_of_two"}}, True, False),
    ({"maxReplicas": 2, "routing": {"policy": "none"}}, False, False),      # the Service, as before
    ({"maxReplicas": 2, "engine": "tgi"}, False, False),                    # TGI keeps its Service
])
def test_which_models_are_routed_and_which_servers_open_scale_out(fields, routed, scale_out):
    m = deployment(**fields)
    assert m.routed is routed
    args = vllm_args("m", m, "bucket", 8000) if m.engine == "vllm" else []
    assert ("--enable-scale-out" in args) is scale_out


def test_a_server_behind_cache_aware_keeps_the_flag_its_tokenize_calls_need():
    """Without --enable-scale-out vLLM 0.32 answers the router's render calls 403 and cache_aware silently
    degrades to load balancing: the flag must follow the policy, whatever else the model sets."""
    for fields in ({"maxReplicas": 8}, {"maxReplicas": 2, "enable_prefix_caching": False, "max_num_seqs": 8}):
        assert "--enable-scale-out" in vllm_args("m", deployment(**fields), "bucket", 8000)


def test_the_flag_is_the_platforms_not_an_extra_arg():
    assert any("routing.policy" in p for p in vllm_extra_arg_problems(["--enable-scale-out"]))


@pytest.mark.parametrize(("routing", "key", "allowed"), [
    ({"policy": "consistent_hash"}, "routing.policy", "cache_aware"),
    ({"policy": "kv_aware"}, "routing.policy", "cache_aware"),
    ({"replicas": 0}, "routing.replicas", "must be at least 1"),
    ({"cacheThreshold": 1.5}, "routing.cacheThreshold", "must be at most 1"),
    ({"balanceRelThreshold": 0.5}, "routing.balanceRelThreshold", "must be at least 1"),
    ({"sessionHeader": "x-user"}, "routing.sessionHeader", "is not a known key"),
])
def test_a_bad_routing_setting_names_its_key_and_what_is_allowed(routing, key, allowed):
    message = problems({"m": {**BASE, "maxReplicas": 2, "routing": routing}})
    assert f"models.m.{key}" in message and allowed in message, message


def test_routing_on_a_tgi_model_is_refused_with_the_way_out():
    message = problems({"t": {**BASE, "engine": "tgi", "maxReplicas": 2, "routing": {"policy": "round_robin"}}})
    assert "models.t.routing.policy" in message and "use none" in message, message
    assert config.parse("t", stack({"t": {**BASE, "engine": "tgi", "maxReplicas": 2,
                                          "routing": {"policy": "none"}}})).models["t"].routed is False


# Arguments --------------------------------------------------------------------------------------------------------

def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_router_listens_beyond_loopback_and_discovers_its_own_models_servers():
    m = deployment(maxReplicas=2)
    args = replica_router.router_args("llama-8b", m, 300)
    assert flag(args, "--host") == "0.0.0.0" and flag(args, "--prometheus-host") == "0.0.0.0"
    assert flag(args, "--service-discovery-namespace") == model_server.NAMESPACE
    assert flag(args, "--service-discovery-port") == "8000"
    start = args.index("--selector") + 1
    terms = args[start:next(i for i in range(start, len(args)) if args[i].startswith("--"))]
    server_labels = model_server.labels("llama-8b", "vllm", None)
    assert dict(t.split("=", 1) for t in terms).items() <= server_labels.items()
    # ...and only them: another model's servers carry a different instance label.
    assert not dict(t.split("=", 1) for t in terms).items() <= model_server.labels("llama-70b", "vllm", None).items()
    assert flag(args, "--request-timeout-secs") == "300" and flag(args, "--retry-max-retries") == "2"
    assert "--disable-circuit-breaker" in args
    assert (flag(args, "--cache-threshold"), flag(args, "--balance-abs-threshold")) == ("0.7", "4")


def test_the_cache_knobs_go_only_to_cache_aware():
    args = replica_router.router_args("m", deployment(maxReplicas=2, routing={"policy": "round_robin",
                                                                            "cacheThreshold": 0.9}), 60)
    assert flag(args, "--policy") == "round_robin" and "--cache-threshold" not in args


def test_the_parser_check_catches_a_router_that_would_listen_on_loopback():
    spec = {"template": {"spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8000},
                                                            {"name": "metrics", "containerPort": 29000}]}]}}}
    args = replica_router.router_args("m", deployment(maxReplicas=2), 60)
    assert router_args.problems(args, spec) == []
    loopback = list(args)
    loopback[loopback.index("--host") + 1] = "127.0.0.1"
    assert any("host" in p for p in router_args.problems(loopback, spec))
    assert router_args.problems([a for a in args if a != "--service-discovery"], spec)
    assert router_args.problems(args + ["--policy", "smartest"], spec)


# Rendered prod ----------------------------------------------------------------------------------------------------

def routers(stack: Rendered) -> dict[str, dict]:
    return {d["metadata"]["labels"]["app.kubernetes.io/instance"]: d for d in stack.kind("Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == replica_router.COMPONENT}


def test_prod_routes_every_vllm_model_with_room_for_two_and_only_those(prod: Rendered):
    expected = {k for k, m in prod.config.models.items() if m.engine == "vllm" and m.max_replicas > 1}
    assert set(routers(prod)) == expected and expected
    assert not routers(prod).keys() & {k for k, m in prod.config.models.items() if m.engine == "tgi"}


def test_a_router_pod_is_locked_down_probed_and_spread(prod: Rendered):
    for key, d in routers(prod).items():
        pod = d["spec"]["template"]["spec"]
        [c] = pod["containers"]
        assert d["spec"]["replicas"] == 2 and pod["serviceAccountName"] == f"{key}-router"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert c["readinessProbe"]["httpGet"]["path"] == "/readiness"
        assert c["livenessProbe"]["httpGet"]["path"] == "/liveness"
        assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
        assert {t["topologyKey"] for t in pod["topologySpreadConstraints"]} == {
            "kubernetes.io/hostname", "topology.kubernetes.io/zone"}
        assert pod["nodeSelector"] == {"llm-platform.io/node-role": "system"}
        assert c["image"].startswith("vllm/vllm-router:") and ":latest" not in c["image"]
        # Unready while its model has no ready server: `pulumi up` must not wait for it.
        assert d["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"


def test_a_router_may_only_read_pods_in_the_serving_namespace(prod: Rendered):
    roles = {r["metadata"]["name"]: r for r in prod.kind("Role")}
    bindings = {b["metadata"]["name"]: b for b in prod.kind("RoleBinding")}
    assert not [r for r in prod.kind("ClusterRole") if "router" in r["metadata"]["name"]]
    for key in routers(prod):
        role, binding = roles[f"{key}-router"], bindings[f"{key}-router"]
        assert role["metadata"]["namespace"] == model_server.NAMESPACE
        assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
        assert binding["roleRef"]["name"] == f"{key}-router"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": f"{key}-router",
                                        "namespace": model_server.NAMESPACE}]


def test_each_router_has_a_service_a_pdb_and_is_scraped(prod: Rendered):
    services = {s["metadata"]["name"]: s for s in prod.kind("Service")}
    pdbs = {p["metadata"]["name"]: p for p in prod.kind("PodDisruptionBudget")}
    [monitor] = [p for p in prod.kind("PodMonitor") if p["metadata"]["name"] == "replica-routers"]
    for key, d in routers(prod).items():
        labels = d["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert services[f"{key}-router"]["spec"]["selector"].items() <= labels.items()
        assert pdbs[f"{key}-router"]["spec"]["maxUnavailable"] == 1
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in ports
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [model_server.NAMESPACE]}


def test_the_gateway_calls_each_routed_models_router(prod: Rendered):
    [configmap] = [c for c in prod.kind("ConfigMap") if c["metadata"]["name"] == gateway.NAME]
    bases = {e["model_name"]: e["litellm_params"]["api_base"] for e in
             yaml.safe_load(configmap["data"]["config.yaml"])["model_list"] if e["model_name"] in prod.config.models}
    for key, m in prod.config.models.items():
        host = f"{key}-router" if m.routed else key
        assert bases[key].startswith(f"http://{host}.{model_server.NAMESPACE}.svc.cluster.local:"), bases[key]


# NetworkPolicies: evaluated against the pods' labels ---------------------------------------------------------------

def selects(selector: dict, labels: dict[str, str]) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        value, op = labels.get(expression["key"]), expression["operator"]
        if (op == "In" and value not in expression["values"]) or (op == "NotIn" and value in expression["values"]):
            return False
    return True


def admitted(policies: list[dict], namespace: str, pod: dict[str, str], peer_namespace: str,
             peer: dict[str, str]) -> set:
    """The ports on which `pod` admits `peer`, by every policy in `namespace` that selects it."""
    ports = set()
    for p in policies:
        if p["metadata"]["namespace"] != namespace or not selects(p["spec"]["podSelector"], pod):
            continue
        for rule in p["spec"].get("ingress", []):
            for source in rule["from"]:
                if "ipBlock" in source:
                    continue
                ns_ok = selects(source.get("namespaceSelector", {}),
                                {"kubernetes.io/metadata.name": peer_namespace})
                if ns_ok and selects(source.get("podSelector", {}), peer):
                    ports |= {port["port"] for port in rule["ports"]}
    return ports


def test_servers_of_a_routed_model_admit_their_router_and_prometheus_not_the_gateway(prod: Rendered):
    policies = prod.kind("NetworkPolicy")
    ns, gateway_pod = model_server.NAMESPACE, gateway.labels()
    prometheus = ("monitoring", monitoring.PROMETHEUS_POD_LABELS)
    for key, m in prod.config.models.items():
        server = model_server.labels(key, m.engine, m.tier)
        assert admitted(policies, ns, server, *prometheus) == {"http"}
        if m.routed:
            assert admitted(policies, ns, server, "llm-gateway", gateway_pod) == set(), key
            assert admitted(policies, ns, server, ns, replica_router.labels(key)) == {"http"}, key
            router = replica_router.labels(key)
            assert admitted(policies, ns, router, "llm-gateway", gateway_pod) == {"http"}
            assert admitted(policies, ns, router, *prometheus) == {"metrics"}
            others = [k for k in prod.config.models if k != key and prod.config.models[k].routed]
            for other in others:  # another model's router never reaches these servers
                assert admitted(policies, ns, server, ns, replica_router.labels(other)) == set(), (key, other)
        else:
            assert admitted(policies, ns, server, "llm-gateway", gateway_pod) == {"http"}, key
