"""Karpenter's IAM, interruption queue and Helm values, as plain data."""

from __future__ import annotations

import json

from components.compute.karpenter import (
    INTERRUPTION_EVENTS,
    controller_policy,
    controller_values,
    interruption_queue_policy,
)
from components.shared.iam import pod_identity_trust_policy

CLUSTER = "llm-test"
NODE_ROLE = "arn:aws:iam::123456789012:role/karpenter-node"
QUEUE = "arn:aws:sqs:us-west-2:123456789012:llm-test"
POLICY = controller_policy(partition="aws", region="us-west-2", account="123456789012", cluster_name=CLUSTER,
                           node_role_arn=NODE_ROLE, queue_arn=QUEUE)
STATEMENTS = {s["Sid"]: s for s in POLICY["Statement"]}


def _actions(statement: dict) -> list[str]:
    return statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]


def test_every_mutating_ec2_action_is_scoped_to_this_cluster():
    mutating = ("ec2:RunInstances", "ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:CreateTags",
                "ec2:TerminateInstances", "ec2:DeleteLaunchTemplate")
    for sid, statement in STATEMENTS.items():
        if sid == "AllowScopedEC2InstanceAccessActions":
            # Launching against images, subnets and security groups needs no tag: those are not created or changed.
            assert all(":instance/" not in r for r in statement["Resource"])
            continue
        if any(a in mutating for a in _actions(statement)):
            conditions = json.dumps(statement.get("Condition", {}))
            assert f"kubernetes.io/cluster/{CLUSTER}" in conditions, sid


def test_termination_requires_a_karpenter_owned_instance():
    deletion = STATEMENTS["AllowScopedDeletion"]
    assert set(_actions(deletion)) == {"ec2:TerminateInstances", "ec2:DeleteLaunchTemplate"}
    assert deletion["Condition"]["StringEquals"] == {f"aws:ResourceTag/kubernetes.io/cluster/{CLUSTER}": "owned"}
    assert deletion["Condition"]["StringLike"] == {"aws:ResourceTag/karpenter.sh/nodepool": "*"}


def test_pass_role_only_for_the_node_role_and_only_to_ec2():
    pass_role = [s for s in POLICY["Statement"] if "iam:PassRole" in _actions(s)]
    assert len(pass_role) == 1
    assert pass_role[0]["Resource"] == NODE_ROLE
    assert "ec2.amazonaws.com" in pass_role[0]["Condition"]["StringEquals"]["iam:PassedToService"]


def test_queue_and_cluster_permissions_name_exact_resources():
    assert STATEMENTS["AllowInterruptionQueueActions"]["Resource"] == QUEUE
    assert set(_actions(STATEMENTS["AllowInterruptionQueueActions"])) == {
        "sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"}
    assert STATEMENTS["AllowAPIServerEndpointDiscovery"]["Resource"] == \
        f"arn:aws:eks:us-west-2:123456789012:cluster/{CLUSTER}"
    assert STATEMENTS["AllowRegionalReadActions"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": "us-west-2"}}


def test_no_wildcard_action_anywhere():
    assert all("*" not in a for s in POLICY["Statement"] for a in _actions(s))


def test_controller_policy_fits_an_inline_role_policy():
    # IAM counts the aggregate inline policy size of a role without whitespace: at most 10,240 characters.
    assert len(json.dumps(POLICY, separators=(",", ":"))) < 10_240


RULES = [f"arn:aws:events:us-east-1:123456789012:rule/karpenter-{n}" for n in ("spot", "health")]


def test_queue_policy_admits_only_this_stacks_rules_and_denies_plain_http():
    policy = interruption_queue_policy(QUEUE, RULES)
    events, sqs, deny = policy["Statement"]
    assert events["Effect"] == "Allow" and events["Action"] == "sqs:SendMessage"
    assert events["Principal"] == {"Service": "events.amazonaws.com"}
    assert events["Condition"] == {"ArnEquals": {"aws:SourceArn": sorted(RULES)}}
    assert sqs["Principal"] == {"Service": "sqs.amazonaws.com"} and sqs["Action"] == "sqs:SendMessage"
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*" and deny["Action"] == "sqs:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {events["Resource"], sqs["Resource"], deny["Resource"]} == {QUEUE}


def test_the_rendered_queue_policy_names_every_rendered_rule(stack):
    (policy,) = stack.of_type("aws:sqs/queuePolicy:QueuePolicy")
    statement = json.loads(policy["inputs"]["policy"])["Statement"][0]
    rules = stack.of_type("aws:cloudwatch/eventRule:EventRule")
    assert len(statement["Condition"]["ArnEquals"]["aws:SourceArn"]) == len(rules) == len(INTERRUPTION_EVENTS)
    assert all(arn.startswith("arn:aws:events:") and ":rule/" in arn
               for arn in statement["Condition"]["ArnEquals"]["aws:SourceArn"])


def test_interruption_events_cover_spot_rebalance_state_and_health():
    detail_types = {p["detail-type"][0]: p["source"] for p in INTERRUPTION_EVENTS.values()}
    assert detail_types["EC2 Spot Instance Interruption Warning"] == ["aws.ec2"]
    assert detail_types["EC2 Instance Rebalance Recommendation"] == ["aws.ec2"]
    assert detail_types["EC2 Instance State-change Notification"] == ["aws.ec2"]
    assert detail_types["AWS Health Event"] == ["aws.health"]


def test_pod_identity_trust_is_limited_to_one_service_account():
    trust = pod_identity_trust_policy(CLUSTER, "kube-system", "karpenter", "123456789012")
    [statement] = trust["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert set(statement["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    assert statement["Condition"]["StringEquals"] == {
        "aws:SourceAccount": "123456789012",
        "aws:RequestTag/eks-cluster-name": CLUSTER,
        "aws:RequestTag/kubernetes-namespace": "kube-system",
        "aws:RequestTag/kubernetes-service-account": "karpenter",
    }


def test_controller_values_pin_karpenter_to_system_nodes():
    values = controller_values(cluster_name=CLUSTER, queue_name=CLUSTER, replicas=2)
    assert values["settings"] == {"clusterName": CLUSTER, "interruptionQueue": CLUSTER}
    assert values["nodeSelector"]["llm-platform.io/node-role"] == "system"
    assert values["serviceAccount"]["name"] == "karpenter"
    assert values["replicas"] == 2
