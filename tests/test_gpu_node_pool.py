"""NodePool and EC2NodeClass specs for GPU pools, table-driven and without a Pulumi runtime."""

from __future__ import annotations

import pytest

from components.compute.gpu_node_pool import node_class_spec, nodepool_spec, requirements
from config import GpuPool


def _req(reqs: list[dict], key: str) -> dict | None:
    return next((r for r in reqs if r["key"] == key), None)


@pytest.mark.parametrize(("families", "types", "key", "values"), [
    (["g6e", "g5"], [], "karpenter.k8s.aws/instance-family", ["g5", "g6e"]),
    ([], ["p5.48xlarge", "p4d.24xlarge"], "node.kubernetes.io/instance-type", ["p4d.24xlarge", "p5.48xlarge"]),
    # A union of a family and a type must not become an AND of two requirements.
    (["p4de"], ["p5.48xlarge"], "node.kubernetes.io/instance-type", ["p4de.24xlarge", "p5.48xlarge"]),
])
def test_instance_selection(families, types, key, values):
    reqs = requirements(GpuPool(instance_families=families, instance_types=types, gpu_limit=8), "spot")
    assert _req(reqs, key) == {"key": key, "operator": "In", "values": values}
    other = ({"karpenter.k8s.aws/instance-family", "node.kubernetes.io/instance-type"} - {key}).pop()
    assert _req(reqs, other) is None


@pytest.mark.parametrize("capacity", ["spot", "on-demand"])
def test_each_nodepool_pins_one_capacity_type_and_nvidia_amd64(capacity):
    reqs = requirements(GpuPool(instance_families=["g6e"], gpu_limit=4), capacity)
    assert _req(reqs, "karpenter.sh/capacity-type")["values"] == [capacity]
    assert _req(reqs, "kubernetes.io/arch")["values"] == ["amd64"]
    assert _req(reqs, "karpenter.k8s.aws/instance-gpu-manufacturer")["values"] == ["nvidia"]


def test_spot_outweighs_on_demand_so_it_is_tried_first():
    pool = GpuPool(instance_families=["g6e"], gpu_limit=4)
    assert nodepool_spec("p", pool, "spot", "p")["weight"] > nodepool_spec("p", pool, "on-demand", "p")["weight"]


def test_nodepool_spec_carries_taint_limits_disruption_and_expiry():
    pool = GpuPool(instance_types=["p5.48xlarge"], gpu_limit=64, disruption_budget="20%", consolidate_after="30m",
                   expire_after="720h", termination_grace_period="2h")
    spec = nodepool_spec("large", pool, "spot", "large")
    template = spec["template"]["spec"]
    assert template["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}]
    assert template["nodeClassRef"] == {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass", "name": "large"}
    assert template["expireAfter"] == "720h" and template["terminationGracePeriod"] == "2h"
    assert spec["limits"] == {"nvidia.com/gpu": 64}
    assert spec["disruption"] == {"consolidationPolicy": "WhenEmptyOrUnderutilized", "consolidateAfter": "30m",
                                  "budgets": [{"nodes": "20%"}]}
    assert spec["template"]["metadata"]["labels"]["llm-platform.io/gpu-pool"] == "large"


@pytest.mark.parametrize(("family", "version", "alias", "data_device"), [
    ("al2023", "latest", "al2023@latest", "/dev/xvda"),
    ("al2023", "v20251103", "al2023@v20251103", "/dev/xvda"),
    ("bottlerocket", "v1.46.0", "bottlerocket@v1.46.0", "/dev/xvdb"),
])
def test_node_class_ami_alias_and_volumes(family, version, alias, data_device):
    pool = GpuPool(instance_families=["g6e"], gpu_limit=4, ami_family=family, ami_version=version, root_volume_gib=250)
    spec = node_class_spec(pool, cluster_name="llm-x", node_role="node-role", tags={"team": "ml"})
    assert spec["amiSelectorTerms"] == [{"alias": alias}]
    data = next(b for b in spec["blockDeviceMappings"] if b["deviceName"] == data_device)
    assert data["ebs"] == {"volumeSize": "250Gi", "volumeType": "gp3", "encrypted": True, "deleteOnTermination": True}
    assert all(b["ebs"]["encrypted"] for b in spec["blockDeviceMappings"])


def test_node_class_selectors_imds_and_tags():
    pool = GpuPool(instance_families=["g6e"], gpu_limit=4)
    spec = node_class_spec(pool, cluster_name="llm-x", node_role="node-role", tags={"team": "ml"})
    assert spec["role"] == "node-role"
    assert spec["subnetSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "llm-x"}}]
    assert spec["securityGroupSelectorTerms"] == [{"tags": {"karpenter.sh/discovery": "llm-x"}}]
    assert spec["metadataOptions"]["httpTokens"] == "required"
    assert spec["metadataOptions"]["httpPutResponseHopLimit"] == 1
    assert spec["tags"] == {"team": "ml"}
    assert spec["instanceStorePolicy"] == "RAID0"
    assert "instanceStorePolicy" not in node_class_spec(
        GpuPool(instance_families=["g6e"], gpu_limit=4, instance_store_raid0=False),
        cluster_name="c", node_role="r", tags={})
