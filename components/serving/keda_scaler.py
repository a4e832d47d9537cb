"""KEDA: the operator (its chart, on the system nodes) and one ScaledObject per model server.

Each ScaledObject scales a model's Deployment between its minimum and maximum on the in-cluster Prometheus:
queued requests per server, p99 latency and GPU utilisation, from the recorded series in
`components/observability/signals.py`. KEDA creates an HPA (`keda-hpa-<model>`) that owns the Deployment's replica
count from then on; the Deployment ignores changes to `spec.replicas` (components/serving/model_server.py), so
`pulumi up` never resets it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from catalog import versions
from components.compute.cluster import SYSTEM_NODE_LABEL
from components.observability.signals import scaler_queries
from components.serving import leader_worker_set as lws
from components.serving.model_server import NAMESPACE as INFERENCE_NAMESPACE
from components.serving.model_server import min_servers
from components.shared import helm
from components.shared.labels import PLATFORM_LABELS
from config import ModelDeployment
from config.schema import ScalingPolicy

NAMESPACE = "keda"
OPERATOR = "keda-operator"
METRICS_PORT = 8080


def keda_values(replicas: int) -> dict:
    """Operator, metrics API server and webhooks on the system nodes. Two replicas fail over (one is active at a
    time); the metrics API server is what every HPA reads, so it gets the same."""
    per_pod = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}
    return {
        "operator": {"replicaCount": replicas},
        "metricsServer": {"replicaCount": replicas},
        "nodeSelector": SYSTEM_NODE_LABEL,
        "resources": {"operator": per_pod, "metricServer": per_pod, "webhooks": per_pod},
        "podDisruptionBudget": {part: {"maxUnavailable": 1} for part in ("operator", "metricServer", "webhooks")}
        if replicas > 1 else {},
        # The operator's own metrics (scaler errors, values), scraped by a PodMonitor (observability/monitoring.py).
        "prometheus": {"operator": {"enabled": True, "port": METRICS_PORT}},
        "crds": {"install": True},
    }


def behavior(policy: ScalingPolicy) -> dict:
    return {"stabilizationWindowSeconds": policy.stabilization_seconds,
            "policies": [{"type": "Pods", "value": policy.pods, "periodSeconds": policy.period_seconds}]}


def scale_target(key: str, m: ModelDeployment) -> dict:
    """The Deployment, or a multi-node model's LeaderWorkerSet: KEDA scales it through its scale subresource
    (spec.replicas counts groups), so the model scales by whole groups. The triggers need no change: vLLM's series
    come from each group's leader only, one set per replica, as from a single-node server."""
    if m.multi_node:
        return {"apiVersion": lws.API_VERSION, "kind": lws.KIND, "name": key}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": key}


def scaled_object_spec(key: str, m: ModelDeployment, prometheus_url: str) -> dict:
    scaling = m.autoscaling
    return {
        "scaleTargetRef": scale_target(key, m),
        "minReplicaCount": min_servers(m),
        "maxReplicaCount": m.max_replicas,
        "pollingInterval": scaling.polling_interval_seconds,
        "advanced": {
            # Deleting the ScaledObject leaves the Deployment at its current size rather than at 1.
            "restoreToOriginalReplicaCount": False,
            "horizontalPodAutoscalerConfig": {"behavior": {
                "scaleUp": behavior(scaling.scale_up), "scaleDown": behavior(scaling.scale_down),
            }},
        },
        "triggers": [{
            "type": "prometheus",
            "name": q.name,
            "metricType": q.metric_type,
            # KEDA reads every metadata value as a string.
            "metadata": {"serverAddress": prometheus_url, "query": q.query, "threshold": f"{q.threshold:g}",
                         **({"activationThreshold": f"{q.activation_threshold:g}"}
                            if q.activation_threshold is not None else {})},
        } for q in scaler_queries(key, m)],
    }


class Keda(pulumi.ComponentResource):
    """The KEDA operator; ScaledObjects depend on its release (which installs the CRDs)."""

    release: k8s.helm.v3.Release

    def __init__(self, name: str, replicas: int, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:Keda", name, None, opts)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE, "labels": {
            **PLATFORM_LABELS, "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted"}}, opts=pulumi.ResourceOptions(parent=self))
        self.release = helm.release(
            f"{name}-release", versions.KEDA, release_name="keda", namespace=NAMESPACE, values=keda_values(replicas),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *depends_on]),
        )
        self.register_outputs({"chartVersion": versions.KEDA.version})


@dataclass(frozen=True)
class KedaScalerArgs:
    key: str
    """The `models` key: the Deployment to scale, and the ScaledObject's name."""
    deployment: ModelDeployment
    prometheus_url: str
    depends_on: list[pulumi.Resource]
    """The KEDA release (its CRDs) and the model's Deployment."""


class KedaScaler(pulumi.ComponentResource):
    scaled_object: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: KedaScalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:KedaScaler", name, None, opts)
        self.scaled_object = k8s.apiextensions.CustomResource(
            f"{name}-scaledobject",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata={"name": args.key, "namespace": INFERENCE_NAMESPACE,
                      "labels": {**PLATFORM_LABELS, "app.kubernetes.io/instance": args.key}},
            spec=scaled_object_spec(args.key, args.deployment, args.prometheus_url),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.register_outputs({"scaledObject": args.key})
