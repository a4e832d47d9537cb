"""ModelRegistry: the S3 bucket that holds model weights, its KMS key, and two Pod Identity roles: read-only for
model servers, read-write for a sync job that copies weights in (see README, "Model registry")."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.serving.model_server import NAMESPACE, REGISTRY_PREFIX, SERVER_SERVICE_ACCOUNT
from components.shared.buckets import deny_insecure_transport, private_bucket
from components.shared.iam import account_and_partition, pod_identity_role
from components.shared.labels import PLATFORM_LABELS
from config.schema import ModelRegistry as ModelRegistryConfig

SYNC_SERVICE_ACCOUNT = "model-sync"
"""Read-write access to the registry, for the job that copies weights in."""
SYNC_NAMESPACE = "llm-registry"
"""The writer lives apart from the servers: a compromised server's namespace holds no write path to the weights."""
ABORT_INCOMPLETE_UPLOADS_DAYS = 7


def tls_only_bucket_policy(bucket_arn: str) -> dict:
    return {"Version": "2012-10-17", "Statement": [deny_insecure_transport(bucket_arn)]}


READ_KEY = ["kms:Decrypt"]
WRITE_KEY = ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"]
# Everything on the key except using it: the account's administrators (IAM principals with KMS rights, such as the
# role that runs `pulumi up`) manage it but cannot decrypt weights through this statement.
KEY_ADMINISTRATION = ["kms:Create*", "kms:Describe*", "kms:Enable*", "kms:List*", "kms:Put*", "kms:Update*",
                      "kms:Revoke*", "kms:Disable*", "kms:Get*", "kms:Delete*", "kms:TagResource",
                      "kms:UntagResource", "kms:ScheduleKeyDeletion", "kms:CancelKeyDeletion",
                      "kms:RotateKeyOnDemand"]


def via_s3(region: str) -> dict:
    """The key only through S3 in the stack's region: credentials copied out of a pod cannot call KMS directly."""
    return {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}}


def reader_policy(bucket_arn: str, key_arn: str, region: str) -> dict:
    """List and read the registry's weights, and decrypt them through S3; nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListModels", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": bucket_arn},
            {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"{bucket_arn}/{REGISTRY_PREFIX}/*"},
            {"Sid": "DecryptModels", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn,
             "Condition": via_s3(region)},
        ],
    }


def writer_policy(bucket_arn: str, key_arn: str, region: str) -> dict:
    """Reader's rights plus writing and deleting below models/ (multipart uploads included), encrypting with the
    registry's key through S3. Deleting only creates a noncurrent version, which expires after the configured days."""
    statements = reader_policy(bucket_arn, key_arn, region)["Statement"]
    statements += [
        {"Sid": "WriteModels", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": f"{bucket_arn}/{REGISTRY_PREFIX}/*"},
        {"Sid": "EncryptModels", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Encrypt"],
         "Resource": key_arn, "Condition": via_s3(region)},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


def key_policy(partition: str, account_id: str, region: str, reader_arn: str, writer_arn: str) -> dict:
    """The registry key's own policy: administration for the account, use only for the two roles and only
    through S3. Without it, KMS's default policy lets any principal of the account with kms:* use the key."""
    root = f"arn:{partition}:iam::{account_id}:root"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AdministerKey", "Effect": "Allow", "Principal": {"AWS": root}, "Action": KEY_ADMINISTRATION,
             "Resource": "*"},
            {"Sid": "ReadWeights", "Effect": "Allow", "Principal": {"AWS": reader_arn}, "Action": READ_KEY,
             "Resource": "*", "Condition": via_s3(region)},
            {"Sid": "WriteWeights", "Effect": "Allow", "Principal": {"AWS": writer_arn}, "Action": WRITE_KEY,
             "Resource": "*", "Condition": via_s3(region)},
        ],
    }


@dataclass(frozen=True)
class ModelRegistryArgs:
    cluster_name: str
    cluster_name_output: pulumi.Input[str]
    config: ModelRegistryConfig
    region: str
    namespace: k8s.core.v1.Namespace
    """The serving namespace, where the reader's service account lives (the writer's is in SYNC_NAMESPACE)."""


class ModelRegistry(pulumi.ComponentResource):
    bucket: aws.s3.Bucket
    key: aws.kms.Key
    reader_role: aws.iam.Role
    writer_role: aws.iam.Role
    server_service_account: k8s.core.v1.ServiceAccount
    sync_service_account: k8s.core.v1.ServiceAccount
    associations: list[aws.eks.PodIdentityAssociation]

    def __init__(self, name: str, args: ModelRegistryArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:ModelRegistry", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.key = aws.kms.Key(
            f"{name}-key", description=f"Model registry weights of {args.cluster_name}",
            enable_key_rotation=True, deletion_window_in_days=30, opts=child)
        aws.kms.Alias(f"{name}-key", name=f"alias/{args.cluster_name}-model-registry", target_key_id=self.key.key_id,
                      opts=child)
        self.bucket, public_access = private_bucket(
            name, f"{args.cluster_name[:30]}-models-".lower(), child, force_destroy=args.config.force_destroy)
        aws.s3.BucketVersioning(f"{name}-versioning", bucket=self.bucket.id,
                                versioning_configuration={"status": "Enabled"}, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=self.bucket.id,
            # The bucket key cuts KMS requests (and their cost) for multi-GB weight files to one per object.
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms",
                                                                "kms_master_key_id": self.key.arn},
                    "bucket_key_enabled": True}],
            opts=child)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=self.bucket.id,
            rules=[{"id": "expire-noncurrent-versions", "status": "Enabled", "filter": {},
                    "noncurrent_version_expiration": {"noncurrent_days": args.config.noncurrent_version_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": ABORT_INCOMPLETE_UPLOADS_DAYS}}],
            opts=child)
        aws.s3.BucketPolicy(
            f"{name}-policy", bucket=self.bucket.id,
            policy=self.bucket.arn.apply(lambda arn: json.dumps(tls_only_bucket_policy(arn))),
            # S3 rejects a bucket policy while the public access block is being applied.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]))

        sync_namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": SYNC_NAMESPACE, "labels": {
            **PLATFORM_LABELS, "pod-security.kubernetes.io/enforce": "restricted"}}, opts=child)
        arns = pulumi.Output.all(self.bucket.arn, self.key.arn)
        roles, service_accounts = {}, {}
        for part, namespace, ns_resource, service_account, policy in (
                ("reader", NAMESPACE, args.namespace, SERVER_SERVICE_ACCOUNT, reader_policy),
                ("writer", SYNC_NAMESPACE, sync_namespace, SYNC_SERVICE_ACCOUNT, writer_policy)):
            roles[part] = pod_identity_role(
                f"{name}-{part}",
                cluster_name=args.cluster_name,
                cluster_name_output=args.cluster_name_output,
                namespace=namespace,
                service_account=service_account,
                policy=arns.apply(lambda v, policy=policy: json.dumps(policy(v[0], v[1], args.region))),
                description=f"Model registry {part} for {namespace}/{service_account} in {args.cluster_name}",
                opts=child)
            service_accounts[part] = k8s.core.v1.ServiceAccount(
                f"{name}-{service_account}",
                metadata={"name": service_account, "namespace": namespace, "labels": PLATFORM_LABELS},
                automount_service_account_token=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[ns_resource]))
        account, partition = account_and_partition(self)
        aws.kms.KeyPolicy(f"{name}-key", key_id=self.key.key_id, policy=pulumi.Output.all(
            partition, account, roles["reader"].role.arn, roles["writer"].role.arn,
        ).apply(lambda v: json.dumps(key_policy(v[0], v[1], args.region, v[2], v[3]))), opts=child)
        self.reader_role, self.writer_role = roles["reader"].role, roles["writer"].role
        self.associations = [roles["reader"].association, roles["writer"].association]
        self.server_service_account = service_accounts["reader"]
        self.sync_service_account = service_accounts["writer"]
        self.register_outputs({"bucket": self.bucket.bucket, "keyArn": self.key.arn})
