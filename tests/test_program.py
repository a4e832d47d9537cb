"""The whole program (dev and prod) under recording mocks: what a user relies on after `pulumi up`."""

from __future__ import annotations

import json

import pytest

import config
from catalog import versions
from tests.conftest import ROOT, Rendered

SUBNET = "aws:ec2/subnet:Subnet"
ROLE = "aws:iam/role:Role"


def _policy(resource: dict, key: str = "assumeRolePolicy") -> dict:
    return json.loads(resource["inputs"][key])


def test_prod_inventory_holds_the_whole_foundation(prod: Rendered):
    types = [r["type"] for r in prod.inventory]
    assert types.count("aws:ec2/vpc:Vpc") == 1
    assert types.count("eks:index:Cluster") == 1
    assert types.count("aws:eks/nodeGroup:NodeGroup") == 1
    assert types.count("aws:sqs/queue:Queue") == 1
    assert types.count("aws:cloudwatch/eventRule:EventRule") >= 4
    assert [r["release"] for r in prod.releases.values() if r["chart"].endswith("/karpenter")] == ["karpenter"]
    assert "nvidia-device-plugin" in prod.releases
    nodepools = {m["metadata"]["name"] for m in prod.kind("NodePool")}
    pools = ("large", "quality", "small", "multinode", "single")
    assert nodepools == {f"{p}-{c}" for p in pools for c in ("spot", "on-demand")} - {"multinode-spot"}
    assert {m["metadata"]["name"] for m in prod.kind("EC2NodeClass")} == set(pools)


@pytest.mark.parametrize(("fixture", "azs"), [("dev", 2), ("prod", 3)])
def test_private_and_public_subnets_span_distinct_azs(request, fixture, azs):
    rendered: Rendered = request.getfixturevalue(fixture)
    subnets = rendered.of_type(SUBNET)
    private = [s["inputs"] for s in subnets if "kubernetes.io/role/internal-elb" in s["inputs"]["tags"]]
    public = [s["inputs"] for s in subnets if "kubernetes.io/role/elb" in s["inputs"]["tags"]]
    assert len(private) == len(public) == azs
    assert len({s["availabilityZone"] for s in private}) == azs
    assert {s["availabilityZone"] for s in public} == {s["availabilityZone"] for s in private}
    cluster = rendered.of_type("eks:index:Cluster")[0]["inputs"]["name"]
    # Karpenter finds its subnets by tag: only the private ones carry it, so GPU nodes never get public IPs.
    assert all(s["tags"]["karpenter.sh/discovery"] == cluster for s in private)
    assert all("karpenter.sh/discovery" not in s["tags"] for s in public)


def test_nat_gateways_follow_the_stack(dev: Rendered, prod: Rendered):
    assert len(dev.of_type("aws:ec2/natGateway:NatGateway")) == 1
    assert len(prod.of_type("aws:ec2/natGateway:NatGateway")) == 3
    # Each prod AZ routes through its own NAT gateway.
    routes = [rt["inputs"]["routes"][0]["natGatewayId"] for rt in prod.of_type("aws:ec2/routeTable:RouteTable")
              if "natGatewayId" in rt["inputs"]["routes"][0]]
    assert len(set(routes)) == 3


def test_eks_cluster_is_private_capable_and_uses_access_entries(stack: Rendered):
    [cluster] = stack.of_type("eks:index:Cluster")
    inputs = cluster["inputs"]
    assert inputs["authenticationMode"] == "API"
    assert inputs["endpointPrivateAccess"] is True
    assert inputs["version"] == "1.35"
    assert inputs["skipDefaultNodeGroup"] is True
    assert inputs["bootstrapSelfManagedAddons"] is False
    assert len(inputs["privateSubnetIds"]) == len(stack.of_type(SUBNET)) // 2


def test_all_core_addons_are_managed_and_ebs_csi_uses_pod_identity(stack: Rendered):
    addons = {a["inputs"]["addonName"]: a["inputs"] for a in stack.of_type("aws:eks/addon:Addon")}
    assert set(addons) == {"vpc-cni", "coredns", "kube-proxy", "eks-pod-identity-agent", "aws-ebs-csi-driver"}
    [association] = addons["aws-ebs-csi-driver"]["podIdentityAssociations"]
    assert association["serviceAccount"] == "ebs-csi-controller-sa"
    role = stack.named("llm-cluster-ebs-csi", ROLE)
    assert association["roleArn"].rsplit("/", 1)[-1].startswith("llm-cluster-ebs-csi")
    trust = _policy(role)["Statement"][0]
    assert trust["Principal"]["Service"] == "pods.eks.amazonaws.com"
    assert set(trust["Action"]) == {"sts:AssumeRole", "sts:TagSession"}
    assert trust["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"] == "ebs-csi-controller-sa"


def test_system_node_group_runs_controllers_on_demand(stack: Rendered):
    [group] = stack.of_type("aws:eks/nodeGroup:NodeGroup")
    inputs = group["inputs"]
    assert inputs["amiType"] == "AL2023_x86_64_STANDARD"
    assert inputs["capacityType"] == "ON_DEMAND"
    assert inputs["labels"] == {"llm-platform.io/node-role": "system"}
    scaling = inputs["scalingConfig"]
    assert 1 <= scaling["minSize"] <= scaling["desiredSize"] <= scaling["maxSize"]
    assert len(inputs["subnetIds"]) == len(stack.of_type(SUBNET)) // 2


def test_default_storage_class_is_encrypted_gp3(stack: Rendered):
    [sc] = stack.kind("StorageClass")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["provisioner"] == "ebs.csi.aws.com"
    assert sc["parameters"]["type"] == "gp3" and sc["parameters"]["encrypted"] == "true"
    assert sc["volumeBindingMode"] == "WaitForFirstConsumer"


def test_every_resource_uses_the_explicit_providers(stack: Rendered):
    # Not the ambient default providers: AWS resources get the stack's region and tags, Kubernetes resources go to
    # the new cluster rather than whatever kubeconfig the operator has loaded.
    for r in stack.inventory:
        if not r["custom"] or r["type"].startswith("pulumi:providers:"):
            continue
        expected = "llm-cluster-k8s" if r["type"].startswith("kubernetes:") else "llm-aws"
        assert r["provider"] == expected, (r["type"], r["name"], r["provider"])


def test_karpenter_chart_is_pinned_and_configured(stack: Rendered):
    controller, crds = stack.releases["karpenter"], stack.releases["karpenter-crd"]
    assert controller["version"] == crds["version"] == versions.KARPENTER.version
    assert controller["chart"] == "oci://public.ecr.aws/karpenter/karpenter"
    assert controller["skipCrds"] is True  # CRDs come from karpenter-crd, which Helm upgrades
    cluster = stack.of_type("eks:index:Cluster")[0]["inputs"]["name"]
    queue = stack.of_type("aws:sqs/queue:Queue")[0]["inputs"]["name"]
    assert controller["values"]["settings"] == {"clusterName": cluster, "interruptionQueue": queue}
    assert controller["namespace"] == "kube-system"


def test_karpenter_runs_two_replicas_in_prod_and_fits_dev(dev: Rendered, prod: Rendered):
    assert prod.releases["karpenter"]["values"]["replicas"] == 2
    dev_nodes = dev.of_type("aws:eks/nodeGroup:NodeGroup")[0]["inputs"]["scalingConfig"]["minSize"]
    assert dev.releases["karpenter"]["values"]["replicas"] <= dev_nodes


def test_karpenter_pod_identity_matches_the_chart_service_account(stack: Rendered):
    association = stack.named("llm-karpenter-controller", "aws:eks/podIdentityAssociation:PodIdentityAssociation")
    values = stack.releases["karpenter"]["values"]
    assert association["inputs"]["serviceAccount"] == values["serviceAccount"]["name"]
    assert association["inputs"]["namespace"] == stack.releases["karpenter"]["namespace"]
    trust = _policy(stack.named("llm-karpenter-controller", ROLE))
    assert trust["Statement"][0]["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-service-account"] == "karpenter"


def test_karpenter_node_role_joins_the_cluster(stack: Rendered):
    node_role = stack.named("llm-karpenter-node", ROLE)
    assert _policy(node_role)["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    attached = {r["inputs"]["policyArn"].rsplit("/", 1)[-1] for r in stack.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if r["name"].startswith("llm-karpenter-node-")}
    assert attached == {"AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly",
                        "AmazonSSMManagedInstanceCore"}
    [entry] = stack.of_type("aws:eks/accessEntry:AccessEntry")
    assert entry["inputs"]["type"] == "EC2_LINUX"
    node_class = stack.kind("EC2NodeClass")[0]
    assert entry["inputs"]["principalArn"].endswith("/" + node_class["spec"]["role"])


def test_controller_policy_is_scoped_to_the_real_queue_and_node_role(stack: Rendered):
    policy = stack.named("llm-karpenter-controller", "aws:iam/rolePolicy:RolePolicy")
    statements = {s["Sid"]: s for s in json.loads(policy["inputs"]["policy"])["Statement"]}
    queue = stack.of_type("aws:sqs/queue:Queue")[0]["inputs"]["name"]
    assert statements["AllowInterruptionQueueActions"]["Resource"].endswith(f":{queue}")
    node_class = stack.kind("EC2NodeClass")[0]
    assert statements["AllowPassingInstanceRole"]["Resource"].endswith("/" + node_class["spec"]["role"])


def test_interruption_queue_is_encrypted_tls_only_and_fed_by_every_rule(stack: Rendered):
    [queue] = stack.of_type("aws:sqs/queue:Queue")
    assert queue["inputs"]["sqsManagedSseEnabled"] is True
    [queue_policy] = stack.of_type("aws:sqs/queuePolicy:QueuePolicy")
    deny = [s for s in _policy(queue_policy, "policy")["Statement"] if s["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    rules = stack.of_type("aws:cloudwatch/eventRule:EventRule")
    patterns = {json.loads(r["inputs"]["eventPattern"])["detail-type"][0] for r in rules}
    assert {"EC2 Spot Instance Interruption Warning", "EC2 Instance Rebalance Recommendation",
            "EC2 Instance State-change Notification", "AWS Health Event"} <= patterns
    targets = stack.of_type("aws:cloudwatch/eventTarget:EventTarget")
    assert len(targets) == len(rules)
    assert all(t["inputs"]["arn"].endswith(f":{queue['inputs']['name']}") for t in targets)


def test_nodepools_prefer_spot_and_fall_back_to_on_demand(stack: Rendered):
    pools = {m["metadata"]["name"]: m["spec"] for m in stack.kind("NodePool")}
    for name, spec in pools.items():
        if name.endswith("-spot"):
            fallback = pools[name.removesuffix("-spot") + "-on-demand"]
            assert spec["weight"] > fallback["weight"]
            assert spec["template"]["metadata"]["labels"] == fallback["template"]["metadata"]["labels"]
        template = spec["template"]["spec"]
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in template["taints"]
        assert template["nodeClassRef"]["kind"] == "EC2NodeClass"
        assert spec["disruption"]["consolidationPolicy"] in ("WhenEmptyOrUnderutilized", "WhenEmpty")


def test_prod_nodepool_limits_and_budgets(prod: Rendered):
    pools = config.load_stack_file(ROOT, "prod").gpu_pools
    for m in prod.kind("NodePool"):
        pool = pools[m["spec"]["template"]["metadata"]["labels"]["llm-platform.io/gpu-pool"]]
        assert m["spec"]["limits"] == {"nvidia.com/gpu": pool.gpu_limit}
        assert m["spec"]["disruption"]["budgets"] == [{"nodes": pool.disruption_budget}]
        assert m["spec"]["disruption"]["consolidationPolicy"] == pool.consolidation_policy
    large = next(m for m in prod.kind("NodePool") if m["metadata"]["name"] == "large-spot")
    reqs = {r["key"]: r["values"] for r in large["spec"]["template"]["spec"]["requirements"]}
    assert reqs["node.kubernetes.io/instance-type"] == ["p4de.24xlarge", "p5.48xlarge"]
    quality = next(m for m in prod.kind("NodePool") if m["metadata"]["name"] == "quality-on-demand")
    assert quality["spec"]["limits"] == {"nvidia.com/gpu": 16}


def test_node_classes_get_the_stack_tags_and_big_encrypted_volumes(stack: Rendered):
    provider = stack.of_type("pulumi:providers:aws")[0]["inputs"]
    default_tags = json.loads(provider["defaultTags"])["tags"]
    for node_class in stack.kind("EC2NodeClass"):
        spec = node_class["spec"]
        assert spec["tags"] == default_tags
        [volume] = spec["blockDeviceMappings"]
        assert volume["ebs"]["encrypted"] is True
        assert int(volume["ebs"]["volumeSize"].removesuffix("Gi")) >= 200
        assert spec["metadataOptions"]["httpTokens"] == "required"


def test_device_plugin_tolerates_the_gpu_taint(stack: Rendered):
    release = stack.releases["nvidia-device-plugin"]
    assert release["version"] == versions.NVIDIA_DEVICE_PLUGIN.version
    assert release["repository"] == versions.NVIDIA_DEVICE_PLUGIN.repository
    taint = stack.kind("NodePool")[0]["spec"]["template"]["spec"]["taints"][0]
    assert any(t["key"] == taint["key"] and t["operator"] == "Exists" and t["effect"] == taint["effect"]
               for t in release["values"]["tolerations"])
    terms = release["values"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    labels = stack.kind("NodePool")[0]["spec"]["template"]["metadata"]["labels"]
    # The plugin's affinity must select the nodes the GPU pools create.
    for expression in terms[0]["matchExpressions"]:
        if expression["key"] in labels:
            assert labels[expression["key"]] in expression["values"]


def test_aws_tags_are_merged_once_on_the_provider(prod: Rendered):
    provider = prod.of_type("pulumi:providers:aws")[0]["inputs"]
    assert provider["region"] == "us-east-1"
    tags = json.loads(provider["defaultTags"])["tags"]
    assert tags["stack"] == "prod" and tags["project"] == "llm-platform" and tags["environment"] == "prod"


def test_kubeconfig_is_exported_only_as_a_secret(stack: Rendered):
    assert stack.outputs["kubeconfig"] == "[secret]"
    assert "get-token" not in json.dumps(stack.outputs)
    assert stack.outputs["clusterName"] == stack.of_type("eks:index:Cluster")[0]["inputs"]["name"]


def test_plan_summary_lists_pools_and_charts(prod: Rendered):
    assert "large-spot" in prod.stdout and "weight 100" in prod.stdout
    assert f"karpenter                oci://public.ecr.aws/karpenter/karpenter {versions.KARPENTER.version}" in prod.stdout


def test_plan_is_deterministic(prod: Rendered, tmp_path):
    # PR reviews diff plans: the same config must render byte-identical artifacts.
    from tests.conftest import render

    again = render("prod", tmp_path)
    assert (again.out / "inventory.json").read_text() == (prod.out / "inventory.json").read_text()
    for kind in ("manifests", "values"):
        for path in sorted((prod.out / kind).glob("*.yaml")):
            assert (again.out / kind / path.name).read_text() == path.read_text(), path.name
    assert again.stdout.replace(str(again.out), "") == prod.stdout.replace(str(prod.out), "")
