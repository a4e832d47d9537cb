"""Recording Pulumi mocks: run the real program with no cloud, and keep every resource it registers.

The engine and providers are replaced; everything the program computes itself is real. Computed outputs are
answered the way AWS and pulumi-eks would answer them (ARNs, IDs, queue URLs, the remote EKS component's
kubeconfig and resource references), so `.apply` callbacks in the program run as they do in `pulumi up`.
"""

from __future__ import annotations

import json
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc

ACCOUNT = "123456789012"
SECRET_SIG = rpc._special_secret_sig
SIG_KEY = rpc._special_sig_key
RESOURCE_SIG = rpc._special_resource_sig
SECRET_PLACEHOLDER = "[secret]"


@dataclass
class Recorded:
    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parent: str | None = None  # the parent's logical name
    parent_type: str | None = None
    provider: str | None = None  # the explicit provider's reference ("urn::id"), if any
    ignore_changes: list[str] = field(default_factory=list)  # the `ignore_changes` resource option
    urn: str = ""
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)  # input -> URNs it was computed from

    @property
    def is_kubernetes(self) -> bool:
        return self.type.startswith("kubernetes:") and not self.type.startswith("kubernetes:helm.sh/")


@dataclass
class Recording:
    resources: list[Recorded] = field(default_factory=list)
    invokes: list[str] = field(default_factory=list)
    stack_outputs: dict[str, Any] = field(default_factory=dict)  # `pulumi.export`s; secrets as SECRET_PLACEHOLDER


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """Adds the parent of each registration, which Mocks.new_resource is not told."""

    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self._parents: dict[tuple[str, str], str] = {}
        self._ignore_changes: dict[tuple[str, str], list[str]] = {}
        self._dependencies: dict[tuple[str, str], dict[str, list[str]]] = {}
        self._lock = threading.Lock()

    def RegisterResource(self, request):
        with self._lock:
            self._parents[(request.type, request.name)] = request.parent
            self._ignore_changes[(request.type, request.name)] = list(request.ignoreChanges)
            self._dependencies[(request.type, request.name)] = {
                key: list(deps.urns) for key, deps in request.propertyDependencies.items()}
        return super().RegisterResource(request)

    def parent_of(self, type_: str, name: str) -> tuple[str | None, str | None]:
        urn = self._parents.get((type_, name)) or ""
        if "::" not in urn:
            return None, None
        parent_type = urn.split("::")[2].split("$")[-1]
        return urn.split("::")[-1], parent_type

    def ignore_changes_of(self, type_: str, name: str) -> list[str]:
        return self._ignore_changes.get((type_, name), [])

    def urn_of(self, type_: str, name: str) -> str:
        return self.make_urn(self._parents.get((type_, name)) or "", type_, name)

    def property_dependencies_of(self, type_: str, name: str) -> dict[str, list[str]]:
        return self._dependencies.get((type_, name), {})

    def add_fake(self, type_: str, name: str, id_: str, state: dict[str, Any]) -> dict[str, Any]:
        """Register a resource the engine never saw (a child of a remote component) and return a reference to it."""
        urn = self.make_urn("", type_, name)
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, state)
        return {SIG_KEY: RESOURCE_SIG, "urn": urn, "id": id_}


class RecordingMocks(pulumi.runtime.Mocks):
    def __init__(self, region: str):
        self.region = region
        self.recording = Recording()
        self.monitor: RecordingMonitor | None = None
        self._lock = threading.Lock()

    # Invokes -----------------------------------------------------------------------------------------------
    def call(self, args: pulumi.runtime.MockCallArgs):
        with self._lock:
            self.recording.invokes.append(args.token)
        if args.token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            names = [f"{self.region}{suffix}" for suffix in "abcdef"]
            return {"names": names, "zoneIds": [f"use1-az{i}" for i in range(1, 7)], "id": self.region}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDAMOCK", "id": ACCOUNT}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": self.region, "region": self.region, "id": self.region}
        raise NotImplementedError(f"the recording mocks do not answer the invoke {args.token}")

    # Resources ---------------------------------------------------------------------------------------------
    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        id_, outputs = self._answer(args)
        parent, parent_type = self.monitor.parent_of(args.typ, args.name) if self.monitor else (None, None)
        with self._lock:
            self.recording.resources.append(Recorded(
                type=args.typ, name=args.name, custom=bool(args.custom), inputs=args.inputs,
                outputs=outputs, parent=parent, parent_type=parent_type, provider=args.provider or None,
                ignore_changes=self.monitor.ignore_changes_of(args.typ, args.name) if self.monitor else [],
                urn=self.monitor.urn_of(args.typ, args.name) if self.monitor else "",
                property_dependencies=self.monitor.property_dependencies_of(args.typ, args.name) if self.monitor else {},
            ))
        return id_, outputs

    def _answer(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        typ, name, inputs = args.typ, args.name, dict(args.inputs)
        if typ == "eks:index:Cluster":
            return f"{name}-id", self._eks_cluster(name, inputs)
        if typ.startswith("kubernetes:"):
            meta = inputs.get("metadata") or {}
            ns = meta.get("namespace") or inputs.get("namespace")
            ident = f"{ns}/{meta.get('name') or inputs.get('name') or name}" if ns else (meta.get("name") or inputs.get("name") or name)
            status = {"status": "deployed"} if "helm.sh" in typ else {}
            if typ == "kubernetes:networking.k8s.io/v1:Ingress":  # the controller's answer: the ALB's name
                status = {"loadBalancer": {"ingress": [{"hostname": f"k8s-{ns}-{zlib.crc32(name.encode()):08x}"
                                                                    f".{self.region}.elb.amazonaws.com"}]}}
            return ident, {**inputs, "status": status}
        if typ.startswith("pulumi:providers:"):
            return f"{name}-provider-id", inputs
        physical = inputs.get("name") or f"{name}-{zlib.crc32(name.encode()) % 10**7:07d}"  # stable auto-name
        service, kind = _arn_parts(typ)
        outputs = {**inputs, "name": physical, "arn": self._arn(service, kind, physical)}
        if typ == "aws:s3/bucket:Bucket":
            physical = inputs.get("bucket") or f"{inputs.get('bucketPrefix', name)}20261124000000000000000001"
            outputs |= {"bucket": physical, "id": physical, "arn": f"arn:aws:s3:::{physical}"}
            return physical, outputs
        if typ == "aws:kms/key:Key":
            outputs |= {"keyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
                        "arn": f"arn:aws:kms:{self.region}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
        if typ == "aws:acm/certificate:Certificate":
            outputs["domainValidationOptions"] = [{
                "domainName": inputs.get("domainName"), "resourceRecordName": f"_x1.{inputs.get('domainName')}.",
                "resourceRecordType": "CNAME", "resourceRecordValue": "_x2.acm-validations.aws."}]
        if typ == "aws:acm/certificateValidation:CertificateValidation":
            outputs["certificateArn"] = inputs.get("certificateArn")
        if typ == "aws:route53/record:Record":
            outputs["fqdn"] = str(inputs.get("name", "")).rstrip(".")
        if typ == "aws:elasticache/replicationGroup:ReplicationGroup":
            outputs["primaryEndpointAddress"] = f"master.{physical}.abc123.use1.cache.amazonaws.com"
        if typ == "aws:cloudwatch/eventRule:EventRule":  # EventBridge, under its old CloudWatch Events module
            outputs["arn"] = f"arn:aws:events:{self.region}:{ACCOUNT}:rule/{physical}"
        if typ == "aws:sqs/queue:Queue":
            outputs["url"] = f"https://sqs.{self.region}.amazonaws.com/{ACCOUNT}/{physical}"
        if typ == "aws:ec2/vpc:Vpc":
            return "vpc-0mock", outputs
        if typ == "aws:ec2/subnet:Subnet":
            return f"subnet-{name}", outputs
        if typ == "aws:ec2/securityGroup:SecurityGroup":  # ids in EC2's form: Karpenter's selector checks it
            return f"sg-0{zlib.crc32(name.encode()):08x}", outputs
        return f"{name}-id", outputs

    def _arn(self, service: str, kind: str, physical: str) -> str:
        if service == "iam":
            return f"arn:aws:iam::{ACCOUNT}:{kind}/{physical}"
        if service == "sqs":
            return f"arn:aws:sqs:{self.region}:{ACCOUNT}:{physical}"
        return f"arn:aws:{service}:{self.region}:{ACCOUNT}:{kind}/{physical}"

    def _eks_cluster(self, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        cluster_name = inputs.get("name") or name
        endpoint = f"https://{cluster_name}.gr7.{self.region}.eks.amazonaws.com"
        cluster_sg = "sg-0clustermock"
        kubeconfig = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": {"server": endpoint, "certificate-authority-data": "bW9jaw=="}}],
            "contexts": [{"name": "aws", "context": {"cluster": cluster_name, "user": "aws"}}],
            "current-context": "aws",
            "users": [{"name": "aws", "user": {"exec": {
                "apiVersion": "client.authentication.k8s.io/v1beta1",
                "command": "aws",
                "args": ["eks", "get-token", "--cluster-name", cluster_name, "--region", self.region],
            }}}],
        }
        eks_cluster = self.monitor.add_fake("aws:eks/cluster:Cluster", f"{name}-eksCluster", cluster_name, {
            "name": cluster_name,
            "arn": f"arn:aws:eks:{self.region}:{ACCOUNT}:cluster/{cluster_name}",
            "endpoint": endpoint,
            "version": inputs.get("version"),
            "vpcConfig": {"clusterSecurityGroupId": cluster_sg, "vpcId": inputs.get("vpcId")},
        })
        return {
            **inputs,
            "kubeconfigJson": json.dumps(kubeconfig),
            "kubeconfig": kubeconfig,
            "eksCluster": eks_cluster,
            "clusterSecurityGroupId": cluster_sg,
            "nodeSecurityGroupId": cluster_sg,
            "oidcIssuer": "",
            "oidcProviderArn": "",
            "oidcProviderUrl": "",
        }


def _arn_parts(typ: str) -> tuple[str, str]:
    """'aws:iam/role:Role' -> ('iam', 'role')."""
    try:
        module = typ.split(":")[1]
        service, kind = module.split("/")
    except (IndexError, ValueError):
        return "mock", "resource"
    return service, kind


def resolve_stack_outputs(recording: Recording) -> None:
    """Resolve the program's exports once it has finished, keeping only whether each is secret, never its value."""
    from pulumi.runtime.sync_await import _sync_await

    async def resolve() -> dict[str, Any]:
        exported = {}
        for key, value in pulumi.runtime.get_root_resource().outputs.items():
            output = pulumi.Output.from_input(value)
            exported[key] = SECRET_PLACEHOLDER if await output.is_secret() else plain(await output.future())
        return exported

    recording.stack_outputs = _sync_await(resolve())


def install(region: str, project: str, stack: str) -> RecordingMocks:
    """Set the process-wide mocks. Must run before any resource is created."""
    mocks = RecordingMocks(region)
    monitor = RecordingMonitor(mocks)
    mocks.monitor = monitor
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, monitor=monitor)
    return mocks


# Turning recorded inputs into plain data ---------------------------------------------------------------------

def plain(value: Any, *, reveal_secrets: bool = False) -> Any:
    """Recorded inputs as JSON-ready data: floats that are integers become ints, secrets are unwrapped (or, for
    reports, replaced by a placeholder), resource references become their names."""
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            revealed = plain(value.get("value"), reveal_secrets=True)
            return revealed if reveal_secrets else _mask(revealed)
        return {k: plain(v, reveal_secrets=reveal_secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, reveal_secrets=reveal_secrets) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, pulumi.Resource):
        return f"<{type(value).__name__} {getattr(value, '_name', '?')}>"
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _mask(value: Any) -> Any:
    """A secret's shape with every value replaced: a Secret's keys stay visible, as `kubectl describe` shows them."""
    if isinstance(value, dict):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v) for v in value]
    return SECRET_PLACEHOLDER


def to_manifest(resource: Recorded) -> dict[str, Any]:
    """A recorded Kubernetes resource as the manifest the provider would apply."""
    inputs = plain(resource.inputs)  # a Secret's values stay "[secret]", as `pulumi preview` shows them
    api_version = inputs.pop("apiVersion", None) or _api_version_from_type(resource.type)
    kind = inputs.pop("kind", None) or resource.type.rsplit(":", 1)[-1]
    manifest = {"apiVersion": api_version, "kind": kind}
    manifest["metadata"] = inputs.pop("metadata", None) or {}
    manifest["metadata"].setdefault("name", resource.name)
    manifest.update({k: v for k, v in inputs.items() if v is not None})
    return manifest


def _api_version_from_type(typ: str) -> str:
    """'kubernetes:storage.k8s.io/v1:StorageClass' -> 'storage.k8s.io/v1'; 'kubernetes:core/v1:Secret' -> 'v1'."""
    group_version = typ.split(":")[1]
    return group_version.removeprefix("core/")
