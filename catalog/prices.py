"""AWS list prices for what a stack runs beside its GPU nodes (GPU instance prices: catalog/instances.py).

On-demand, Linux, USD, us-east-1 and us-west-2 (the regions the GPU price table covers; these rates are the same in
both). Transcribed 2026-11-24 from the AWS pricing pages named on each line, without AWS access from this machine:
check with `aws pricing get-products` before a purchase decision. Usage-priced parts (NAT and load-balancer data,
requests, transfer) are not here: the cost report lists them as excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

CHECKED = "2026-11-24"
REGIONS = ("us-east-1", "us-west-2")


@dataclass(frozen=True)
class Price:
    usd: float
    unit: str
    source: str
    checked: str = CHECKED


EKS_PRICING = "https://aws.amazon.com/eks/pricing/"
VPC_PRICING = "https://aws.amazon.com/vpc/pricing/"
ELB_PRICING = "https://aws.amazon.com/elasticloadbalancing/pricing/"
EC2_PRICING = "https://aws.amazon.com/ec2/pricing/on-demand/"
ELASTICACHE_PRICING = "https://aws.amazon.com/elasticache/pricing/"
EBS_PRICING = "https://aws.amazon.com/ebs/pricing/"

# Kubernetes versions in standard support; a version in extended support costs 0.60 per cluster-hour instead.
EKS_CONTROL_PLANE = Price(0.10, "cluster-hour", EKS_PRICING)
NAT_GATEWAY = Price(0.045, "gateway-hour", VPC_PRICING)
# An ALB's hourly rate plus one Load Balancer Capacity Unit (25 new connections/s, 3,000 active, 1 GB/h), the floor
# for a gateway that serves any traffic.
ALB = Price(0.0225 + 0.008, "load-balancer-hour, with 1 LCU", ELB_PRICING)
GP3_GB_MONTH = Price(0.08, "GB-month", EBS_PRICING)

# The system node group's instance types (config/schema.py default and the committed stacks, and their neighbours).
SYSTEM_INSTANCES: dict[str, Price] = {
    name: Price(usd, "instance-hour", EC2_PRICING)
    for name, usd in {
        "m7i.large": 0.1008, "m7i.xlarge": 0.2016, "m7i.2xlarge": 0.4032,
        "m6i.large": 0.096, "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384,
        "m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384,
        "t3.large": 0.0832, "t3.xlarge": 0.1664,
    }.items()
}

# ElastiCache node-hour for Redis OSS; Valkey nodes cost 20% less (the same page).
_REDIS_NODES = {
    "cache.t4g.micro": 0.016, "cache.t4g.small": 0.032, "cache.t4g.medium": 0.065,
    "cache.m7g.large": 0.158, "cache.m7g.xlarge": 0.315,
    "cache.r7g.large": 0.219, "cache.r7g.xlarge": 0.437,
    "cache.m6g.large": 0.149, "cache.r6g.large": 0.206,
}
VALKEY_DISCOUNT = 0.20


def cache_node(node_type: str, engine: str) -> Price | None:
    """None when the catalog has no price for the node type."""
    usd = _REDIS_NODES.get(node_type)
    if usd is None:
        return None
    return Price(round(usd * (1 - VALKEY_DISCOUNT), 4) if engine == "valkey" else usd, f"{engine} node-hour",
                 ELASTICACHE_PRICING)
