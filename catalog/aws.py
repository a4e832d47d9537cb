"""AWS names the stack configuration is checked against: regions, ElastiCache node types and engine versions,
and the system node group's instance types. A name outside these lists is refused before anything is created, with
the list in the error; add to a list (with its source) when AWS adds a name this program has been checked with."""

from __future__ import annotations

# The commercial (aws) and GovCloud (aws-us-gov) partitions' regions.
# Source: botocore 1.43.11 botocore/data/endpoints.json, partitions aws and aws-us-gov; checked 2026-12-02.
REGIONS: tuple[str, ...] = (
    "af-south-1", "ap-east-1", "ap-east-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-south-1",
    "ap-south-2", "ap-southeast-1", "ap-southeast-2", "ap-southeast-3", "ap-southeast-4", "ap-southeast-5",
    "ap-southeast-6", "ap-southeast-7", "ca-central-1", "ca-west-1", "eu-central-1", "eu-central-2", "eu-north-1",
    "eu-south-1", "eu-south-2", "eu-west-1", "eu-west-2", "eu-west-3", "il-central-1", "me-central-1", "me-south-1",
    "mx-central-1", "sa-east-1", "us-east-1", "us-east-2", "us-west-1", "us-west-2", "us-gov-east-1",
    "us-gov-west-1",
)

# Current-generation ElastiCache node types (previous generations cannot create new clusters).
# Source: docs.aws.amazon.com/AmazonElastiCache/latest/APIReference/API_CacheNode.html; checked 2026-12-02.
_CACHE_SIZES = {
    "t4g": ("micro", "small", "medium"), "t3": ("micro", "small", "medium"),
    "m7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "m6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "m5": ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"),
    "r7g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r6g": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r6gd": ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
    "r5": ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"),
    "c7gn": ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"),
}
CACHE_NODE_TYPES: tuple[str, ...] = tuple(f"cache.{family}.{size}" for family, sizes in _CACHE_SIZES.items()
                                          for size in sizes)

# ElastiCache engine versions whose parameter group family (<engine><major>: valkey7, valkey8, redis7) exists and
# this program renders. Redis OSS 6.x is left out: its family is named redis6.x, not redis6.
# Source: docs.aws.amazon.com/AmazonElastiCache/latest/dg/ParameterGroups.Engine.html and engine-versions.html;
# checked 2026-12-02.
CACHE_ENGINE_VERSIONS: dict[str, tuple[str, ...]] = {"valkey": ("7.2", "8.0", "8.1", "8.2"), "redis": ("7.0", "7.1")}

# The system node group runs the AL2023 x86_64 AMI (components/compute/cluster.py), so its instance types must be
# x86_64; from large up, since Karpenter, CoreDNS, Prometheus and the routers share two nodes.
# Source: docs.aws.amazon.com/ec2/latest/instancetypes/gp.html (general purpose) and co.html, mo.html; checked
# 2026-12-02.
_SYSTEM_SIZES = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge")
SYSTEM_INSTANCE_TYPES: tuple[str, ...] = (
    *(f"{family}.{size}" for family in ("m5", "m5a", "m6i", "m6a", "m7i", "m7a", "c6i", "c7i", "r6i", "r7i")
      for size in _SYSTEM_SIZES),
    *(f"{family}.{size}" for family in ("t3", "t3a") for size in ("large", "xlarge", "2xlarge")),
)
