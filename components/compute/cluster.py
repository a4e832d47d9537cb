"""EksCluster: the VPC, the EKS control plane, system nodes, add-ons, and the Kubernetes provider for everything else."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from components.shared.iam import (
    NODE_MANAGED_POLICIES,
    ec2_trust_policy,
    managed_policy_arn,
    pod_identity_trust_policy_output,
)
from config import Cluster

DISCOVERY_TAG = "karpenter.sh/discovery"
SYSTEM_NODE_LABEL = {"llm-platform.io/node-role": "system"}
CLUSTER_ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
# Add-ons that must exist before any node can become Ready (networking, and credentials for the pods that start
# first); the rest run as Deployments and wait for the system nodes.
ADDONS_BEFORE_NODES = ("vpc-cni", "kube-proxy", "eks-pod-identity-agent")
ADDONS_AFTER_NODES = ("coredns", "aws-ebs-csi-driver")
EBS_CSI_SERVICE_ACCOUNT = "ebs-csi-controller-sa"
# The VPC CNI enforces Kubernetes NetworkPolicies only with its network policy agent on; the serving namespace's
# policies (components/edge/network_policy.py) depend on it. Traffic from a pod's own node (kubelet probes) stays
# allowed.
# Source: docs.aws.amazon.com/eks/latest/userguide/cni-network-policy-configure.html, checked 2026-11-24.
ADDON_CONFIGURATION = {"vpc-cni": {"enableNetworkPolicy": "true"}}


@dataclass(frozen=True)
class SubnetPlan:
    private: list[str]
    public: list[str]


def plan_subnets(vpc_cidr: str, az_count: int) -> SubnetPlan:
    """Split the VPC into eighths: one large private subnet per AZ (pods take VPC IPs, so GPU nodes need room),
    and the last eighth cut again into small public subnets that only hold NAT gateways and load balancers."""
    eighths = list(ipaddress.ip_network(vpc_cidr).subnets(prefixlen_diff=3))
    if az_count > len(eighths) - 1:
        raise ValueError(f"at most {len(eighths) - 1} AZs fit this plan, got {az_count}")
    public_blocks = list(eighths[-1].subnets(prefixlen_diff=3))
    return SubnetPlan(
        private=[str(block) for block in eighths[:az_count]],
        public=[str(block) for block in public_blocks[:az_count]],
    )


def nat_gateway_count(mode: str, az_count: int) -> int:
    """perAz keeps each AZ's egress independent of the others; single trades that for cost."""
    return az_count if mode == "perAz" else 1


def gp3_storage_class_parameters() -> dict[str, str]:
    return {"type": "gp3", "encrypted": "true", "fsType": "ext4"}


@dataclass(frozen=True)
class EksClusterArgs:
    cluster_name: str
    """Physical EKS cluster name; also the Karpenter discovery tag value."""
    cluster: Cluster
    """The validated `cluster` config section."""


class EksCluster(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    cluster_name: pulumi.Output[str]
    cluster_security_group_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    provider: k8s.Provider
    system_nodes: aws.eks.NodeGroup
    addons: dict[str, aws.eks.Addon]

    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:EksCluster", name, None, opts)
        cfg = args.cluster
        child = pulumi.ResourceOptions(parent=self)
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition

        self._build_network(name, args)

        admins = {
            f"admin-{i}": eks.AccessEntryArgs(
                principal_arn=arn,
                access_policies={"cluster-admin": eks.AccessPolicyAssociationArgs(
                    policy_arn=CLUSTER_ADMIN_POLICY,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                )},
            )
            for i, arn in enumerate(cfg.admin_role_arns)
        }
        # EKS writes the control-plane logs to this group, and would create it without a retention (kept forever) if it
        # did not exist first. A stack whose cluster predates this group adopts it once (README, Security).
        control_plane_logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane-logs", name=f"/aws/eks/{args.cluster_name}/cluster",
            retention_in_days=cfg.log_retention_days, opts=child)
        self.eks = eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=cfg.kubernetes_version,
            vpc_id=self.vpc_id,
            private_subnet_ids=self.private_subnet_ids,
            public_subnet_ids=self.public_subnet_ids,
            endpoint_private_access=True,
            endpoint_public_access=cfg.endpoint_public_access,
            public_access_cidrs=cfg.public_access_cidrs if cfg.endpoint_public_access else None,
            authentication_mode=eks.AuthenticationMode.API,
            access_entries=admins or None,
            # Nodes and add-ons are created below as plain pulumi_aws resources, so previews and tests see them.
            skip_default_node_group=True,
            skip_default_security_groups=True,
            bootstrap_self_managed_addons=False,
            use_default_vpc_cni=True,
            kube_proxy_addon_options=eks.KubeProxyAddonOptionsArgs(enabled=False),
            coredns_addon_options=eks.CoreDnsAddonOptionsArgs(enabled=False),
            create_oidc_provider=False,
            kubernetes_service_ip_address_range=cfg.service_cidr,
            enabled_cluster_log_types=cfg.log_types,
            deletion_protection=cfg.deletion_protection,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[control_plane_logs]),
        )
        self.cluster_name = self.eks.eks_cluster.apply(lambda c: c.name)
        # With skip_default_security_groups this is the security group EKS itself creates and attaches to managed
        # nodes; Karpenter's nodes join it through the discovery tag so they reach CoreDNS and the control plane.
        self.cluster_security_group_id = self.eks.cluster_security_group_id
        self.kubeconfig = pulumi.Output.secret(self.eks.kubeconfig_json)
        aws.ec2.Tag(
            f"{name}-cluster-sg-discovery",
            resource_id=self.cluster_security_group_id,
            key=DISCOVERY_TAG,
            value=args.cluster_name,
            opts=child,
        )

        self.addons = {
            addon: self._addon(name, addon, cfg, depends_on=[])
            for addon in ADDONS_BEFORE_NODES
        }
        self.system_nodes = self._system_node_group(name, cfg, partition)
        ebs_role = self._pod_identity_role(
            f"{name}-ebs-csi", args.cluster_name, "kube-system", EBS_CSI_SERVICE_ACCOUNT,
            [managed_policy_arn_output(partition, "AmazonEBSCSIDriverPolicy")],
        )
        for addon in ADDONS_AFTER_NODES:
            associations = (
                [aws.eks.AddonPodIdentityAssociationArgs(role_arn=ebs_role.arn, service_account=EBS_CSI_SERVICE_ACCOUNT)]
                if addon == "aws-ebs-csi-driver" else None
            )
            self.addons[addon] = self._addon(name, addon, cfg, depends_on=[self.system_nodes], associations=associations)

        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.addons["vpc-cni"]]),
        )
        self.storage_class = k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name="gp3", annotations={"storageclass.kubernetes.io/is-default-class": "true"}
            ),
            provisioner="ebs.csi.aws.com",
            parameters=gp3_storage_class_parameters(),
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            reclaim_policy="Delete",
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=[self.addons["aws-ebs-csi-driver"]]),
        )

        self.register_outputs({
            "vpcId": self.vpc_id,
            "clusterName": self.cluster_name,
            "clusterSecurityGroupId": self.cluster_security_group_id,
            "privateSubnetIds": self.private_subnet_ids,
        })

    def _build_network(self, name: str, args: EksClusterArgs) -> None:
        cfg = args.cluster
        child = pulumi.ResourceOptions(parent=self)
        plan = plan_subnets(cfg.vpc_cidr, cfg.availability_zones)
        zones = aws.get_availability_zones_output(
            state="available",
            filters=[aws.GetAvailabilityZonesFilterArgs(name="opt-in-status", values=["opt-in-not-required"])],
            opts=pulumi.InvokeOutputOptions(parent=self),
        ).names.apply(lambda names: _first_zones(names, cfg.availability_zones, cfg.region))

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=cfg.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{args.cluster_name}-vpc"},
            opts=child,
        )
        self.vpc_id = vpc.id
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{args.cluster_name}-igw"}, opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"{args.cluster_name}-public"},
            opts=child,
        )

        def make_subnet(kind: str, i: int, cidr: str, tags: dict[str, str]) -> aws.ec2.Subnet:
            return aws.ec2.Subnet(
                f"{name}-{kind}-{i}",
                vpc_id=vpc.id,
                cidr_block=cidr,
                availability_zone=zones.apply(lambda z: z[i]),
                tags={"Name": f"{args.cluster_name}-{kind}-{i}", **tags},
                opts=child,
            )

        public, private, nats, private_rts = [], [], [], []
        for i in range(cfg.availability_zones):
            subnet = make_subnet("public", i, plan.public[i], {"kubernetes.io/role/elb": "1"})
            aws.ec2.RouteTableAssociation(f"{name}-public-{i}", subnet_id=subnet.id, route_table_id=public_rt.id, opts=child)
            public.append(subnet)
        for i in range(nat_gateway_count(cfg.nat_gateways, cfg.availability_zones)):
            eip = aws.ec2.Eip(f"{name}-nat-{i}", domain="vpc", tags={"Name": f"{args.cluster_name}-nat-{i}"}, opts=child)
            nats.append(aws.ec2.NatGateway(
                f"{name}-nat-{i}",
                subnet_id=public[i].id,
                allocation_id=eip.id,
                tags={"Name": f"{args.cluster_name}-nat-{i}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            ))
        for i in range(cfg.availability_zones):
            subnet = make_subnet(
                "private", i, plan.private[i],
                {"kubernetes.io/role/internal-elb": "1", DISCOVERY_TAG: args.cluster_name},
            )
            rt = aws.ec2.RouteTable(
                f"{name}-private-rt-{i}",
                vpc_id=vpc.id,
                routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nats[min(i, len(nats) - 1)].id)],
                tags={"Name": f"{args.cluster_name}-private-{i}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=subnet.id, route_table_id=rt.id, opts=child)
            private.append(subnet)
            private_rts.append(rt)
        # Model weights come from S3 and Hugging Face: a free gateway endpoint keeps S3 traffic off the NAT bill.
        aws.ec2.VpcEndpoint(
            f"{name}-s3",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{cfg.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags={"Name": f"{args.cluster_name}-s3"},
            opts=child,
        )
        self.public_subnet_ids = [s.id for s in public]
        self.private_subnet_ids = [s.id for s in private]

    def _system_node_group(self, name: str, cfg: Cluster, partition: pulumi.Output[str]) -> aws.eks.NodeGroup:
        role = aws.iam.Role(
            f"{name}-system-node",
            assume_role_policy=json.dumps(ec2_trust_policy()),
            description="EKS managed system node group",
            opts=pulumi.ResourceOptions(parent=self),
        )
        attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-system-node-{policy}",
                role=role.name,
                policy_arn=managed_policy_arn_output(partition, policy),
                opts=pulumi.ResourceOptions(parent=self),
            )
            for policy in NODE_MANAGED_POLICIES
        ]
        ng = cfg.system_node_group
        return aws.eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster_name,
            node_role_arn=role.arn,
            subnet_ids=self.private_subnet_ids,
            instance_types=ng.instance_types,
            capacity_type=ng.capacity_type,
            ami_type="AL2023_x86_64_STANDARD",
            disk_size=ng.disk_size_gib,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=ng.min_size, desired_size=ng.desired_size, max_size=ng.max_size
            ),
            update_config=aws.eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=SYSTEM_NODE_LABEL,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*attachments, *(self.addons[a] for a in ADDONS_BEFORE_NODES)],
                # The cluster autoscaler is not installed; keep manual resizes instead of fighting them.
                ignore_changes=["scalingConfig.desiredSize"],
            ),
        )

    def _addon(self, name: str, addon: str, cfg: Cluster, depends_on: list[pulumi.Resource],
               associations: list | None = None) -> aws.eks.Addon:
        return aws.eks.Addon(
            f"{name}-{addon}",
            cluster_name=self.cluster_name,
            addon_name=addon,
            addon_version=cfg.addon_versions.get(addon),
            configuration_values=json.dumps(ADDON_CONFIGURATION[addon]) if addon in ADDON_CONFIGURATION else None,
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            pod_identity_associations=associations,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on),
        )

    def _pod_identity_role(self, name: str, cluster_name: str, namespace: str, service_account: str,
                           policy_arns: list[pulumi.Input[str]]) -> aws.iam.Role:
        role = aws.iam.Role(
            name,
            assume_role_policy=pod_identity_trust_policy_output(cluster_name, namespace, service_account, self),
            opts=pulumi.ResourceOptions(parent=self),
        )
        for i, arn in enumerate(policy_arns):
            aws.iam.RolePolicyAttachment(f"{name}-{i}", role=role.name, policy_arn=arn, opts=pulumi.ResourceOptions(parent=self))
        return role


def managed_policy_arn_output(partition: pulumi.Output[str], policy: str) -> pulumi.Output[str]:
    return partition.apply(lambda p: managed_policy_arn(p, policy))


def _first_zones(names: list[str], count: int, region: str) -> list[str]:
    if len(names) < count:
        raise ValueError(
            f"cluster.availabilityZones is {count} but {region} offers only {len(names)} opted-in zones: {names}"
        )
    return sorted(names)[:count]
