"""Every rendered manifest of a Kubernetes core kind passes kubernetes-validate --strict for the stack's version."""

from __future__ import annotations

import kubernetes_validate
import pytest

from tests.conftest import Rendered

# Custom resources have no schema in kubernetes-validate; their specs are asserted field by field in
# test_program.py and test_gpu_node_pool.py. Any other kind without a schema raises SchemaNotFoundError here.
CUSTOM_KINDS = {("karpenter.sh/v1", "NodePool"), ("karpenter.k8s.aws/v1", "EC2NodeClass")}


def _version(stack: Rendered) -> str:
    return stack.of_type("eks:index:Cluster")[0]["inputs"]["version"]


def test_manifests_were_rendered(stack: Rendered):
    assert {m["kind"] for m in stack.manifests} >= {"StorageClass", "NodePool", "EC2NodeClass"}


def test_core_manifests_validate_strictly(stack: Rendered):
    version = f"{_version(stack)}.0"
    checked = set()
    for manifest in stack.manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked.add(manifest["kind"])
    assert checked >= {"StorageClass", "Namespace", "ServiceAccount", "Secret", "Deployment", "Service",
                       "PodDisruptionBudget"}


def test_strict_validation_catches_a_misplaced_deployment_field(stack: Rendered):
    deployment = stack.kind("Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    broken = {**deployment, "spec": {**deployment["spec"], "template": {**deployment["spec"]["template"], "spec": {
        **pod, "containers": [{**pod["containers"][0], "startupProbe": {"httpGet": {"path": "/health"}}}]}}}}
    with pytest.raises(kubernetes_validate.ValidationError):  # an httpGet probe without its port
        kubernetes_validate.validate(broken, f"{_version(stack)}.0", strict=True)


def test_strict_validation_catches_an_unknown_field(stack: Rendered):
    # Guards the guard: a typo in a core manifest must fail, not pass silently.
    storage_class = dict(stack.kind("StorageClass")[0], volumeBindingMod="Immediate")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(storage_class, f"{_version(stack)}.0", strict=True)

