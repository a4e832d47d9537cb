"""What every bucket the platform creates shares: owner-enforced objects, every form of public access blocked, and
a policy statement that refuses requests without TLS."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws


def deny_insecure_transport(bucket_arn: str) -> dict:
    return {
        "Sid": "DenyInsecureTransport",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def private_bucket(name: str, bucket_prefix: str, opts: pulumi.ResourceOptions,
                   force_destroy: bool = False) -> tuple[aws.s3.Bucket, aws.s3.BucketPublicAccessBlock]:
    """The bucket `{name}-bucket` with `{name}-ownership` and `{name}-public-access`; a bucket policy must depend on
    the returned public access block (S3 rejects a policy while the block is being applied)."""
    bucket = aws.s3.Bucket(f"{name}-bucket", bucket_prefix=bucket_prefix, force_destroy=force_destroy, opts=opts)
    aws.s3.BucketOwnershipControls(f"{name}-ownership", bucket=bucket.id,
                                   rule={"object_ownership": "BucketOwnerEnforced"}, opts=opts)
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access", bucket=bucket.id, block_public_acls=True, block_public_policy=True,
        ignore_public_acls=True, restrict_public_buckets=True, opts=opts)
    return bucket, public_access
