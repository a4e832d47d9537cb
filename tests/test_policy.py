"""The CrossGuard pack (policy/): each rule against resources that pass and resources that break it, the rendered
stacks' verdicts, and the pack starting the way the Pulumi CLI starts it."""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys

import pytest
import yaml

from llmctl.policy_check import Subject, Violation, evaluate
from policy.rules import POLICIES
from tests.conftest import ROOT, Rendered, pins, stack_values

GPU = "nvidia.com/gpu"


def found(*subjects: Subject, policy: str, config: dict | None = None) -> list[Violation]:
    return [v for v in evaluate(list(subjects), config) if v.policy == policy]


# S3 -------------------------------------------------------------------------------------------------------------
BUCKET_NAME = "models-1"


def bucket() -> Subject:
    return Subject("aws:s3/bucket:Bucket", "registry", {"bucketPrefix": "models-"}, {"bucket": BUCKET_NAME},
                   urn="urn:bucket")


def encryption(algorithm: str = "aws:kms", linked_by: str = "name") -> Subject:
    inputs = {"bucket": BUCKET_NAME if linked_by == "name" else "unknown-during-preview",
              "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": algorithm, "kmsMasterKeyId": "k"}}]}
    deps = {"bucket": ["urn:bucket"]} if linked_by == "dependency" else {}
    return Subject("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                   "enc", inputs, property_dependencies=deps)


def public_access_block(**overrides: bool) -> Subject:
    flags = {"blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True,
             "restrictPublicBuckets": True} | overrides
    return Subject("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "pab", {"bucket": BUCKET_NAME, **flags})


def bucket_policy(*statements: dict) -> Subject:
    return Subject("aws:s3/bucketPolicy:BucketPolicy", "policy",
                   {"bucket": BUCKET_NAME, "policy": json.dumps({"Version": "2012-10-17", "Statement": list(statements)})})


TLS_ONLY = {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
            "Resource": ["arn:aws:s3:::models-1", "arn:aws:s3:::models-1/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}}


def test_a_bucket_with_kms_blocked_public_access_and_tls_only_passes_every_s3_rule():
    protected = [bucket(), encryption(), public_access_block(), bucket_policy(TLS_ONLY)]
    assert [v for v in evaluate(protected) if v.policy.startswith("s3-")] == []


@pytest.mark.parametrize("resources, policy, says", [
    ([bucket(), public_access_block(), bucket_policy(TLS_ONLY)], "s3-bucket-kms-encryption",
     "has no BucketServerSideEncryptionConfiguration"),
    ([bucket(), encryption("AES256"), public_access_block(), bucket_policy(TLS_ONLY)], "s3-bucket-kms-encryption",
     "encrypted with ['AES256']"),
    ([bucket(), encryption(), bucket_policy(TLS_ONLY)], "s3-bucket-public-access-blocked", "has no BucketPublicAccessBlock"),
    ([bucket(), encryption(), public_access_block(restrictPublicBuckets=False), bucket_policy(TLS_ONLY)],
     "s3-bucket-public-access-blocked", "leaves restrictPublicBuckets unset or false"),
    ([bucket(), encryption(), public_access_block()], "s3-bucket-tls-only", "no bucket policy statement denying"),
    ([bucket(), encryption(), public_access_block(), bucket_policy({**TLS_ONLY, "Effect": "Allow"})],
     "s3-bucket-tls-only", "aws:SecureTransport is false"),
])
def test_each_missing_bucket_protection_is_reported(resources, policy, says):
    violations = found(*resources, policy=policy)
    assert len(violations) == 1 and says in violations[0].message, violations
    on_block = "public access block" in says or "leaves" in says
    expected = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock pab" if on_block else "aws:s3/bucket:Bucket registry"
    assert violations[0].resource == expected and violations[0].level == "mandatory"


def test_sse_s3_is_allowed_only_for_a_bucket_that_receives_access_logs():
    logging = Subject("aws:s3/bucketLogging:BucketLogging", "access-logs",
                      {"bucket": "other-bucket", "targetBucket": "unknown-during-preview", "targetPrefix": "s3-access/"},
                      property_dependencies={"targetBucket": ["urn:bucket"]})
    s3_managed = [bucket(), encryption("AES256"), public_access_block(), bucket_policy(TLS_ONLY)]
    assert found(*s3_managed, logging, policy="s3-bucket-kms-encryption") == []
    (violation,) = found(*s3_managed, policy="s3-bucket-kms-encryption")
    assert "AES256 only for a bucket that receives S3 access logs" in violation.message


def test_a_new_buckets_settings_are_matched_by_property_dependency_when_its_name_is_unknown():
    assert found(bucket(), encryption(linked_by="dependency"), policy="s3-bucket-kms-encryption") == []
    assert found(bucket(), encryption(linked_by="neither"), policy="s3-bucket-kms-encryption")


# IAM ------------------------------------------------------------------------------------------------------------

def role_policy(*statements: dict, as_text: bool = True) -> Subject:
    document = {"Version": "2012-10-17", "Statement": list(statements)}
    return Subject("aws:iam/rolePolicy:RolePolicy", "controller",
                   {"role": "r", "policy": json.dumps(document) if as_text else document})


@pytest.mark.parametrize("statement, as_text, wrong", [
    ({"Effect": "Allow", "Action": "*", "Resource": "*"}, True, True),
    ({"Effect": "Allow", "Action": ["ec2:DescribeInstances", "s3:*"], "Resource": ["*"]}, True, True),
    ({"Effect": "Allow", "Action": "*", "Resource": "*"}, False, True),
    ({"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::models-1/*"}, True, False),
    ({"Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"}, True, False),
    ({"Effect": "Deny", "Action": "*", "Resource": "*"}, True, False),
])
def test_iam_statements_allowing_every_action_on_every_resource_are_refused(statement, as_text, wrong):
    assert bool(found(role_policy(statement, as_text=as_text), policy="iam-no-wildcard-admin")) == wrong


def test_iam_wildcards_in_inline_role_policies_and_administrator_access_are_refused():
    role = Subject("aws:iam/role:Role", "admin", {"inlinePolicies": [{"name": "all", "policy": json.dumps(
        {"Statement": [{"Sid": "All", "Effect": "Allow", "Action": "*", "Resource": "*"}]})}]})
    attachment = Subject("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "admin",
                         {"role": "r", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"})
    scoped = Subject("aws:iam/rolePolicyAttachment:RolePolicyAttachment", "ecr",
                     {"role": "r", "policyArn": "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly"})
    messages = [v.message for v in found(role, attachment, scoped, policy="iam-no-wildcard-admin")]
    assert len(messages) == 2
    assert "statement All allows ['*'] on Resource '*'" in messages[0] and "AdministratorAccess" in messages[1]


# Karpenter and EC2 ----------------------------------------------------------------------------------------------

def nodepool(limits: dict | None) -> Subject:
    return Subject("kubernetes:karpenter.sh/v1:NodePool", "pool", {"metadata": {"name": "small-spot"},
                                                                    "spec": {"limits": limits} if limits is not None else {}})


@pytest.mark.parametrize("limits, wrong", [
    ({GPU: 64}, False), ({GPU: "16", "cpu": "1000"}, False), (None, True), ({"cpu": "1000"}, True), ({GPU: 0}, True),
])
def test_every_nodepool_caps_its_gpus(limits, wrong):
    violations = found(nodepool(limits), policy="karpenter-nodepool-gpu-limit")
    assert bool(violations) == wrong
    assert not wrong or "Karpenter NodePool small-spot" in violations[0].message


def nodeclass(metadata_options: dict | None, alias: str = "al2023@v20251117") -> Subject:
    spec = {"amiSelectorTerms": [{"alias": alias}]}
    if metadata_options is not None:
        spec["metadataOptions"] = metadata_options
    return Subject("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass", "class", {"metadata": {"name": "small"}, "spec": spec})


@pytest.mark.parametrize("options, says", [
    ({"httpTokens": "required", "httpPutResponseHopLimit": 1}, None),
    ({"httpTokens": "optional", "httpPutResponseHopLimit": 1}, "httpTokens 'optional'"),
    ({"httpTokens": "required", "httpPutResponseHopLimit": 2}, "httpPutResponseHopLimit 2"),
    (None, "httpTokens None"),
])
def test_node_classes_require_imdsv2_with_hop_limit_one(options, says):
    violations = found(nodeclass(options), policy="ec2nodeclass-imdsv2")
    assert len(violations) == (says is not None)
    assert says is None or says in violations[0].message


@pytest.mark.parametrize("alias, production, warned", [
    ("al2023@latest", True, True), ("al2023@latest", False, False), ("al2023@v20251117", True, False),
])
def test_latest_ami_is_an_advisory_only_in_production(alias, production, warned):
    config = {"ami-version-pinned-in-production": {"production": True}} if production else None
    violations = found(nodeclass({"httpTokens": "required", "httpPutResponseHopLimit": 1}, alias),
                       policy="ami-version-pinned-in-production", config=config)
    assert bool(violations) == warned
    assert all(v.level == "advisory" for v in violations)


# EKS ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("type_, props, audit_missing, endpoint_open", [
    ("eks:index:Cluster", {"enabledClusterLogTypes": ["api", "audit"], "endpointPublicAccess": False}, False, False),
    ("eks:index:Cluster", {"enabledClusterLogTypes": ["api"], "publicAccessCidrs": ["203.0.113.0/24"]}, True, False),
    ("eks:index:Cluster", {"enabledClusterLogTypes": ["audit"]}, False, True),  # the default endpoint is public to all
    ("aws:eks/cluster:Cluster", {"vpcConfig": {"endpointPublicAccess": True, "publicAccessCidrs": ["0.0.0.0/0"]}},
     True, True),
])
def test_eks_audit_logging_is_required_and_an_open_endpoint_is_advised_against(type_, props, audit_missing, endpoint_open):
    cluster = Subject(type_, "eks", props)
    assert bool(found(cluster, policy="eks-audit-logging")) == audit_missing
    open_endpoint = found(cluster, policy="eks-public-endpoint-open")
    assert bool(open_endpoint) == endpoint_open
    assert all(v.level == "advisory" for v in open_endpoint)


# Model servers --------------------------------------------------------------------------------------------------
PROBE = {"httpGet": {"path": "/health", "port": 8000}}


def deployment(requests=1, limits=1, probes=("startupProbe", "readinessProbe"), label=True, namespace="llm-inference",
               name="llama-8b") -> Subject:
    resources = {k: {GPU: v} for k, v in (("requests", requests), ("limits", limits)) if v is not None}
    container = {"name": "vllm", "image": "vllm/vllm-openai:v0.32.0", "resources": resources,
                 **{probe: PROBE for probe in probes}}
    labels = {"app.kubernetes.io/instance": name, **({"app.kubernetes.io/component": "model-server"} if label else {})}
    return Subject("kubernetes:apps/v1:Deployment", name, {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}})


def pdb(namespace="llm-inference", match=None, expressions=None) -> Subject:
    selector = {"matchLabels": match if match is not None else {"app.kubernetes.io/instance": "llama-8b"}}
    if expressions is not None:
        selector = {"matchExpressions": expressions}
    return Subject("kubernetes:policy/v1:PodDisruptionBudget", f"pdb-{namespace}", {
        "metadata": {"name": "llama-8b", "namespace": namespace}, "spec": {"maxUnavailable": 1, "selector": selector}})


@pytest.mark.parametrize("server, says", [
    (deployment(), None),
    (deployment(requests=None), "requests None and limits 1"),
    (deployment(requests=1, limits=2), "requests 1 and limits 2"),
    (deployment(requests="8", limits=8), None),
    (deployment(requests=None, limits=None), "requests no GPU"),
    (deployment(label=False, requests=2, limits=4), "requests 2 and limits 4"),  # unlabelled, still a GPU server
])
def test_model_servers_request_exactly_their_gpu_limit(server, says):
    violations = found(server, policy="model-server-gpu-requests-equal-limits")
    assert len(violations) == (says is not None)
    assert says is None or says in violations[0].message


@pytest.mark.parametrize("server, missing", [
    (deployment(), None),
    (deployment(probes=("startupProbe",)), "readinessProbe"),
    (deployment(probes=()), "startupProbe or readinessProbe"),
    (deployment(label=False, probes=()), "startupProbe or readinessProbe"),
    (deployment(label=False, requests=None, limits=None, probes=()), None),  # a CPU workload is not a model server
])
def test_model_servers_have_startup_and_readiness_probes(server, missing):
    violations = found(server, policy="model-server-probes")
    assert bool(violations) == bool(missing)
    assert not missing or f"has no {missing}:" in violations[0].message


@pytest.mark.parametrize("budgets, covered", [
    ([pdb()], True),
    ([], False),
    ([pdb(namespace="other")], False),
    ([pdb(match={"app.kubernetes.io/instance": "llama-70b"})], False),
    ([pdb(match={})], False),
    ([pdb(expressions=[{"key": "app.kubernetes.io/component", "operator": "In", "values": ["model-server"]}])], True),
])
def test_every_model_server_has_a_pdb_selecting_its_pods(budgets, covered):
    violations = found(deployment(), *budgets, policy="model-server-pdb")
    assert (violations == []) == covered
    assert covered or violations[0].resource == "kubernetes:apps/v1:Deployment llama-8b"


def group(leader_probes=("startupProbe", "readinessProbe"), worker_gpus=(8, 8), worker_image="vllm/vllm-openai:v0.32.0",
          worker_template=True) -> Subject:
    """A multi-node model's LeaderWorkerSet: the leader serves (probes), the worker runs headless (none)."""
    labels = {"app.kubernetes.io/instance": "llama-8b", "app.kubernetes.io/component": "model-server"}
    def pod(probes, gpus, image):
        resources = {"requests": {GPU: gpus[0]}, "limits": {GPU: gpus[1]}}
        container = {"name": "vllm", "image": image, "resources": resources, **{probe: PROBE for probe in probes}}
        return {"metadata": {"labels": labels}, "spec": {"containers": [container]}}
    templates = {"size": 2, "leaderTemplate": pod(leader_probes, (8, 8), "vllm/vllm-openai:v0.32.0")}
    if worker_template:
        templates["workerTemplate"] = pod((), worker_gpus, worker_image)
    return Subject("kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet", "group", {
        "metadata": {"name": "llama-8b", "namespace": "llm-inference"},
        "spec": {"leaderWorkerTemplate": templates}})


@pytest.mark.parametrize("subject, policy, says", [
    (group(), "model-server-probes", None),  # the worker has no probes by design: it serves no HTTP
    (group(leader_probes=("startupProbe",)), "model-server-probes", "has no readinessProbe"),
    (group(), "model-server-gpu-requests-equal-limits", None),
    (group(worker_gpus=(4, 8)), "model-server-gpu-requests-equal-limits", "requests 4 and limits 8"),
    (group(worker_template=False), "model-server-gpu-requests-equal-limits", None),
    (group(worker_image="evil/miner:latest"), "image-pinned-by-digest", "evil/miner:latest"),
])
def test_a_multi_node_group_gets_the_same_scrutiny_as_a_deployment(subject, policy, says):
    violations = found(subject, policy=policy)
    assert len(violations) == (says is not None), [v.message for v in violations]
    assert says is None or says in violations[0].message


def test_a_multi_node_group_needs_a_pdb_too():
    assert found(group(), policy="model-server-pdb")
    assert not found(group(), pdb(), policy="model-server-pdb")


# Secrets --------------------------------------------------------------------------------------------------------

def secret(**string_data: str) -> Subject:
    return Subject("kubernetes:core/v1:Secret", "s", {"metadata": {"name": "grafana-admin", "namespace": "monitoring"},
                                                      "stringData": string_data})


@pytest.mark.parametrize("data, bad_key", [
    ({"admin-user": "admin", "admin-password": "x7Qp2vLr9sKd4mWz"}, None),
    ({"admin-password": "changeme"}, "admin-password"),
    ({"token": "hf_abc"}, "token"),
    ({"slack-webhook-url": ""}, "slack-webhook-url"),
    ({"host": "redis.internal", "port": "6379", "password": "n3v3r-gu3ss-th1s-0ne"}, None),
])
def test_secrets_hold_no_empty_default_or_short_credentials(data, bad_key):
    violations = found(secret(**data), policy="kubernetes-secret-no-literals")
    assert len(violations) == (bad_key is not None)
    assert bad_key is None or f"Secret monitoring/grafana-admin stringData.{bad_key} " in violations[0].message
    for v in violations:  # the value itself never reaches a report
        assert all(value not in v.message for value in data.values() if value), v.message


# Configuration and the pack -------------------------------------------------------------------------------------

def test_a_policy_configured_disabled_reports_nothing():
    config = {"karpenter-nodepool-gpu-limit": {"enforcementLevel": "disabled"}}
    assert found(nodepool(None), policy="karpenter-nodepool-gpu-limit", config=config) == []
    assert found(nodepool(None), policy="karpenter-nodepool-gpu-limit")


def test_rendered_stacks_pass_every_mandatory_policy(stack: Rendered):
    verdict = json.loads((stack.out / "policy.json").read_text())
    assert [v for v in verdict if v["level"] == "mandatory"] == []
    assert "Policies (policy/" in stack.stdout and " FAIL " not in stack.stdout


def test_prod_is_advised_to_pin_its_ami_and_dev_to_narrow_its_endpoint(prod: Rendered, dev: Rendered):
    prod_advice = {(v["policy"], v["resource"]) for v in json.loads((prod.out / "policy.json").read_text())}
    nodeclasses = {f"kubernetes:karpenter.k8s.aws/v1:EC2NodeClass {r['name']}"
                   for r in prod.of_type("kubernetes:karpenter.k8s.aws/v1:EC2NodeClass")}
    assert {a for a in prod_advice if a[0] != "image-pinned-by-digest"} == {
        ("ami-version-pinned-in-production", n) for n in nodeclasses}
    dev_advice = {(v["policy"], v["level"]) for v in json.loads((dev.out / "policy.json").read_text())}
    assert dev_advice == {("eks-public-endpoint-open", "advisory"), ("image-pinned-by-digest", "advisory")}  # dev.json neither sets production nor raises it


def test_an_endpoint_open_to_everyone_fails_prod_and_only_warns_elsewhere():
    from llmctl.policy_check import stack_policy_config

    cluster = Subject("eks:index:Cluster", "eks", {"enabledClusterLogTypes": ["audit"],
                                                   "publicAccessCidrs": ["0.0.0.0/0"]})
    levels = {stack: [v.level for v in found(cluster, policy="eks-public-endpoint-open",
                                             config=stack_policy_config(stack))] for stack in ("dev", "prod")}
    assert levels == {"dev": ["advisory"], "prod": ["mandatory"]}


def test_a_mandatory_violation_fails_llmctl_plan(tmp_path):
    """A stack without control-plane audit logs: the plan is written, the violation printed, and the exit code 1."""
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(ROOT / name, tmp_path / name)
    values = stack_values("dev")
    values["llm-platform:cluster"]["logTypes"] = ["api"]
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": values}))
    script = ("import sys; from pathlib import Path; from llmctl import plan\n"
              "p = plan.run('dev', Path(sys.argv[1]))\n"
              "print('\\n'.join(plan.summary(p).splitlines())); sys.exit(1 if p.blocked else 0)")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "FAIL  eks-audit-logging" in proc.stdout
    assert "does not send the control plane's audit log to CloudWatch: add 'audit' to cluster.logTypes" in proc.stdout


def test_the_pack_starts_as_the_pulumi_cli_starts_it(tmp_path):
    """The CLI runs policy/__main__.py and reads the analyzer's gRPC port from its first line of output."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "policy" / "__main__.py")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        assert line.strip().isdigit(), (line, proc.stderr.read() if proc.poll() is not None else "no output in 60 s")
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_packs_own_environment_pins_what_llmctl_runs():
    pack, program = pins("policy/requirements.txt"), pins("requirements.txt")
    assert pack["pulumi-policy"] == program["pulumi-policy"] and pack["pulumi"] == program["pulumi"]
    manifest = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    assert len({p.name for p in POLICIES}) == len(POLICIES) == 14


def test_during_a_preview_a_secret_value_not_yet_known_is_skipped_and_the_rest_still_checked():
    """In `pulumi preview`, pulumi-policy wraps props in its unknown-checking proxy: reading a value another
    resource computes (a new Redis endpoint) raises. The rule must skip that value, not give up on the Secret."""
    from pulumi.runtime.rpc import UNKNOWN
    from pulumi_policy import PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs
    from pulumi_policy.deserialize import deserialize_properties
    from pulumi_policy.proxy import unknown_checking_proxy

    props = unknown_checking_proxy(deserialize_properties({
        "metadata": {"name": "redis-connection", "namespace": "llm-gateway"},
        "stringData": {"host": UNKNOWN, "port": "6379", "password": ""}}))
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    args = ResourceValidationArgs("kubernetes:core/v1:Secret", props, "urn:s", "s", options, None)
    (rule,) = [p for p in POLICIES if p.name == "kubernetes-secret-no-literals"]
    reported = []
    rule.validate(args, lambda message, urn=None: reported.append(message))
    assert reported == ["Secret llm-gateway/redis-connection stringData.password is empty"]


@pytest.mark.parametrize("images, listed", [
    (["vllm/vllm-openai:v0.32.0"], ["vllm/vllm-openai:v0.32.0"]),
    (["vllm/vllm-openai:v0.32.0@sha256:" + "a" * 64], []),
    (["ghcr.io/a/b:1", "ghcr.io/a/b:1"], ["ghcr.io/a/b:1"]),
])
def test_images_by_tag_are_listed_as_advice(images, listed):
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    workload = Subject("kubernetes:apps/v1:DaemonSet", "ds", {"metadata": {"name": "x", "namespace": "n"},
                                                             "spec": {"template": {"spec": {"containers": containers}}}})
    violations = found(workload, policy="image-pinned-by-digest")
    assert [v.level for v in violations] == (["advisory"] if listed else [])
    assert not listed or f"by tag, not digest: {', '.join(listed)}." in violations[0].message


def test_every_rendered_image_is_listed_until_pinned(prod: Rendered):
    advice = " ".join(v["message"] for v in json.loads((prod.out / "policy.json").read_text())
                      if v["policy"] == "image-pinned-by-digest")
    images = {c["image"] for d in prod.kind("Deployment") for c in
              d["spec"]["template"]["spec"]["containers"] + d["spec"]["template"]["spec"].get("initContainers", [])}
    assert images and all(image in advice for image in images if "@sha256:" not in image)
    assert "llm-inference/llama-405b-bf16 runs images by tag, not digest: vllm/vllm-openai:v0.32.0" in advice  # the group
