"""Every rendered manifest validates: core kinds with kubernetes-validate --strict for the stack's Kubernetes version,
custom resources against their upstream CRDs' schemas and CEL rules (tests/crd_schema.py), unknown fields rejected
in both."""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from tests import crd_schema
from tests.conftest import Rendered

CUSTOM_KINDS = {"NodePool", "EC2NodeClass", "ScaledObject", "PodMonitor", "ServiceMonitor", "PrometheusRule",
                "AlertmanagerConfig"}


def _version(stack: Rendered) -> str:
    return stack.of_type("eks:index:Cluster")[0]["inputs"]["version"]


def _is_custom(manifest: dict) -> bool:
    return (manifest["apiVersion"], manifest["kind"]) in crd_schema.known_kinds()


def test_manifests_were_rendered(stack: Rendered):
    assert {m["kind"] for m in stack.manifests} >= {"StorageClass", *CUSTOM_KINDS}


def test_core_manifests_validate_strictly(stack: Rendered):
    version = f"{_version(stack)}.0"
    checked = set()
    for manifest in stack.manifests:
        if _is_custom(manifest):
            continue
        kubernetes_validate.validate(manifest, version, strict=True)
        checked.add(manifest["kind"])
    assert checked >= {"StorageClass", "Namespace", "ServiceAccount", "Secret", "Deployment", "Service",
                       "PodDisruptionBudget", "ConfigMap"}


def test_custom_resources_validate_against_their_crds(stack: Rendered):
    checked = set()
    failures = []
    for manifest in stack.manifests:
        if _is_custom(manifest):
            failures += crd_schema.problems(manifest)
            checked.add(manifest["kind"])
    assert not failures, "\n".join(failures)
    # prod's multi-node model is a LeaderWorkerSet (its pod templates are validated by the CRD's schema too)
    assert checked == CUSTOM_KINDS | ({"LeaderWorkerSet"} if stack.stack == "prod" else set())


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


def _broken(stack: Rendered, kind: str, change) -> list[str]:
    manifest = copy.deepcopy(stack.kind(kind)[0])
    change(manifest["spec"])
    return crd_schema.problems(manifest)


# (kind, what is broken, how, text the problem must contain)
BROKEN = [
    ("ScaledObject", "unknown field", lambda s: s.update(minReplicas=1), "'minReplicas' was unexpected"),
    ("ScaledObject", "threshold as a number", lambda s: s["triggers"][0]["metadata"].update(threshold=10),
     "10 is not of type 'string'"),
    ("ScaledObject", "no scale target", lambda s: s.pop("scaleTargetRef"), "'scaleTargetRef' is a required property"),
    ("PodMonitor", "misspelt endpoint field", lambda s: s["podMetricsEndpoints"][0].update(relabellings=[]),
     "'relabellings' was unexpected"),
    ("PrometheusRule", "bad duration", lambda s: s["groups"][2]["rules"][0].update({"for": "5 minutes"}),
     "does not match"),
    ("AlertmanagerConfig", "unknown match type",
     lambda s: s["inhibitRules"][0]["sourceMatch"][0].update(matchType="=="), "'==' is not one of"),
    ("NodePool", "v1beta1 consolidation policy",
     lambda s: s["disruption"].update(consolidationPolicy="WhenUnderutilized"), "is not one of"),
    ("EC2NodeClass", "IMDS hop limit as text",
     lambda s: s["metadataOptions"].update(httpPutResponseHopLimit="1"), "is not of type 'integer'"),
    # Karpenter's CEL rules, evaluated as the API server would.
    ("NodePool", "hostname requirement",
     lambda s: s["template"]["spec"]["requirements"].append(
         {"key": "kubernetes.io/hostname", "operator": "In", "values": ["ip-10-0-0-1"]}),
     'label "kubernetes.io/hostname" is restricted'),
    ("NodePool", "label in Karpenter's domain",
     lambda s: s["template"]["metadata"]["labels"].update({"karpenter.sh/team": "ml"}),
     'label domain "karpenter.sh" is restricted'),
    ("NodePool", "In without values",
     lambda s: s["template"]["spec"]["requirements"].append(
         {"key": "topology.kubernetes.io/zone", "operator": "In", "values": []}), "CEL:"),
    ("EC2NodeClass", "unknown AMI family", lambda s: s.update(amiSelectorTerms=[{"alias": "ubuntu@latest"}]),
     "family is not supported"),
    ("EC2NodeClass", "alias with an AMI id",
     lambda s: s.update(amiSelectorTerms=[{"alias": "al2023@latest"}, {"id": "ami-0123456789abcdef0"}]),
     "'alias' is mutually exclusive"),
]


@pytest.mark.parametrize(("kind", "how", "text"), [(k, how, t) for k, _, how, t in BROKEN],
                         ids=[f"{k}-{what}" for k, what, _, _ in BROKEN])
def test_crd_validation_catches_a_broken_custom_resource(prod: Rendered, kind, how, text):
    problems = _broken(prod, kind, how)
    assert any(text in p for p in problems), problems
