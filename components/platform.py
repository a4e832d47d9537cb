"""Platform: the wiring diagram. Every piece of the LLM platform is created here, in dependency order."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws

from components.cluster import EksCluster, EksClusterArgs
from components.gpu_node_pool import GpuNodePool, GpuNodePoolArgs
from components.karpenter import Karpenter, KarpenterArgs
from components.nvidia_device_plugin import NvidiaDevicePlugin
from config import StackConfig


def karpenter_replicas(system_min_size: int) -> int:
    """Upstream runs two replicas with hard per-node anti-affinity: only ask for two when two nodes always exist."""
    return 2 if system_min_size >= 2 else 1


class Platform(pulumi.ComponentResource):
    cluster: EksCluster
    karpenter: Karpenter
    gpu_pools: dict[str, GpuNodePool]

    def __init__(self, name: str, cfg: StackConfig, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:Platform", name, None, opts)
        aws_provider = aws.Provider(
            f"{name}-aws",
            region=cfg.cluster.region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.aws_tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_aws = pulumi.ResourceOptions(parent=self, providers={"aws": aws_provider})

        self.cluster = EksCluster(f"{name}-cluster", EksClusterArgs(cfg.cluster_name, cfg.cluster), on_aws)
        on_cluster = pulumi.ResourceOptions(
            parent=self, providers={"aws": aws_provider, "kubernetes": self.cluster.provider}
        )

        self.karpenter = Karpenter(f"{name}-karpenter", KarpenterArgs(
            cluster_name=cfg.cluster_name,
            cluster_name_output=self.cluster.cluster_name,
            region=cfg.cluster.region,
            replicas=karpenter_replicas(cfg.cluster.system_node_group.min_size),
            system_nodes=self.cluster.system_nodes,
            depends_on=[self.cluster.addons["coredns"], self.cluster.addons["eks-pod-identity-agent"]],
        ), on_cluster)

        self.gpu_pools = {
            key: GpuNodePool(f"{name}-gpu-{key}", GpuNodePoolArgs(
                pool_key=key,
                pool=pool,
                cluster_name=cfg.cluster_name,
                node_role_name=self.karpenter.node_role.name,
                tags=cfg.aws_tags,
                depends_on=[self.karpenter.crds, self.karpenter.release],
            ), on_cluster)
            for key, pool in cfg.gpu_pools.items()
        }
        if any(pool.ami_family == "al2023" for pool in cfg.gpu_pools.values()):
            NvidiaDevicePlugin(f"{name}-nvidia-device-plugin", on_cluster)

        # Model serving, autoscaling, monitoring, the gateway and Redis attach here, on `on_cluster`.

        self.register_outputs({
            "clusterName": self.cluster.cluster_name,
            "vpcId": self.cluster.vpc_id,
            "interruptionQueueUrl": self.karpenter.queue.url,
        })
