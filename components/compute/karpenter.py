"""Karpenter: controller IAM (Pod Identity), node IAM + access entry, interruption queue and rules, Helm charts."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from catalog import versions
from components.compute.cluster import SYSTEM_NODE_LABEL, managed_policy_arn_output
from components.shared import helm
from components.shared.iam import NODE_MANAGED_POLICIES, account_and_partition, ec2_trust_policy, pod_identity_role

NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "karpenter"

# The events Karpenter drains nodes ahead of. Source: Karpenter v1.14 getting-started CloudFormation
# (website/content/en/v1.14/getting-started/getting-started-with-karpenter/cloudformation.yaml), checked 2026-11-24.
INTERRUPTION_EVENTS: dict[str, dict] = {
    "health": {"source": ["aws.health"], "detail-type": ["AWS Health Event"]},
    "spot-interruption": {"source": ["aws.ec2"], "detail-type": ["EC2 Spot Instance Interruption Warning"]},
    "rebalance": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance Rebalance Recommendation"]},
    "state-change": {"source": ["aws.ec2"], "detail-type": ["EC2 Instance State-change Notification"]},
    "capacity-reservation": {
        "source": ["aws.ec2"], "detail-type": ["EC2 Capacity Reservation Instance Interruption Warning"],
    },
}


def interruption_queue_policy(queue_arn: str, rule_arns: list[str]) -> dict:
    """Only this stack's EventBridge rules may send (aws:SourceArn, which EventBridge sets on delivery to SQS); SQS
    itself keeps the send right Karpenter's reference template gives it; nothing may use the queue without TLS."""
    return {
        "Version": "2012-10-17",
        "Id": "KarpenterInterruptionQueue",
        "Statement": [
            {
                "Sid": "AllowEventBridgeRules",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sorted(rule_arns)}},
            },
            {
                "Sid": "AllowSqs",
                "Effect": "Allow",
                "Principal": {"Service": "sqs.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
            },
            {
                "Sid": "DenyNonTls",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": queue_arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ],
    }


def controller_policy(*, partition: str, region: str, account: str, cluster_name: str,
                      node_role_arn: str, queue_arn: str) -> dict:
    """The Karpenter v1.14 controller's permissions, scoped by tag to this cluster's nodes, launch templates and
    instance profiles. Same statements as upstream's reference CloudFormation (see INTERRUPTION_EVENTS' source)."""
    ec2 = f"arn:{partition}:ec2:{region}"
    owned = {f"aws:ResourceTag/kubernetes.io/cluster/{cluster_name}": "owned"}
    request_owned = {
        f"aws:RequestTag/kubernetes.io/cluster/{cluster_name}": "owned",
        "aws:RequestTag/eks:eks-cluster-name": cluster_name,
    }
    launched = [f"{ec2}:*:{kind}/*" for kind in
                ("fleet", "instance", "volume", "network-interface", "launch-template", "spot-instances-request")]
    profiles = f"arn:{partition}:iam::{account}:instance-profile/*"
    profile_owned = {**owned, "aws:ResourceTag/topology.kubernetes.io/region": region}
    profile_request = {**request_owned, "aws:RequestTag/topology.kubernetes.io/region": region}
    cluster_arn = f"arn:{partition}:eks:{region}:{account}:cluster/{cluster_name}"
    statements = [
        _allow("AllowScopedEC2InstanceAccessActions", ["ec2:RunInstances", "ec2:CreateFleet"],
               [f"{ec2}::image/*", f"{ec2}::snapshot/*", f"{ec2}:*:security-group/*", f"{ec2}:*:subnet/*",
                f"{ec2}:*:capacity-reservation/*", f"{ec2}:*:placement-group/*"]),
        _allow("AllowScopedEC2LaunchTemplateAccessActions", ["ec2:RunInstances", "ec2:CreateFleet"],
               f"{ec2}:*:launch-template/*",
               {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}),
        _allow("AllowScopedEC2InstanceActionsWithTags", ["ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate"],
               launched,
               {"StringEquals": request_owned, "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}),
        _allow("AllowScopedResourceCreationTagging", "ec2:CreateTags", launched,
               {"StringEquals": {**request_owned, "ec2:CreateAction": ["RunInstances", "CreateFleet", "CreateLaunchTemplate"]},
                "StringLike": {"aws:RequestTag/karpenter.sh/nodepool": "*"}}),
        _allow("AllowScopedResourceTagging", "ec2:CreateTags", f"{ec2}:*:instance/*",
               {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"},
                "StringEqualsIfExists": {"aws:RequestTag/eks:eks-cluster-name": cluster_name},
                "ForAllValues:StringEquals": {"aws:TagKeys": ["eks:eks-cluster-name", "karpenter.sh/nodeclaim", "Name"]}}),
        _allow("AllowScopedDeletion", ["ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"],
               [f"{ec2}:*:instance/*", f"{ec2}:*:launch-template/*"],
               {"StringEquals": owned, "StringLike": {"aws:ResourceTag/karpenter.sh/nodepool": "*"}}),
        _allow("AllowPassingInstanceRole", "iam:PassRole", node_role_arn,
               {"StringEquals": {"iam:PassedToService": ["ec2.amazonaws.com", "ec2.amazonaws.com.cn"]}}),
        _allow("AllowScopedInstanceProfileCreationActions", "iam:CreateInstanceProfile", profiles,
               {"StringEquals": profile_request, "StringLike": {"aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}),
        _allow("AllowScopedInstanceProfileTagActions", "iam:TagInstanceProfile", profiles,
               {"StringEquals": {**profile_owned, **profile_request},
                "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*",
                               "aws:RequestTag/karpenter.k8s.aws/ec2nodeclass": "*"}}),
        _allow("AllowScopedInstanceProfileActions",
               ["iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile"],
               profiles,
               {"StringEquals": profile_owned, "StringLike": {"aws:ResourceTag/karpenter.k8s.aws/ec2nodeclass": "*"}}),
        _allow("AllowAPIServerEndpointDiscovery", "eks:DescribeCluster", cluster_arn),
        _allow("AllowInterruptionQueueActions", ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"], queue_arn),
        _allow("AllowZonalShiftStatusReadOnly", "arc-zonal-shift:GetManagedResource", "*",
               {"StringEquals": {"arc-zonal-shift:ResourceIdentifier": cluster_arn}}),
        _allow("AllowRegionalReadActions",
               ["ec2:DescribeCapacityReservations", "ec2:DescribeImages", "ec2:DescribeInstances",
                "ec2:DescribeInstanceStatus", "ec2:DescribeInstanceTypeOfferings", "ec2:DescribeInstanceTypes",
                "ec2:DescribeLaunchTemplates", "ec2:DescribePlacementGroups", "ec2:DescribeSecurityGroups",
                "ec2:DescribeSpotPriceHistory", "ec2:DescribeSubnets"],
               "*", {"StringEquals": {"aws:RequestedRegion": region}}),
        _allow("AllowSSMReadActions", "ssm:GetParameter", f"arn:{partition}:ssm:{region}::parameter/aws/service/*"),
        _allow("AllowPricingReadActions", "pricing:GetProducts", "*"),
        _allow("AllowUnscopedInstanceProfileListAction", "iam:ListInstanceProfiles", "*"),
        _allow("AllowInstanceProfileReadActions", "iam:GetInstanceProfile", profiles),
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def _allow(sid: str, action: str | list[str], resource: str | list[str], condition: dict | None = None) -> dict:
    statement = {"Sid": sid, "Effect": "Allow", "Action": action, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


def controller_values(*, cluster_name: str, queue_name: str, replicas: int) -> dict:
    """Helm values for the karpenter chart. The controller runs on the system node group only: a Karpenter that
    runs on nodes it manages can consolidate itself away."""
    return {
        "replicas": replicas,
        "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
        "settings": {"clusterName": cluster_name, "interruptionQueue": queue_name},
        "nodeSelector": {"kubernetes.io/os": "linux", **SYSTEM_NODE_LABEL},
        "controller": {"resources": {
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"memory": "1Gi"},
        }},
        # One replica per system node is required upstream; with fewer nodes than replicas the rest stay Pending.
        "podDisruptionBudget": {"name": "karpenter", "maxUnavailable": 1},
        "logLevel": "info",
    }


@dataclass(frozen=True)
class KarpenterArgs:
    cluster_name: str
    """Physical EKS cluster name (known before the cluster exists): policy scoping and chart settings."""
    cluster_name_output: pulumi.Input[str]
    """The same name as an output of the cluster, so IAM and access entries wait for the cluster to exist."""
    region: str
    replicas: int
    """Controller replicas. 2 when the system node group has at least 2 nodes (upstream default), else 1."""
    system_nodes: pulumi.Resource
    """Karpenter waits for the system nodes and the add-ons it needs (CoreDNS, Pod Identity agent)."""
    depends_on: list[pulumi.Resource]


class Karpenter(pulumi.ComponentResource):
    node_role: aws.iam.Role
    queue: aws.sqs.Queue
    crds: k8s.helm.v3.Release
    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: KarpenterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:Karpenter", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account, partition = account_and_partition(self)

        # Nodes
        self.node_role = aws.iam.Role(
            f"{name}-node",
            assume_role_policy=json.dumps(ec2_trust_policy()),
            description=f"Nodes that Karpenter launches for {args.cluster_name}",
            opts=child,
        )
        node_policies = [
            aws.iam.RolePolicyAttachment(
                f"{name}-node-{policy}", role=self.node_role.name,
                policy_arn=managed_policy_arn_output(partition, policy), opts=child,
            )
            for policy in NODE_MANAGED_POLICIES
        ]
        aws.eks.AccessEntry(
            f"{name}-node",
            cluster_name=args.cluster_name_output,
            principal_arn=self.node_role.arn,
            type="EC2_LINUX",
            opts=child,
        )

        # Interruption handling
        self.queue = aws.sqs.Queue(
            f"{name}-interruptions",
            name=args.cluster_name,
            message_retention_seconds=300,
            sqs_managed_sse_enabled=True,
            opts=child,
        )
        rules = []
        for rule_name, pattern in INTERRUPTION_EVENTS.items():
            rule = aws.cloudwatch.EventRule(
                f"{name}-{rule_name}",
                description=f"Karpenter interruption handling for {args.cluster_name}: {pattern['detail-type'][0]}",
                event_pattern=json.dumps(pattern),
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{rule_name}", rule=rule.name, target_id="KarpenterInterruptionQueue", arn=self.queue.arn,
                opts=child,
            )
            rules.append(rule)
        aws.sqs.QueuePolicy(
            f"{name}-interruptions",
            queue_url=self.queue.url,
            policy=pulumi.Output.all(self.queue.arn, *(r.arn for r in rules)).apply(
                lambda v: json.dumps(interruption_queue_policy(v[0], v[1:]))),
            opts=child,
        )

        # Controller
        controller = pod_identity_role(
            f"{name}-controller",
            cluster_name=args.cluster_name,
            cluster_name_output=args.cluster_name_output,
            namespace=NAMESPACE,
            service_account=SERVICE_ACCOUNT,
            policy=pulumi.Output.all(partition, account, self.node_role.arn, self.queue.arn).apply(
                lambda v: json.dumps(controller_policy(
                    partition=v[0], region=args.region, account=v[1], cluster_name=args.cluster_name,
                    node_role_arn=v[2], queue_arn=v[3],
                ))
            ),
            description=f"Karpenter controller for {args.cluster_name}",
            opts=child,
        )

        self.crds = helm.release(
            f"{name}-crd", versions.KARPENTER_CRD, release_name="karpenter-crd", namespace=NAMESPACE,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.system_nodes]),
        )
        self.release = helm.release(
            f"{name}-controller", versions.KARPENTER, release_name="karpenter", namespace=NAMESPACE,
            skip_crds=True,
            values=controller_values(cluster_name=args.cluster_name, queue_name=args.cluster_name, replicas=args.replicas),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.crds, controller.association, controller.policy, *node_policies, args.system_nodes,
                            *args.depends_on],
            ),
        )

        self.register_outputs({
            "nodeRoleName": self.node_role.name,
            "interruptionQueueUrl": self.queue.url,
            "chartVersion": versions.KARPENTER.version,
        })
