"""Issue 14's findings, one test each, on the rendered stacks: what a security review and a spot-reclaim wave would
find. Each test fails if its fix regresses."""

from __future__ import annotations

import json

import pytest

import config
from catalog.instances import SPOT_INTERRUPTION_NOTICE_SECONDS
from components.serving.model_server import NODE_LAUNCH_SECONDS
from tests.conftest import Rendered, stack_values
from tests.test_config import _set, raw

DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"


def model_servers(stack: Rendered) -> list[dict]:
    return [d for d in stack.kind("Deployment")
            if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "model-server"]


def pod_templates(workload: dict) -> list[dict]:
    """A Deployment's pod template, or a LeaderWorkerSet's leader and worker templates."""
    if workload["kind"] == "LeaderWorkerSet":
        group = workload["spec"]["leaderWorkerTemplate"]
        return [group["leaderTemplate"], group["workerTemplate"]]
    return [workload["spec"]["template"]]


# 1. Availability: a single-server model is not evicted voluntarily; upgrades stay possible ------------------------

def test_a_model_that_can_be_down_to_one_server_is_protected_from_voluntary_disruption(stack: Rendered):
    """And every pod of a multi-node group, whatever its replicas: evicting one pod takes the whole group down."""
    cfg = stack.config
    protected = {d["metadata"]["name"]: {t["metadata"]["annotations"].get(DO_NOT_DISRUPT) for t in pod_templates(d)}
                 for d in [*model_servers(stack), *stack.kind("LeaderWorkerSet")]}
    assert protected == {key: {"true" if m.min_replicas <= 1 or m.multi_node else None}
                         for key, m in cfg.models.items()}
    assert {"true"} in protected.values()  # each committed stack has such a model (dev scales to zero)


def test_protected_nodes_can_still_be_upgraded_because_every_gpu_nodepool_bounds_its_drain(stack: Rendered):
    """With terminationGracePeriod set, Karpenter drifts and expires nodes even under do-not-disrupt pods."""
    for pool in stack.kind("NodePool"):
        assert pool["spec"]["template"]["spec"]["terminationGracePeriod"], pool["metadata"]["name"]


def test_plan_warns_about_a_single_server_model_on_a_spot_pool(prod: Rendered):
    cfg = prod.config
    for key, m in cfg.models.items():
        warned = f"note: models.{key} can be down to one server" in prod.stdout
        assert warned == (m.min_replicas <= 1 and "spot" in cfg.gpu_pools[m.gpu_pool].capacity_types), key


# 2. Replicas of one model are never all on one node ---------------------------------------------------------------

def test_the_first_two_replicas_of_a_model_need_two_nodes(stack: Rendered):
    cfg = stack.config
    for d in model_servers(stack):
        m = cfg.models[d["metadata"]["name"]]
        spread = {c["topologyKey"]: c for c in d["spec"]["template"]["spec"].get("topologySpreadConstraints", [])}
        if m.max_replicas == 1:
            assert spread == {}
            continue
        node = spread["kubernetes.io/hostname"]
        assert (node["whenUnsatisfiable"], node["maxSkew"], node["minDomains"]) == ("DoNotSchedule", 1, 2)
        assert node["labelSelector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "ScheduleAnyway"


# 3. Spot's two-minute notice: the whole shutdown fits -------------------------------------------------------------

def test_every_server_on_a_spot_pool_shuts_down_within_the_notice(stack: Rendered):
    cfg = stack.config
    for d in model_servers(stack):
        m = cfg.models[d["metadata"]["name"]]
        if "spot" in cfg.gpu_pools[m.gpu_pool].capacity_types:
            assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] <= SPOT_INTERRUPTION_NOTICE_SECONDS


def only_problem(values: dict) -> config.Problem:
    """The one problem prod's stack values, changed, are rejected with."""
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(values))
    (problem,) = raised.value.problems
    return problem


def test_a_drain_longer_than_the_notice_allows_is_rejected_on_spot_pools_only():
    values = _set(stack_values("prod"), "models.llama-8b.drainSeconds", 120)
    problem = only_problem(values)
    assert problem.key == "models.llama-8b.drainSeconds" and problem.value == 120
    assert "pool 'small' may run on spot" in problem.allowed and "use at most 90" in problem.allowed
    on_demand = _set(values, "gpuPools.small.capacityTypes", ["on-demand"])
    assert config.parse("prod", raw(on_demand)).models["llama-8b"].drain_seconds == 120


# 4. Rollouts report progress against the real start-up time -------------------------------------------------------

def test_progress_deadline_covers_a_node_launch_and_the_whole_startup_budget(stack: Rendered):
    for d in model_servers(stack):
        startup = d["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        budget = startup["periodSeconds"] * startup["failureThreshold"]
        assert d["spec"]["progressDeadlineSeconds"] >= budget + NODE_LAUNCH_SECONDS > 600


# 5. Prod's API endpoint is not open to the internet ---------------------------------------------------------------

def test_prods_api_endpoint_is_private_or_admits_named_ranges_only(prod: Rendered):
    (cluster,) = prod.of_type("eks:index:Cluster")
    inputs = cluster["inputs"]
    if inputs["endpointPublicAccess"]:
        assert inputs["publicAccessCidrs"] and not {"0.0.0.0/0", "::/0"} & set(inputs["publicAccessCidrs"])
    verdict = json.loads((prod.out / "policy.json").read_text())
    assert not [v for v in verdict if v["policy"] == "eks-public-endpoint-open"]


# 6. The Hugging Face token reaches only servers that download from the Hub, as a file where the engine reads one ---

def test_only_hub_sourced_servers_get_the_token_and_vllm_gets_it_as_a_file(stack: Rendered):
    cfg = stack.config
    seen = set()
    for d in model_servers(stack):
        m = cfg.models[d["metadata"]["name"]]
        pod = d["spec"]["template"]["spec"]
        (server,) = pod["containers"]
        env = {e["name"]: e for e in server.get("env", [])}
        token_volumes = [v for v in pod["volumes"] if "secret" in v]
        if m.source == "registry":
            assert not {"HF_TOKEN", "HF_TOKEN_PATH"} & set(env) and token_volumes == [], m
            continue
        seen.add(m.engine)
        if m.engine == "vllm":
            assert "HF_TOKEN" not in env, "the token must not be in the environment"
            (volume,) = token_volumes
            assert volume["secret"]["secretName"] == "huggingface-token" and volume["secret"]["defaultMode"] == 0o440
            (mount,) = [v for v in server["volumeMounts"] if v["name"] == volume["name"]]
            assert mount["readOnly"] is True
            assert env["HF_TOKEN_PATH"]["value"] == f"{mount['mountPath']}/{volume['secret']['items'][0]['path']}"
        else:  # TGI's launcher and router read the environment only
            assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "huggingface-token", "key": "token"}
    assert "vllm" in seen


# 7. Model servers run as non-root with a read-only root filesystem; their namespace enforces `restricted` ---------
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def restricted_violations(pod: dict) -> list[str]:
    """The Pod Security Standard `restricted` (Kubernetes 1.35), checked field by field as the admission plugin does."""
    found = []
    ctx = pod.get("securityContext", {})
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        found.append("host namespaces")
    found += [f"volume {v['name']}" for v in pod.get("volumes", []) if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    for c in pod["containers"] + pod.get("initContainers", []):
        c_ctx = c.get("securityContext", {})
        if c_ctx.get("runAsNonRoot", ctx.get("runAsNonRoot")) is not True:
            found.append(f"{c['name']}: runAsNonRoot")
        if c_ctx.get("runAsUser", ctx.get("runAsUser")) == 0:
            found.append(f"{c['name']}: runAsUser 0")
        if c_ctx.get("allowPrivilegeEscalation") is not False:
            found.append(f"{c['name']}: allowPrivilegeEscalation")
        if c_ctx.get("capabilities", {}).get("drop") != ["ALL"] or c_ctx.get("capabilities", {}).get("add"):
            found.append(f"{c['name']}: capabilities")
        seccomp = c_ctx.get("seccompProfile", ctx.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{c['name']}: seccompProfile")
        if c_ctx.get("privileged") or any(p.get("hostPort") for p in c.get("ports", [])):
            found.append(f"{c['name']}: privileged or hostPort")
    return found


def test_restricted_check_sees_a_root_container():
    pod = {"securityContext": {"runAsUser": 0}, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {}}]}
    assert restricted_violations(pod) == ["volume h", "c: runAsNonRoot", "c: runAsUser 0", "c: allowPrivilegeEscalation",
                                          "c: capabilities", "c: seccompProfile"]


def test_model_servers_meet_restricted_and_their_namespace_enforces_it(stack: Rendered):
    (namespace,) = [n for n in stack.kind("Namespace") if n["metadata"]["name"] == "llm-inference"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    pods = [(d["metadata"]["name"], t["spec"]) for d in [*model_servers(stack), *stack.kind("LeaderWorkerSet")]
            for t in pod_templates(d)]
    assert len(pods) == len(stack.config.models) + sum(m.multi_node for m in stack.config.models.values())
    for name, pod in pods:  # a multi-node group's leader and worker alike
        assert restricted_violations(pod) == [], name
        assert pod["securityContext"]["runAsUser"] >= 10000  # above host system and login UIDs
        (server,) = pod["containers"]
        assert server["securityContext"]["readOnlyRootFilesystem"] is True
        env = {e["name"]: e.get("value") for e in server["env"]}
        mounts = {v["mountPath"] for v in server["volumeMounts"]}
        assert {"/tmp", "/dev/shm"} <= mounts and env["HOME"] in mounts  # exists and is writable at start
        assert env["USER"]  # getpass.getuser() for a UID with no passwd entry
        requested = int(server["resources"]["requests"]["ephemeral-storage"].removesuffix("Gi"))
        assert requested >= sum(int(v["emptyDir"]["sizeLimit"].removesuffix("Gi")) for v in pod["volumes"]
                                if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")


# 8. IAM and KMS: source conditions, an explicit key policy, KMS only through S3, the writer apart ----------------

def test_every_pod_identity_role_trusts_only_this_account(stack: Rendered):
    roles = [r for r in stack.of_type("aws:iam/role:Role") if "pods.eks.amazonaws.com" in r["inputs"]["assumeRolePolicy"]]
    assert len(roles) >= 4  # registry reader and writer, Karpenter, EBS CSI (and the ALB controller in prod)
    for role in roles:
        (statement,) = json.loads(role["inputs"]["assumeRolePolicy"])["Statement"]
        assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012", role["name"]


def test_the_registry_key_is_used_only_by_its_two_roles_and_only_through_s3(stack: Rendered):
    (key_policy,) = stack.of_type("aws:kms/keyPolicy:KeyPolicy")
    statements = {s["Sid"]: s for s in json.loads(key_policy["inputs"]["policy"])["Statement"]}
    region = stack.config.cluster.region
    admin = statements.pop("AdministerKey")
    assert admin["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:*"} & set(admin["Action"])
    assert set(statements) == {"ReadWeights", "WriteWeights"}
    assert statements["ReadWeights"]["Action"] == ["kms:Decrypt"]
    assert "reader" in statements["ReadWeights"]["Principal"]["AWS"]
    assert "writer" in statements["WriteWeights"]["Principal"]["AWS"]
    for statement in statements.values():
        assert statement["Condition"] == {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}
        assert ":role/llm-registry-" in statement["Principal"]["AWS"]
    for name in ("llm-registry-reader", "llm-registry-writer"):
        policy = json.loads(stack.named(name, "aws:iam/rolePolicy:RolePolicy")["inputs"]["policy"])
        kms = [s for s in policy["Statement"] if str(s["Action"]).startswith(("kms:", "['kms:"))]
        assert kms and all(s["Condition"]["StringEquals"]["kms:ViaService"] == f"s3.{region}.amazonaws.com"
                           for s in kms)


def test_the_registry_writer_lives_outside_the_serving_namespace(stack: Rendered):
    writer = json.loads(stack.named("llm-registry-writer", "aws:iam/role:Role")["inputs"]["assumeRolePolicy"])
    assert writer["Statement"][0]["Condition"]["StringEquals"]["aws:RequestTag/kubernetes-namespace"] == "llm-registry"
    (namespace,) = [n for n in stack.kind("Namespace") if n["metadata"]["name"] == "llm-registry"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    accounts = {(a["metadata"]["namespace"], a["metadata"]["name"]) for a in stack.kind("ServiceAccount")}
    assert ("llm-registry", "model-sync") in accounts and ("llm-inference", "model-sync") not in accounts


def test_the_readmes_sync_pod_is_admitted_by_the_restricted_namespace():
    import subprocess

    from tests.conftest import ROOT

    text = (ROOT / "README.md").read_text()
    command = text[text.index("kubectl -n llm-registry run"):]
    command = command[:command.index("```")]
    capture = ('kubectl() { for a in "$@"; do case "$a" in --overrides=*) printf "%s" "${a#--overrides=}";; esac; '
               'done; }; BUCKET=models-1; ')
    overrides = subprocess.run(["bash", "-c", capture + command], capture_output=True, text=True, check=True).stdout
    pod = json.loads(overrides)["spec"]
    assert pod["serviceAccountName"] == "model-sync"
    assert restricted_violations(pod) == []


# 9. Audit trail: control-plane logs kept for a set time, VPC flow logs, S3 access logs for the registry -----------

def test_control_plane_logs_go_to_a_group_with_the_configured_retention(stack: Rendered):
    cfg = stack.config
    (group,) = stack.of_type("aws:cloudwatch/logGroup:LogGroup")
    assert group["inputs"]["name"] == f"/aws/eks/{cfg.cluster_name}/cluster"
    assert group["inputs"]["retentionInDays"] == cfg.cluster.log_retention_days


def test_vpc_flow_logs_and_registry_access_logs_reach_the_audit_bucket(stack: Rendered):
    cfg = stack.config
    (audit,) = [b for b in stack.of_type("aws:s3/bucket:Bucket") if "-audit-" in b["inputs"]["bucketPrefix"]]
    audit_name = stack.outputs["auditBucket"]
    assert audit_name.startswith(audit["inputs"]["bucketPrefix"])
    (flow,) = stack.of_type("aws:ec2/flowLog:FlowLog")
    assert flow["inputs"]["trafficType"] == "ALL" and flow["inputs"]["logDestinationType"] == "s3"
    assert flow["inputs"]["logDestination"] == f"arn:aws:s3:::{audit_name}/vpc-flow-logs/"
    assert flow["inputs"]["vpcId"] == "vpc-0mock"
    (access,) = stack.of_type("aws:s3/bucketLogging:BucketLogging")
    assert access["inputs"]["targetBucket"] == audit_name and "-models-" in access["inputs"]["bucket"]
    (lifecycle,) = [r for r in stack.of_type("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
                    if r["inputs"]["bucket"] == audit_name]
    assert lifecycle["inputs"]["rules"][0]["expiration"]["days"] == cfg.cluster.log_retention_days
    (policy,) = [r for r in stack.of_type("aws:s3/bucketPolicy:BucketPolicy") if r["inputs"]["bucket"] == audit_name]
    statements = {s["Sid"]: s for s in json.loads(policy["inputs"]["policy"])["Statement"]}
    for sid in ("S3ServerAccessLogs", "FlowLogsWrite", "FlowLogsAclCheck"):
        assert statements[sid]["Condition"]["StringEquals"]["aws:SourceAccount"] == "123456789012", sid
    assert statements["S3ServerAccessLogs"]["Condition"]["ArnLike"]["aws:SourceArn"] == [
        f"arn:aws:s3:::{access['inputs']['bucket']}"]
    assert statements["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert audit["inputs"].get("forceDestroy") in (None, False)


def test_log_retention_must_be_a_value_cloudwatch_accepts():
    problem = only_problem(_set(stack_values("prod"), "cluster.logRetentionDays", 45))
    assert problem.key == "cluster.logRetentionDays" and problem.value == 45


# 10. Images: pinned by digest once checked; until then listed by the policy pack -----------------------------------

def test_an_image_with_a_checked_digest_is_pulled_by_it():
    from catalog.versions import Image

    digest = "sha256:" + "0" * 64
    assert Image("vllm/vllm-openai", "v0.32.0", "2026-11-24", digest).reference == f"vllm/vllm-openai:v0.32.0@{digest}"
    assert Image("vllm/vllm-openai", "v0.32.0", "2026-11-24").reference == "vllm/vllm-openai:v0.32.0"
