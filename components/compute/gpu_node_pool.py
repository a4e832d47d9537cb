"""GpuNodePool: one EC2NodeClass and one Karpenter v1 NodePool per capacity type for a `gpuPools` entry, and for a
pool that asks for them, the security group EFA needs and a cluster placement group."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from catalog.instances import types_in_pool
from components.compute.cluster import DISCOVERY_TAG
from components.shared.labels import PLATFORM_LABELS
from config import GpuPool
from config.checks import nodepool_names

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}
POOL_LABEL = "llm-platform.io/gpu-pool"
AMI_FAMILY_LABEL = "llm-platform.io/ami-family"
EFA_LABEL = "llm-platform.io/efa"
"""On the nodes of pools that set efa: where the EFA device plugin runs."""
# Karpenter orders NodePools by weight: spot first, on-demand only when spot cannot be had.
CAPACITY_WEIGHTS = {"spot": 100, "on-demand": 10}
# The OS/boot volume: Bottlerocket keeps images and pods on a second (data) volume, AL2023 on the root volume.
DATA_DEVICE = {"al2023": "/dev/xvda", "bottlerocket": "/dev/xvdb"}


def requirements(pool: GpuPool, capacity_type: str) -> list[dict]:
    """Karpenter scheduling requirements for one NodePool of the pool. Karpenter ANDs requirements, so a pool
    with both families and explicit types (a union) is expressed as one list of instance types."""
    reqs = [
        {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "karpenter.sh/capacity-type", "operator": "In", "values": [capacity_type]},
        {"key": "karpenter.k8s.aws/instance-gpu-manufacturer", "operator": "In", "values": ["nvidia"]},
    ]
    if pool.instance_types:
        names = [t.name for t in types_in_pool(pool.instance_families, pool.instance_types)]
        reqs.append({"key": "node.kubernetes.io/instance-type", "operator": "In", "values": names})
    else:
        reqs.append({"key": "karpenter.k8s.aws/instance-family", "operator": "In", "values": sorted(pool.instance_families)})
    return reqs


def node_labels(pool_key: str, pool: GpuPool) -> dict[str, str]:
    return {**pool.labels, POOL_LABEL: pool_key, AMI_FAMILY_LABEL: pool.ami_family,
            **({EFA_LABEL: "true"} if pool.efa else {})}


def nodepool_spec(pool_key: str, pool: GpuPool, capacity_type: str, node_class: str) -> dict:
    return {
        "weight": CAPACITY_WEIGHTS[capacity_type],
        "template": {
            "metadata": {"labels": node_labels(pool_key, pool)},
            "spec": {
                "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": node_class},
                "requirements": requirements(pool, capacity_type),
                "taints": [GPU_TAINT],
                "expireAfter": pool.expire_after,
                "terminationGracePeriod": pool.termination_grace_period,
            },
        },
        "limits": {"nvidia.com/gpu": pool.gpu_limit},
        "disruption": {
            "consolidationPolicy": pool.consolidation_policy,
            "consolidateAfter": pool.consolidate_after,
            "budgets": [{"nodes": pool.disruption_budget}],
        },
    }


def node_class_spec(pool: GpuPool, *, cluster_name: str, node_role: str, tags: dict[str, str],
                    efa_security_group: str | None = None, placement_group: str | None = None) -> dict:
    """`efa_security_group`: the id of the pool's EFA security group, joined beside the cluster's (selector terms
    are ORed). `placement_group`: the name of the pool's cluster placement group. Karpenter attaches the EFA
    interfaces itself when a pod requests `vpc.amazonaws.com/efa` (the model servers do on EFA pools)."""
    discovery = {"tags": {DISCOVERY_TAG: cluster_name}}
    spec = {
        "role": node_role,
        "amiSelectorTerms": [{"alias": f"{pool.ami_family}@{pool.ami_version}"}],
        "subnetSelectorTerms": [discovery],
        "securityGroupSelectorTerms": [discovery, *([{"id": efa_security_group}] if efa_security_group else [])],
        "blockDeviceMappings": [{
            "deviceName": DATA_DEVICE[pool.ami_family],
            "ebs": {
                "volumeSize": f"{pool.root_volume_gib}Gi",
                "volumeType": "gp3",
                "encrypted": True,
                "deleteOnTermination": True,
            },
        }],
        # IMDSv2 only, and a hop limit of 1 so pods cannot borrow the node role's credentials.
        "metadataOptions": {
            "httpEndpoint": "enabled",
            "httpProtocolIPv6": "disabled",
            "httpPutResponseHopLimit": 1,
            "httpTokens": "required",
        },
        "tags": tags,
    }
    if pool.ami_family == "bottlerocket":
        # Bottlerocket's own small OS volume stays first; the sized volume above is its data volume.
        spec["blockDeviceMappings"].insert(0, {
            "deviceName": "/dev/xvda",
            "ebs": {"volumeSize": "4Gi", "volumeType": "gp3", "encrypted": True, "deleteOnTermination": True},
        })
    if pool.instance_store_raid0:
        spec["instanceStorePolicy"] = "RAID0"
    if placement_group:
        spec["placementGroupSelector"] = {"name": placement_group}
    return spec


def efa_security_group_rules() -> dict:
    """EFA's one network requirement: all traffic in from and out to the security group itself
    (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/efa-start.html, "Prepare an EFA-enabled security group";
    its OS-bypass traffic is not IP, so no narrower port rule can admit it). Nothing else: the cluster's own
    security group stays attached for everything else."""
    everything_from_itself = {"protocol": "-1", "from_port": 0, "to_port": 0, "self": True}
    return {"ingress": [everything_from_itself], "egress": [everything_from_itself]}


@dataclass(frozen=True)
class GpuNodePoolArgs:
    pool_key: str
    """The `gpuPools` key: names the EC2NodeClass and prefixes the NodePools."""
    pool: GpuPool
    cluster_name: str
    node_role_name: pulumi.Input[str]
    tags: dict[str, str]
    """AWS tags for the instances and volumes Karpenter launches (the provider's default tags do not reach them)."""
    depends_on: list[pulumi.Resource]
    """The Karpenter CRD and controller releases."""
    vpc_id: pulumi.Input[str] | None = None
    """The cluster's VPC: the EFA security group is created in it (only read when pool.efa)."""


class GpuNodePool(pulumi.ComponentResource):
    node_class: k8s.apiextensions.CustomResource
    node_pools: dict[str, k8s.apiextensions.CustomResource]
    """Keyed by capacity type."""
    node_pool_names: list[str]
    efa_security_group: aws.ec2.SecurityGroup | None
    placement_group: aws.ec2.PlacementGroup | None

    def __init__(self, name: str, args: GpuNodePoolArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:GpuNodePool", name, None, opts)
        after_karpenter = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.efa_security_group = self.placement_group = None
        if args.pool.efa:
            self.efa_security_group = aws.ec2.SecurityGroup(
                f"{name}-efa", vpc_id=args.vpc_id, description=f"EFA between the nodes of GPU pool {args.pool_key}",
                tags={**args.tags, "Name": f"{args.cluster_name}-{args.pool_key}-efa"},
                **efa_security_group_rules(), opts=pulumi.ResourceOptions(parent=self))
        if args.pool.placement_group:
            self.placement_group = aws.ec2.PlacementGroup(
                f"{name}-placement", name=f"{args.cluster_name}-{args.pool_key}", strategy="cluster",
                tags=args.tags, opts=pulumi.ResourceOptions(parent=self))
        efa_id = self.efa_security_group.id if self.efa_security_group else None
        placement = self.placement_group.name if self.placement_group else None
        self.node_class = k8s.apiextensions.CustomResource(
            f"{name}-nodeclass",
            api_version="karpenter.k8s.aws/v1",
            kind="EC2NodeClass",
            metadata={"name": args.pool_key, "labels": PLATFORM_LABELS},
            spec=pulumi.Output.all(args.node_role_name, efa_id, placement).apply(
                lambda v: node_class_spec(args.pool, cluster_name=args.cluster_name, node_role=v[0], tags=args.tags,
                                          efa_security_group=v[1], placement_group=v[2])
            ),
            opts=after_karpenter,
        )
        self.node_pools = {}
        self.node_pool_names = nodepool_names(args.pool_key, args.pool.capacity_types)
        for capacity, pool_name in zip(args.pool.capacity_types, self.node_pool_names, strict=True):
            self.node_pools[capacity] = k8s.apiextensions.CustomResource(
                f"{name}-{capacity}",
                api_version="karpenter.sh/v1",
                kind="NodePool",
                metadata={"name": pool_name, "labels": PLATFORM_LABELS},
                spec=nodepool_spec(args.pool_key, args.pool, capacity, args.pool_key),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.node_class]),
            )
        self.register_outputs({
            "nodeClass": args.pool_key,
            "nodePools": self.node_pool_names,
        })
