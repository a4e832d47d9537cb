"""IAM policy documents as plain dicts, so tests can assert on statements without a Pulumi runtime; and the one way
the platform gives a Kubernetes service account an IAM role (EKS Pod Identity)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# The managed policies every EKS worker node needs: join the cluster, run the VPC CNI, pull images, and be
# reachable through SSM for debugging without SSH. Source: Karpenter v1.14 getting-started CloudFormation and
# docs.aws.amazon.com/eks/latest/userguide/create-node-role.html, checked 2026-11-24.
NODE_MANAGED_POLICIES = (
    "AmazonEKSWorkerNodePolicy",
    "AmazonEKS_CNI_Policy",
    "AmazonEC2ContainerRegistryPullOnly",
    "AmazonSSMManagedInstanceCore",
)


def managed_policy_arn(partition: str, name: str) -> str:
    prefix = "service-role/" if name == "AmazonEBSCSIDriverPolicy" else ""
    return f"arn:{partition}:iam::aws:policy/{prefix}{name}"


def ec2_trust_policy() -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }


def pod_identity_trust_policy(cluster_name: str, namespace: str, service_account: str, account_id: str) -> dict:
    """Trust for EKS Pod Identity, narrowed by the session tags the agent sets to one service account of one
    cluster, so no other Pod Identity association in the account can assume the role, and by aws:SourceAccount to
    requests EKS makes for this account (the confused-deputy guard for a service principal).
    Source: docs.aws.amazon.com/eks/latest/userguide/pod-id-role.html, checked 2026-11-24."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "AllowEksPodIdentity",
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Condition": {"StringEquals": {
                "aws:SourceAccount": account_id,
                "aws:RequestTag/eks-cluster-name": cluster_name,
                "aws:RequestTag/kubernetes-namespace": namespace,
                "aws:RequestTag/kubernetes-service-account": service_account,
            }},
        }],
    }


def account_and_partition(parent: pulumi.Resource | None) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
    """The account of the credentials `pulumi up` runs with, and its partition (aws, aws-cn, aws-us-gov)."""
    invoke = pulumi.InvokeOutputOptions(parent=parent)
    return aws.get_caller_identity_output(opts=invoke).account_id, aws.get_partition_output(opts=invoke).partition


def pod_identity_trust_policy_output(cluster_name: str, namespace: str, service_account: str,
                                     parent: pulumi.Resource | None) -> pulumi.Output[str]:
    """The trust policy as JSON, for the account `pulumi up` runs in."""
    account, _ = account_and_partition(parent)
    return account.apply(lambda a: json.dumps(pod_identity_trust_policy(cluster_name, namespace, service_account, a)))


@dataclass(frozen=True)
class PodIdentityRole:
    role: aws.iam.Role
    policy: aws.iam.RolePolicy
    association: aws.eks.PodIdentityAssociation


def pod_identity_role(resource_name: str, *, cluster_name: str, cluster_name_output: pulumi.Input[str],
                      namespace: str, service_account: str, policy: pulumi.Input[str], description: str,
                      opts: pulumi.ResourceOptions) -> PodIdentityRole:
    """A role only `namespace/service_account` of this cluster can assume, its inline policy (JSON), and the
    association that hands it to the service account. All three share `resource_name`."""
    role = aws.iam.Role(
        resource_name,
        assume_role_policy=pod_identity_trust_policy_output(cluster_name, namespace, service_account, opts.parent),
        description=description,
        opts=opts,
    )
    return PodIdentityRole(
        role=role,
        policy=aws.iam.RolePolicy(resource_name, role=role.name, policy=policy, opts=opts),
        association=aws.eks.PodIdentityAssociation(
            resource_name, cluster_name=cluster_name_output, namespace=namespace, service_account=service_account,
            role_arn=role.arn, opts=opts,
        ),
    )
