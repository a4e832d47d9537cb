"""The platform's guardrails as CrossGuard policies: what must hold for every stack before anything reaches AWS.

Each rule reads only the resource properties the Pulumi engine hands a policy pack (the same names the program's
inputs use), so the CLI (`pulumi preview --policy-pack policy`) and `make plan` (llmctl/policy_check.py, offline)
run the same code. This module imports nothing of the project: the pack runs in its own virtualenv.

What a policy cannot see: the objects inside Helm releases (the charts' own Deployments), and whether a value was
a Pulumi secret (the SDK unwraps secrets before a policy reads them).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

GPU = "nvidia.com/gpu"
MODEL_SERVER_LABEL = ("app.kubernetes.io/component", "model-server")
GROUP_TYPE = "kubernetes:leaderworkerset.x-k8s.io/v1:LeaderWorkerSet"
"""A multi-node model's groups: a leader's and a worker's pod template in one resource."""
WORKLOAD_TYPES = {"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", GROUP_TYPE}
PDB_TYPE = "kubernetes:policy/v1:PodDisruptionBudget"

# S3 -------------------------------------------------------------------------------------------------------------
# pulumi-aws 7 names the bucket `Bucket` (6 had BucketV2, now an alias); the per-bucket settings are resources.
BUCKET_TYPES = {"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"}
ENCRYPTION_TYPES = {"aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
                    "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2"}
PUBLIC_ACCESS_BLOCK_TYPE = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
BUCKET_POLICY_TYPE = "aws:s3/bucketPolicy:BucketPolicy"
PUBLIC_ACCESS_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")
KMS_ALGORITHMS = {"aws:kms", "aws:kms:dsse"}
# S3 server access logs cannot be delivered to a bucket whose default encryption is SSE-KMS (AWS, "Enabling Amazon
# S3 server access logging"), so a bucket that is another bucket's logging target may use SSE-S3 instead.
LOGGING_TYPES = {"aws:s3/bucketLogging:BucketLogging", "aws:s3/bucketLoggingV2:BucketLoggingV2"}
LOG_TARGET_ALGORITHMS = KMS_ALGORITHMS | {"AES256"}


def _attached(args: StackValidationArgs, bucket: PolicyResource, types: set[str]) -> list[PolicyResource]:
    """The settings resources of `types` that point at `bucket`: by the engine's property dependency on `bucket`
    (known in a preview of a new bucket, whose name is not), else by the bucket's name."""
    def points_at_bucket(r: PolicyResource) -> bool:
        if any(dep.urn == bucket.urn for dep in r.property_dependencies.get("bucket", [])):
            return True
        try:
            return bucket.props.get("bucket") is not None and r.props.get("bucket") == bucket.props.get("bucket")
        except UnknownValueError:  # a new bucket's name, during a preview
            return False

    return [r for r in args.resources if r.resource_type in types and points_at_bucket(r)]


def _buckets(args: StackValidationArgs) -> list[PolicyResource]:
    return [r for r in args.resources if r.resource_type in BUCKET_TYPES]


def _is_log_target(args: StackValidationArgs, bucket: PolicyResource) -> bool:
    """True when a BucketLogging resource sends another bucket's access logs to this one."""
    for logging in (r for r in args.resources if r.resource_type in LOGGING_TYPES):
        if any(dep.urn == bucket.urn for dep in logging.property_dependencies.get("targetBucket", [])):
            return True
        try:
            if bucket.props.get("bucket") is not None and logging.props.get("targetBucket") == bucket.props.get("bucket"):
                return True
        except UnknownValueError:
            continue
    return False


def _check_bucket_kms(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _buckets(args):
        configs = _attached(args, bucket, ENCRYPTION_TYPES)
        algorithms = [(rule.get("applyServerSideEncryptionByDefault") or {}).get("sseAlgorithm")
                      for c in configs for rule in c.props.get("rules") or []]
        allowed = LOG_TARGET_ALGORITHMS if _is_log_target(args, bucket) else KMS_ALGORITHMS
        if not configs:
            report(f"S3 bucket {bucket.name} has no BucketServerSideEncryptionConfiguration: add one with "
                   f"sseAlgorithm aws:kms and a customer-managed key", bucket.urn)
        elif not algorithms or any(a not in allowed for a in algorithms):
            report(f"S3 bucket {bucket.name} is encrypted with {algorithms}; allowed: {sorted(allowed)}"
                   + ("" if allowed is LOG_TARGET_ALGORITHMS else " (AES256 only for a bucket that receives S3 "
                      "access logs)"), bucket.urn)


def _check_bucket_public_access(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _buckets(args):
        blocks = _attached(args, bucket, {PUBLIC_ACCESS_BLOCK_TYPE})
        if not blocks:
            report(f"S3 bucket {bucket.name} has no BucketPublicAccessBlock: add one with "
                   f"{', '.join(PUBLIC_ACCESS_FLAGS)} all true", bucket.urn)
        for block in blocks:
            off = [flag for flag in PUBLIC_ACCESS_FLAGS if block.props.get(flag) is not True]
            if off:
                report(f"S3 bucket {bucket.name}'s public access block {block.name} leaves {', '.join(off)} "
                       f"unset or false; all four must be true", block.urn)


def _denies_insecure_transport(statement: Mapping[str, Any]) -> bool:
    condition = (statement.get("Condition") or {}).get("Bool") or {}
    return (statement.get("Effect") == "Deny" and _listed(statement.get("Principal")) in ([], ["*"])
            and str(condition.get("aws:SecureTransport")).lower() == "false"
            and any(a in ("*", "s3:*") for a in _listed(statement.get("Action"))))


def _check_bucket_tls_only(args: StackValidationArgs, report: ReportViolation) -> None:
    for bucket in _buckets(args):
        policies = _attached(args, bucket, {BUCKET_POLICY_TYPE})
        statements = [s for p in policies for s in _statements(p.props.get("policy"))]
        if not any(_denies_insecure_transport(s) for s in statements):
            report(f"S3 bucket {bucket.name} has no bucket policy statement denying s3:* to every principal when "
                   f"aws:SecureTransport is false", bucket.urn)


# IAM ------------------------------------------------------------------------------------------------------------
POLICY_DOCUMENT_TYPES = {"aws:iam/policy:Policy", "aws:iam/rolePolicy:RolePolicy", "aws:iam/userPolicy:UserPolicy",
                         "aws:iam/groupPolicy:GroupPolicy", BUCKET_POLICY_TYPE, "aws:sqs/queuePolicy:QueuePolicy"}
ATTACHMENT_TYPES = {"aws:iam/rolePolicyAttachment:RolePolicyAttachment",
                    "aws:iam/userPolicyAttachment:UserPolicyAttachment",
                    "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
                    "aws:iam/policyAttachment:PolicyAttachment"}
ADMINISTRATOR_ACCESS = ":iam::aws:policy/AdministratorAccess"


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _statements(document: Any) -> list[Mapping[str, Any]]:
    """A policy document's statements, whether the program passed it as JSON text or as an object."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return []
    if not isinstance(document, Mapping):
        return []
    return [s for s in _listed(document.get("Statement")) if isinstance(s, Mapping)]


def _wildcard_statements(document: Any) -> Iterable[Mapping[str, Any]]:
    for statement in _statements(document):
        actions = [str(a) for a in _listed(statement.get("Action"))]
        if (statement.get("Effect") == "Allow" and "*" in [str(r) for r in _listed(statement.get("Resource"))]
                and any(a == "*" or a.endswith(":*") for a in actions)):
            yield statement


def _check_iam_wildcards(args: ResourceValidationArgs, report: ReportViolation) -> None:
    documents = []
    if args.resource_type in POLICY_DOCUMENT_TYPES:
        documents.append(args.props.get("policy"))
    if args.resource_type == "aws:iam/role:Role":
        documents += [inline.get("policy") for inline in args.props.get("inlinePolicies") or []]
    for document in documents:
        for statement in _wildcard_statements(document):
            report(f"{args.name}: statement {statement.get('Sid') or '(no Sid)'} allows "
                   f"{_listed(statement.get('Action'))} on Resource '*'; name the actions and scope the resources")
    if args.resource_type in ATTACHMENT_TYPES and str(args.props.get("policyArn", "")).endswith(ADMINISTRATOR_ACCESS):
        report(f"{args.name} attaches AdministratorAccess ('*' on '*'); attach a scoped policy instead")


# EKS ------------------------------------------------------------------------------------------------------------
# pulumi-eks's component (what `make plan` records) and the aws:eks Cluster it creates (what a preview also shows).
EKS_CLUSTER_TYPES = {"eks:index:Cluster", "aws:eks/cluster:Cluster"}
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}


def _check_eks_audit_logging(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type in EKS_CLUSTER_TYPES and "audit" not in (args.props.get("enabledClusterLogTypes") or []):
        report(f"EKS cluster {args.name} does not send the control plane's audit log to CloudWatch: add 'audit' to "
               f"cluster.logTypes (now {list(args.props.get('enabledClusterLogTypes') or [])})")


def _check_eks_public_endpoint(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in EKS_CLUSTER_TYPES:
        return
    vpc_config = args.props.get("vpcConfig") or {}  # aws:eks/cluster:Cluster nests them; pulumi-eks does not
    public = args.props.get("endpointPublicAccess", vpc_config.get("endpointPublicAccess", True))
    cidrs = args.props.get("publicAccessCidrs") or vpc_config.get("publicAccessCidrs") or ["0.0.0.0/0"]
    if public is not False and OPEN_CIDRS & set(cidrs):
        report(f"EKS cluster {args.name}'s public API endpoint accepts {sorted(OPEN_CIDRS & set(cidrs))}: narrow "
               f"cluster.publicAccessCidrs to your CI runners' and operators' egress ranges, or make it private")


# Karpenter ------------------------------------------------------------------------------------------------------
NODEPOOL_TYPE = "kubernetes:karpenter.sh/v1:NodePool"
NODECLASS_TYPE = "kubernetes:karpenter.k8s.aws/v1:EC2NodeClass"


def _check_nodepool_gpu_limit(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != NODEPOOL_TYPE:
        return
    limit = ((args.props.get("spec") or {}).get("limits") or {}).get(GPU)
    if limit is None or _quantity(limit) is None or _quantity(limit) <= 0:
        report(f"Karpenter NodePool {_k8s_name(args.props, args.name)} has spec.limits['{GPU}'] = {limit!r}: set a "
               f"positive GPU limit (gpuPools.<pool>.gpuLimit) so a runaway scale-up cannot buy unbounded GPUs")


def _check_nodeclass_imdsv2(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != NODECLASS_TYPE:
        return
    options = (args.props.get("spec") or {}).get("metadataOptions") or {}
    wrong = []
    if options.get("httpTokens") != "required":
        wrong.append(f"httpTokens {options.get('httpTokens')!r} (must be 'required')")
    if _quantity(options.get("httpPutResponseHopLimit")) != 1:
        wrong.append(f"httpPutResponseHopLimit {options.get('httpPutResponseHopLimit')!r} (must be 1, so pods "
                     f"cannot reach the node role's credentials)")
    if wrong:
        report(f"EC2NodeClass {_k8s_name(args.props, args.name)} spec.metadataOptions: {'; '.join(wrong)}")


def _check_ami_pinned(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != NODECLASS_TYPE or not args.get_config().get("production"):
        return
    for term in (args.props.get("spec") or {}).get("amiSelectorTerms") or []:
        alias = term.get("alias") or ""
        if alias.endswith("@latest"):
            report(f"EC2NodeClass {_k8s_name(args.props, args.name)} selects AMI alias {alias}: every AMI release "
                   f"replaces the production GPU nodes; pin gpuPools.<pool>.amiVersion to a release")


# Model servers --------------------------------------------------------------------------------------------------

def _pod_templates(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every pod template of a workload: a LeaderWorkerSet's leader first, then its worker (the leader's own
    template when it sets none, as LWS does)."""
    spec = props.get("spec") or {}
    group = spec.get("leaderWorkerTemplate")
    if group is not None:
        leader = group.get("leaderTemplate") or {}
        return [leader, group.get("workerTemplate") or leader]
    return [spec.get("template") or {}]


def _pod_template(props: Mapping[str, Any]) -> Mapping[str, Any]:
    """The template of the pods that serve (a LeaderWorkerSet's leader: only it serves the API)."""
    return _pod_templates(props)[0]


def _containers(props: Mapping[str, Any], serving_only: bool = False) -> list[Mapping[str, Any]]:
    templates = [_pod_template(props)] if serving_only else _pod_templates(props)
    return [c for t in templates for c in ((t.get("spec") or {}).get("containers") or [])]


def _gpu(container: Mapping[str, Any], kind: str) -> Any:
    return ((container.get("resources") or {}).get(kind) or {}).get(GPU)


def is_model_server(resource_type: str, props: Mapping[str, Any]) -> bool:
    """A Deployment or StatefulSet labelled as a model server, or any that asks for a GPU: an unlabelled GPU
    workload gets the same scrutiny."""
    if resource_type not in WORKLOAD_TYPES:
        return False
    labels = (_pod_template(props).get("metadata") or {}).get("labels") or {}
    return (labels.get(MODEL_SERVER_LABEL[0]) == MODEL_SERVER_LABEL[1]
            or any(_gpu(c, "requests") is not None or _gpu(c, "limits") is not None for c in _containers(props)))


def _check_model_server_gpus(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not is_model_server(args.resource_type, args.props):
        return
    name = _k8s_name(args.props, args.name)
    gpu_containers = [c for c in _containers(args.props) if _gpu(c, "limits") is not None or _gpu(c, "requests") is not None]
    if not gpu_containers:
        report(f"model server {name} requests no GPU: set resources.requests and limits['{GPU}'] on its container")
    for c in gpu_containers:
        requests, limits = _quantity(_gpu(c, "requests")), _quantity(_gpu(c, "limits"))
        if requests is None or limits is None or requests != limits or limits <= 0:
            report(f"model server {name} container {c.get('name')}: {GPU} requests {_gpu(c, 'requests')!r} and "
                   f"limits {_gpu(c, 'limits')!r}; both must be set and equal (GPUs cannot be shared or overcommitted)")


def _check_model_server_probes(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if not is_model_server(args.resource_type, args.props):
        return
    serving = _containers(args.props, serving_only=True)  # a group's workers serve no HTTP, so have no probes
    for c in serving:
        if _gpu(c, "limits") is None and _gpu(c, "requests") is None and len(serving) > 1:
            continue  # a sidecar; the serving container is the one holding the GPU
        missing = [probe for probe in ("startupProbe", "readinessProbe") if not c.get(probe)]
        if missing:
            report(f"model server {_k8s_name(args.props, args.name)} container {c.get('name')} has no "
                   f"{' or '.join(missing)}: without them traffic reaches a server still loading weights, or the "
                   f"kubelet kills it mid-load")


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    match = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match and not expressions:
        return False  # an empty selector in a PDB matches nothing useful to reason about here
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for e in expressions:
        value, values = labels.get(e.get("key")), e.get("values") or []
        op = e.get("operator")
        if (op == "In" and value not in values) or (op == "NotIn" and value in values) \
                or (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def _check_model_server_pdb(args: StackValidationArgs, report: ReportViolation) -> None:
    pdbs = [r for r in args.resources if r.resource_type == PDB_TYPE]
    for server in (r for r in args.resources if is_model_server(r.resource_type, r.props)):
        namespace = (server.props.get("metadata") or {}).get("namespace")
        labels = (_pod_template(server.props).get("metadata") or {}).get("labels") or {}
        if not any((pdb.props.get("metadata") or {}).get("namespace") == namespace
                   and _selects((pdb.props.get("spec") or {}).get("selector") or {}, labels) for pdb in pdbs):
            report(f"model server {_k8s_name(server.props, server.name)} in namespace {namespace} has no "
                   f"PodDisruptionBudget selecting its pods: a node drain could evict every replica at once",
                   server.urn)


# Images ---------------------------------------------------------------------------------------------------------
POD_TEMPLATE_TYPES = WORKLOAD_TYPES | {"kubernetes:apps/v1:DaemonSet", "kubernetes:batch/v1:Job",
                                       "kubernetes:batch/v1:CronJob"}


def _check_image_digests(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in POD_TEMPLATE_TYPES:
        return
    specs = [t.get("spec") or {} for t in _pod_templates(args.props)]
    if args.resource_type == "kubernetes:batch/v1:CronJob":
        job = ((args.props.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}
        specs = [(job.get("template") or {}).get("spec") or {}]
    tagged = sorted({c.get("image", "") for spec in specs
                     for c in [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
                     if "@sha256:" not in c.get("image", "")})
    if tagged:
        report(f"{_k8s_name(args.props, args.name)} runs images by tag, not digest: {', '.join(tagged)}. A tag can "
               f"be moved; pin <image>@sha256:<digest> once you have checked the digest (README, Security)")


# Secrets --------------------------------------------------------------------------------------------------------
SECRET_TYPE = "kubernetes:core/v1:Secret"
CREDENTIAL_WORDS = ("password", "token", "key", "secret", "webhook", "credential")
MIN_CREDENTIAL_LENGTH = 12
KNOWN_DEFAULTS = {"changeme", "change-me", "password", "passw0rd", "admin", "secret", "default", "example", "test",
                  "testing", "todo", "xxx", "placeholder", "none", "null", "123456", "12345678", "prom-operator"}


def _check_secret_values(args: ResourceValidationArgs, report: ReportViolation) -> None:
    """An empty value, or a credential (a key named like one) that is a well-known default or too short to be
    one, is a literal someone typed, not a secret. Names beside credentials (a Grafana admin user, a Redis host)
    are allowed: charts read them from the same Secret. Reports key names only, never values."""
    if args.resource_type != SECRET_TYPE:
        return
    name = _k8s_name(args.props, args.name)
    for field in ("data", "stringData"):
        values = args.props.get(field) or {}
        for key in list(values):
            try:
                value = values[key]
            except UnknownValueError:  # computed by another resource (a Redis endpoint), known at `pulumi up`
                continue
            text = "" if value is None else str(value)
            is_credential = any(word in key.lower() for word in CREDENTIAL_WORDS)
            if not text.strip():
                report(f"Secret {name} {field}.{key} is empty")
            elif is_credential and text.strip().lower() in KNOWN_DEFAULTS:
                report(f"Secret {name} {field}.{key} holds a well-known default value; set it from a Pulumi "
                       f"secret (pulumi config set --secret)")
            elif is_credential and field == "stringData" and len(text) < MIN_CREDENTIAL_LENGTH:
                report(f"Secret {name} {field}.{key} is {len(text)} characters, too short for a credential "
                       f"(at least {MIN_CREDENTIAL_LENGTH}); set it from a Pulumi secret")


# Helpers --------------------------------------------------------------------------------------------------------

def _k8s_name(props: Mapping[str, Any], fallback: str) -> str:
    meta = props.get("metadata") or {}
    return f"{meta['namespace']}/{meta.get('name', fallback)}" if meta.get("namespace") else meta.get("name", fallback)


def _quantity(value: Any) -> float | None:
    """A whole-number Kubernetes quantity or hop limit ('8', 8, 8.0) as a number; None when not one."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY

POLICIES = [
    StackValidationPolicy("s3-bucket-kms-encryption", "S3 buckets are encrypted with KMS (aws:kms)",
                          _check_bucket_kms, MANDATORY),
    StackValidationPolicy("s3-bucket-public-access-blocked", "S3 buckets block every form of public access",
                          _check_bucket_public_access, MANDATORY),
    StackValidationPolicy("s3-bucket-tls-only", "S3 bucket policies deny requests without TLS",
                          _check_bucket_tls_only, MANDATORY),
    ResourceValidationPolicy("iam-no-wildcard-admin", "No IAM statement allows '*' actions on '*' resources",
                             _check_iam_wildcards, MANDATORY),
    ResourceValidationPolicy("karpenter-nodepool-gpu-limit", "Every Karpenter NodePool caps the GPUs it may buy",
                             _check_nodepool_gpu_limit, MANDATORY),
    ResourceValidationPolicy("model-server-gpu-requests-equal-limits",
                             "Model servers request exactly the GPUs they are limited to", _check_model_server_gpus,
                             MANDATORY),
    ResourceValidationPolicy("model-server-probes", "Model servers have startup and readiness probes",
                             _check_model_server_probes, MANDATORY),
    StackValidationPolicy("model-server-pdb", "Every model server has a PodDisruptionBudget",
                          _check_model_server_pdb, MANDATORY),
    ResourceValidationPolicy("kubernetes-secret-no-literals",
                             "No Kubernetes Secret holds an empty, default or too-short credential",
                             _check_secret_values, MANDATORY),
    ResourceValidationPolicy("ec2nodeclass-imdsv2", "EC2NodeClasses require IMDSv2 with a hop limit of 1",
                             _check_nodeclass_imdsv2, MANDATORY),
    ResourceValidationPolicy("eks-audit-logging", "EKS control-plane audit logging is on",
                             _check_eks_audit_logging, MANDATORY),
    ResourceValidationPolicy("image-pinned-by-digest", "Workloads run images pinned by digest",
                             _check_image_digests, ADVISORY),
    ResourceValidationPolicy("eks-public-endpoint-open", "The EKS API endpoint is not open to the whole internet",
                             _check_eks_public_endpoint, ADVISORY),
    ResourceValidationPolicy(
        "ami-version-pinned-in-production", "Production GPU nodes run a pinned AMI, not the latest",
        _check_ami_pinned, ADVISORY,
        config_schema=PolicyConfigSchema({"production": {"type": "boolean", "default": False}})),
]
