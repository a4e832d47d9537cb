"""LwsController: the LeaderWorkerSet controller (kubernetes-sigs/lws), which runs each replica of a multi-node model
as one group of pods that start, fail and scale together. Installed only when a model spans nodes."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from catalog import versions
from components.compute.cluster import SYSTEM_NODE_LABEL
from components.shared import helm
from components.shared.labels import PLATFORM_LABELS

NAMESPACE = "lws-system"


def lws_values(replicas: int) -> dict:
    """The controller (and its webhook, which injects each pod's group environment) on the system nodes. The
    chart's default image tag is `main`, pulled on every start: pinned here to the chart's release."""
    return {
        "replicaCount": replicas,
        "image": {"manager": {"tag": versions.LWS_IMAGE_TAG, "pullPolicy": "IfNotPresent"}},
        "nodeSelector": SYSTEM_NODE_LABEL,
        # The chart's values take requests only (its default asks for a whole CPU and 1 GiB).
        "resources": {"requests": {"cpu": "200m", "memory": "256Mi"}},
    }


class LwsController(pulumi.ComponentResource):
    """LeaderWorkerSets depend on its release, which installs their CRD."""

    release: k8s.helm.v3.Release

    def __init__(self, name: str, replicas: int, depends_on: list[pulumi.Resource],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:LwsController", name, None, opts)
        # The chart's pods run non-root without privilege escalation or capabilities, but set no seccomp profile,
        # which `restricted` requires: enforce `baseline`, and warn at `restricted` (as KEDA's namespace does).
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE, "labels": {
            **PLATFORM_LABELS, "pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/warn": "restricted"}}, opts=pulumi.ResourceOptions(parent=self))
        self.release = helm.release(
            f"{name}-release", versions.LWS, release_name="lws", namespace=NAMESPACE, values=lws_values(replicas),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *depends_on]),
        )
        self.register_outputs({"chartVersion": versions.LWS.version})
