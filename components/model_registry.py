"""ModelRegistry: the S3 bucket that holds model weights, its KMS key, and two Pod Identity roles: read-only for
model servers, read-write for a sync job that copies weights in (see README, "Model registry")."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.iam import pod_identity_role
from components.labels import PLATFORM_LABELS
from components.model_server import NAMESPACE, REGISTRY_PREFIX, SERVER_SERVICE_ACCOUNT
from config.schema import ModelRegistry as ModelRegistryConfig

SYNC_SERVICE_ACCOUNT = "model-sync"
"""Read-write access to the registry, for the job that copies weights in."""
ABORT_INCOMPLETE_UPLOADS_DAYS = 7


def tls_only_bucket_policy(bucket_arn: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }],
    }


def reader_policy(bucket_arn: str, key_arn: str) -> dict:
    """List and read the registry's weights, and decrypt them; nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ListModels", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
             "Resource": bucket_arn},
            {"Sid": "ReadModels", "Effect": "Allow", "Action": "s3:GetObject",
             "Resource": f"{bucket_arn}/{REGISTRY_PREFIX}/*"},
            {"Sid": "DecryptModels", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": key_arn},
        ],
    }


def writer_policy(bucket_arn: str, key_arn: str) -> dict:
    """Reader's rights plus writing and deleting below models/ (multipart uploads included), encrypting with the
    registry's key. Deleting only creates a noncurrent version, which expires after the configured days."""
    statements = reader_policy(bucket_arn, key_arn)["Statement"]
    statements += [
        {"Sid": "WriteModels", "Effect": "Allow",
         "Action": ["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
         "Resource": f"{bucket_arn}/{REGISTRY_PREFIX}/*"},
        {"Sid": "EncryptModels", "Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:Encrypt"],
         "Resource": key_arn},
    ]
    return {"Version": "2012-10-17", "Statement": statements}


@dataclass(frozen=True)
class ModelRegistryArgs:
    cluster_name: str
    cluster_name_output: pulumi.Input[str]
    config: ModelRegistryConfig
    namespace: k8s.core.v1.Namespace
    """The serving namespace, where both service accounts live."""


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
        self.bucket = aws.s3.Bucket(
            f"{name}-bucket", bucket_prefix=f"{args.cluster_name[:30]}-models-".lower(),
            force_destroy=args.config.force_destroy, opts=child)
        aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=self.bucket.id,
                                       rule={"object_ownership": "BucketOwnerEnforced"}, opts=child)
        public_access = aws.s3.BucketPublicAccessBlock(
            f"{name}-public-access", bucket=self.bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
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

        arns = pulumi.Output.all(self.bucket.arn, self.key.arn)
        roles, service_accounts = {}, {}
        for part, service_account, policy in (("reader", SERVER_SERVICE_ACCOUNT, reader_policy),
                                              ("writer", SYNC_SERVICE_ACCOUNT, writer_policy)):
            roles[part] = pod_identity_role(
                f"{name}-{part}",
                cluster_name=args.cluster_name,
                cluster_name_output=args.cluster_name_output,
                namespace=NAMESPACE,
                service_account=service_account,
                policy=arns.apply(lambda v, policy=policy: json.dumps(policy(v[0], v[1]))),
                description=f"Model registry {part} for {NAMESPACE}/{service_account} in {args.cluster_name}",
                opts=child)
            service_accounts[part] = k8s.core.v1.ServiceAccount(
                f"{name}-{service_account}",
                metadata={"name": service_account, "namespace": NAMESPACE, "labels": PLATFORM_LABELS},
                automount_service_account_token=False,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[args.namespace]))
        self.reader_role, self.writer_role = roles["reader"].role, roles["writer"].role
        self.associations = [roles["reader"].association, roles["writer"].association]
        self.server_service_account = service_accounts["reader"]
        self.sync_service_account = service_accounts["writer"]
        self.register_outputs({"bucket": self.bucket.bucket, "keyArn": self.key.arn})
