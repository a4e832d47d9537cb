"""KEDA: a ScaledObject per model on the in-cluster Prometheus, with the seed's triggers and behaviour by default,
per-model overrides, and a Deployment whose replica count `pulumi up` leaves to the autoscaler."""

from __future__ import annotations

import config
from components.observability.signals import recorded_names
from components.serving.keda_scaler import scaled_object_spec
from tests import metric_names
from tests.conftest import Rendered

SEED_TRIGGERS = {"waiting-requests": ("10", "AverageValue"), "p99-latency": ("5", "Value"),
                 "gpu-utilization": ("70", "Value")}


def scaled_objects(stack: Rendered) -> dict[str, dict]:
    return {m["metadata"]["name"]: m for m in stack.kind("ScaledObject")}


def test_every_model_has_a_scaled_object_on_its_workload(stack: Rendered):
    """A single-node model scales its Deployment; a multi-node one its LeaderWorkerSet, by whole groups."""
    objects = scaled_objects(stack)
    workloads = {d["metadata"]["name"]: d for d in [*stack.kind("Deployment"), *stack.kind("LeaderWorkerSet")]
                 if d["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"}
    assert set(objects) == set(workloads) == set(stack.config.models)
    for name, obj in objects.items():
        target = obj["spec"]["scaleTargetRef"]
        workload = workloads[name]
        assert (target.get("apiVersion", "apps/v1"), target["kind"], target["name"]) == (
            workload["apiVersion"], workload["kind"], name)
        assert workload["kind"] == ("LeaderWorkerSet" if stack.config.models[name].multi_node else "Deployment")
        assert obj["metadata"]["namespace"] == workload["metadata"]["namespace"]


def test_replica_bounds_follow_the_config(prod: Rendered):
    bounds = {name: (o["spec"]["minReplicaCount"], o["spec"]["maxReplicaCount"])
              for name, o in scaled_objects(prod).items()}
    assert bounds == {"llama-8b": (2, 8), "llama-70b": (2, 4), "llama-405b-fp8": (1, 2), "llama-70b-tgi": (1, 2),
                      "llama-405b-bf16": (0, 2)}


def test_a_model_at_zero_is_woken_by_the_gateway_request_counter(dev: Rendered):
    [(name, obj)] = scaled_objects(dev).items()
    model = dev.config.models[name]
    assert model.min_replicas == 0 and obj["spec"]["minReplicaCount"] == 0
    [wake] = [t for t in obj["spec"]["triggers"] if t["name"] == "gateway-requests"]
    query = wake["metadata"]["query"]
    # Requests by the model's key, its tier and the router; the engine's own signals vanish at zero replicas.
    assert f'litellm_proxy_total_requests_metric_total{{requested_model=~"{name}|{model.tier}|auto"}}' in query
    assert "vllm:" not in query and wake["metadata"]["activationThreshold"] == "0"
    # It only activates: above one server it never asks for more than the engine triggers.
    assert float(wake["metadata"]["threshold"]) >= 1e5
    [deployment] = [m for m in dev.manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == name]
    assert deployment["spec"]["replicas"] == 0
    assert f"{name}: scaled to zero, the first request through the gateway" in dev.stdout


def test_only_models_that_scale_to_zero_have_a_gateway_trigger(prod: Rendered):
    for name, obj in scaled_objects(prod).items():
        at_zero = prod.config.models[name].min_replicas == 0
        assert ("gateway-requests" in {t["name"] for t in obj["spec"]["triggers"]}) == at_zero, name
    assert prod.config.models["llama-405b-bf16"].min_replicas == 0  # the multi-node alternative waits for a request


def test_triggers_default_to_the_seed_and_follow_overrides(prod: Rendered):
    for name, obj in scaled_objects(prod).items():
        triggers = {t["name"]: (t["metadata"]["threshold"], t["metricType"]) for t in obj["spec"]["triggers"]}
        expected = dict(SEED_TRIGGERS)
        if name.startswith("llama-405b"):  # Pulumi.prod.yaml: autoscaling.p99LatencySeconds: 20
            expected["p99-latency"] = ("20", "Value")
        if name == "llama-405b-bf16":  # minReplicas 0: the gateway's request counter wakes it
            expected["gateway-requests"] = triggers["gateway-requests"]
        assert triggers == expected, name
        for t in obj["spec"]["triggers"]:
            assert t["type"] == "prometheus"
            assert t["metricType"] in ("AverageValue", "Value")  # the CRD does not enumerate them


def test_triggers_query_the_in_cluster_prometheus_of_the_chart(stack: Rendered):
    release = stack.releases["kube-prometheus-stack"]
    service = f"{release['values']['fullnameOverride']}-prometheus"
    url = f"http://{service}.{release['namespace']}.svc.cluster.local:9090"
    for obj in scaled_objects(stack).values():
        assert {t["metadata"]["serverAddress"] for t in obj["spec"]["triggers"]} == {url}


def test_every_query_sums_the_models_recorded_series(stack: Rendered):
    """One series per query (KEDA rejects several), filtered to the model, read from the recording rules."""
    recorded = recorded_names(stack.config)
    for name, obj in scaled_objects(stack).items():
        for t in obj["spec"]["triggers"]:
            if t["name"] == "gateway-requests":  # the gateway's counter; checked on its own below
                continue
            query = t["metadata"]["query"]
            assert query.startswith("sum(") and query.endswith(" or vector(0)"), query
            assert f'{{model="{name}"}}' in query
            used = metric_names.metric_names(query)
            assert used and used <= recorded, used - recorded


def test_behaviour_defaults_to_the_seed(prod: Rendered):
    for obj in scaled_objects(prod).values():
        behavior = obj["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        assert behavior["scaleUp"] == {"stabilizationWindowSeconds": 60,
                                       "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]}
        assert behavior["scaleDown"] == {"stabilizationWindowSeconds": 300,
                                         "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}


def test_behaviour_and_triggers_are_overridable_per_model():
    m = config.ModelDeployment.model_validate({
        "model": "llama-3.1-8b", "gpuPool": "p", "maxReplicas": 3,
        "autoscaling": {"p99LatencySeconds": None, "gpuUtilizationPercent": 85.5,
                        "scaleUp": {"stabilizationSeconds": 0, "pods": 4, "periodSeconds": 30}},
    })
    spec = scaled_object_spec("m", m, "http://prometheus:9090")
    assert [(t["name"], t["metadata"]["threshold"]) for t in spec["triggers"]] == [
        ("waiting-requests", "10"), ("gpu-utilization", "85.5")]
    up = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleUp"]
    assert up == {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 4, "periodSeconds": 30}]}


def test_pulumi_up_never_resets_a_scaled_replica_count(stack: Rendered):
    """KEDA's HPA owns spec.replicas once the Deployment exists. Each model Deployment carries
    `ignore_changes=["spec.replicas"]`: with server-side apply, pulumi-kubernetes then drops the field from its
    apply when the HPA's field manager owns it, or sends the live value (provider/pkg/await/await.go,
    handleSSAIgnoreFields), so an update (a new image, a changed flag) keeps the current count. The program's
    value is used only when the Deployment is created."""
    for server in stack.of_type("kubernetes:apps/v1:Deployment"):
        if server["inputs"]["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server":
            assert "spec.replicas" in server.get("ignoreChanges", []), server["name"]
            model = stack.config.models[server["inputs"]["metadata"]["name"]]
            assert server["inputs"]["spec"]["replicas"] == model.min_replicas


def test_keda_runs_on_the_system_nodes_and_fails_over(stack: Rendered):
    values = stack.releases["keda"]["values"]
    assert values["nodeSelector"] == {"llm-platform.io/node-role": "system"}
    system_nodes = stack.of_type("aws:eks/nodeGroup:NodeGroup")[0]["inputs"]["scalingConfig"]["minSize"]
    assert values["operator"]["replicaCount"] == values["metricsServer"]["replicaCount"] <= system_nodes
    assert stack.releases["keda"]["namespace"] == "keda"
