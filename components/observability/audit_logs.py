"""AuditLogs: one S3 bucket for the logs a security review asks for: the VPC's flow logs and the server access logs
of the platform's buckets (today the model registry), kept `cluster.logRetentionDays`.

The bucket uses SSE-S3, not KMS: S3 server access logging cannot deliver to a bucket whose default encryption is
SSE-KMS (AWS, "Enabling Amazon S3 server access logging", checked 2026-11-24); the policy pack allows that for a
bucket that is a logging target and for no other. It blocks public access, denies requests without TLS, and admits
only the two log-delivery services, for this account and these sources.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from components.shared.buckets import deny_insecure_transport, private_bucket
from components.shared.iam import account_and_partition

FLOW_LOGS_PREFIX = "vpc-flow-logs"
ACCESS_LOGS_PREFIX = "s3-access"
FLOW_LOG_AGGREGATION_SECONDS = 600
"""Flow records are batched for up to 10 minutes (the cheaper of the two intervals EC2 offers)."""


def audit_bucket_policy(bucket_arn: str, account_id: str, region: str, partition: str,
                        logged_bucket_arns: list[str]) -> dict:
    """Only S3's logging service (for the named source buckets) and VPC flow-log delivery (for this account's log
    sources in the region) may write, each below its own prefix; nothing without TLS."""
    source_account = {"aws:SourceAccount": account_id}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "S3ServerAccessLogs", "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
             "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{ACCESS_LOGS_PREFIX}/*",
             "Condition": {"StringEquals": source_account, "ArnLike": {"aws:SourceArn": sorted(logged_bucket_arns)}}},
            {"Sid": "FlowLogsWrite", "Effect": "Allow", "Principal": {"Service": "delivery.logs.amazonaws.com"},
             "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{FLOW_LOGS_PREFIX}/AWSLogs/{account_id}/*",
             "Condition": {"StringEquals": {**source_account, "s3:x-amz-acl": "bucket-owner-full-control"},
                           "ArnLike": {"aws:SourceArn": f"arn:{partition}:logs:{region}:{account_id}:*"}}},
            {"Sid": "FlowLogsAclCheck", "Effect": "Allow", "Principal": {"Service": "delivery.logs.amazonaws.com"},
             "Action": ["s3:GetBucketAcl", "s3:ListBucket"], "Resource": bucket_arn,
             "Condition": {"StringEquals": source_account,
                           "ArnLike": {"aws:SourceArn": f"arn:{partition}:logs:{region}:{account_id}:*"}}},
            deny_insecure_transport(bucket_arn),
        ],
    }


@dataclass(frozen=True)
class AuditLogsArgs:
    cluster_name: str
    region: str
    retention_days: int
    vpc_id: pulumi.Input[str]
    logged_buckets: dict[str, aws.s3.Bucket]
    """Buckets whose server access logs go here, by a short name (the log prefix below s3-access/)."""


class AuditLogs(pulumi.ComponentResource):
    bucket: aws.s3.Bucket

    def __init__(self, name: str, args: AuditLogsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:AuditLogs", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        account, partition = account_and_partition(self)

        self.bucket, public_access = private_bucket(name, f"{args.cluster_name[:30]}-audit-".lower(), child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-encryption", bucket=self.bucket.id,
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}], opts=child)
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle", bucket=self.bucket.id,
            rules=[{"id": "expire-logs", "status": "Enabled", "filter": {},
                    "expiration": {"days": args.retention_days}}], opts=child)
        policy = aws.s3.BucketPolicy(
            f"{name}-policy", bucket=self.bucket.id,
            policy=pulumi.Output.all(self.bucket.arn, account, partition,
                                     *(b.arn for b in args.logged_buckets.values())).apply(
                lambda v: json.dumps(audit_bucket_policy(v[0], v[1], args.region, v[2], list(v[3:])))),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[public_access]))

        delivery = pulumi.ResourceOptions(parent=self, depends_on=[policy])
        aws.ec2.FlowLog(
            f"{name}-vpc-flow-logs", vpc_id=args.vpc_id, traffic_type="ALL", log_destination_type="s3",
            log_destination=self.bucket.arn.apply(lambda arn: f"{arn}/{FLOW_LOGS_PREFIX}/"),
            max_aggregation_interval=FLOW_LOG_AGGREGATION_SECONDS,
            destination_options={"file_format": "parquet", "per_hour_partition": True},
            tags={"Name": f"{args.cluster_name}-flow-logs"}, opts=delivery)
        for key, bucket in args.logged_buckets.items():
            aws.s3.BucketLogging(f"{name}-{key}-access-logs", bucket=bucket.id, target_bucket=self.bucket.id,
                                 target_prefix=f"{ACCESS_LOGS_PREFIX}/{key}/", opts=delivery)
        self.register_outputs({"bucket": self.bucket.bucket})
