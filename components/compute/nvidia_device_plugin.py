"""NvidiaDevicePlugin: advertises `nvidia.com/gpu` on AL2023 GPU nodes (Bottlerocket's NVIDIA variants ship their own)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from catalog import versions
from components.compute.gpu_node_pool import AMI_FAMILY_LABEL, GPU_TAINT
from components.shared import helm

NAMESPACE = "kube-system"


def device_plugin_values() -> dict:
    """Run only on NVIDIA nodes of AL2023 pools. The chart's default affinity expects Node Feature Discovery labels,
    which this platform does not install; Karpenter's own GPU label says the same thing."""
    return {
        "tolerations": [
            {"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]},
            {"key": "CriticalAddonsOnly", "operator": "Exists"},
        ],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [
                {"key": "karpenter.k8s.aws/instance-gpu-manufacturer", "operator": "In", "values": ["nvidia"]},
                {"key": AMI_FAMILY_LABEL, "operator": "In", "values": ["al2023"]},
            ],
        }]}}},
        "priorityClassName": "system-node-critical",
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
    }


class NvidiaDevicePlugin(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:NvidiaDevicePlugin", name, None, opts)
        self.release = helm.release(
            f"{name}-release", versions.NVIDIA_DEVICE_PLUGIN, release_name="nvidia-device-plugin",
            namespace=NAMESPACE, values=device_plugin_values(), opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"chartVersion": versions.NVIDIA_DEVICE_PLUGIN.version})
