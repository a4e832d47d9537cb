"""EfaDevicePlugin: advertises `vpc.amazonaws.com/efa` on the nodes of pools that set efa, so model servers can
request the node's Elastic Fabric Adapters (and Karpenter attaches them at launch)."""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s

from catalog import versions
from components.compute.gpu_node_pool import EFA_LABEL, GPU_TAINT
from components.shared import helm

NAMESPACE = "kube-system"


def efa_plugin_values() -> dict:
    """Only on EFA pools' nodes (the chart's own affinity already limits it to EFA-capable instance types), past
    the GPU taint. The chart runs it system-node-critical."""
    return {
        "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}],
        "nodeSelector": {EFA_LABEL: "true"},
        # The chart's values take requests only.
        "resources": {"requests": {"cpu": "10m", "memory": "20Mi"}},
    }


class EfaDevicePlugin(pulumi.ComponentResource):
    release: k8s.helm.v3.Release

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:EfaDevicePlugin", name, None, opts)
        self.release = helm.release(
            f"{name}-release", versions.EFA_DEVICE_PLUGIN, release_name="aws-efa-k8s-device-plugin",
            namespace=NAMESPACE, values=efa_plugin_values(), opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"chartVersion": versions.EFA_DEVICE_PLUGIN.version})
