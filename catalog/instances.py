"""EC2 GPU instance types the platform can schedule model servers on.

Facts per type: GPU model, GPUs per instance, vCPUs, memory (GiB) and local NVMe instance storage (GB).
Source: AWS "Accelerated computing instance specifications",
https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html, checked 2026-11-24.
GPU memory lives in catalog/gpus.py; on-demand prices per region are below.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.gpus import GPUS, Gpu


@dataclass(frozen=True)
class InstanceType:
    name: str
    gpu: str
    gpus: int
    vcpus: int
    memory_gib: int
    nvme_gb: int

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    @property
    def gpu_spec(self) -> Gpu:
        return GPUS[self.gpu]


def _family(family: str, gpu: str, sizes: list[tuple[str, int, int, int, int]]) -> list[InstanceType]:
    return [InstanceType(f"{family}.{size}", gpu, gpus, vcpus, mem, nvme) for size, gpus, vcpus, mem, nvme in sizes]


# (size, GPUs, vCPUs, memory GiB, NVMe GB)
_G5 = [("xlarge", 1, 4, 16, 250), ("2xlarge", 1, 8, 32, 450), ("4xlarge", 1, 16, 64, 600),
       ("8xlarge", 1, 32, 128, 900), ("16xlarge", 1, 64, 256, 1900), ("12xlarge", 4, 48, 192, 3800),
       ("24xlarge", 4, 96, 384, 3800), ("48xlarge", 8, 192, 768, 7600)]
_G6 = [("xlarge", 1, 4, 16, 250), ("2xlarge", 1, 8, 32, 450), ("4xlarge", 1, 16, 64, 600),
       ("8xlarge", 1, 32, 128, 900), ("16xlarge", 1, 64, 256, 1880), ("12xlarge", 4, 48, 192, 3760),
       ("24xlarge", 4, 96, 384, 3760), ("48xlarge", 8, 192, 768, 7520)]
_G6E = [("xlarge", 1, 4, 32, 250), ("2xlarge", 1, 8, 64, 450), ("4xlarge", 1, 16, 128, 600),
        ("8xlarge", 1, 32, 256, 900), ("16xlarge", 1, 64, 512, 1900), ("12xlarge", 4, 48, 384, 3800),
        ("24xlarge", 4, 96, 768, 3800), ("48xlarge", 8, 192, 1536, 7600)]

INSTANCE_TYPES: dict[str, InstanceType] = {
    t.name: t
    for t in [
        *_family("g5", "A10G", _G5),
        *_family("g6", "L4", _G6),
        *_family("g6e", "L40S", _G6E),
        InstanceType("p4d.24xlarge", "A100-40GB", 8, 96, 1152, 8000),
        InstanceType("p4de.24xlarge", "A100-80GB", 8, 96, 1152, 8000),
        InstanceType("p5.4xlarge", "H100-80GB", 1, 16, 256, 3840),
        InstanceType("p5.48xlarge", "H100-80GB", 8, 192, 2048, 30720),
        InstanceType("p5e.48xlarge", "H200", 8, 192, 2048, 30720),
        InstanceType("p5en.48xlarge", "H200", 8, 192, 2048, 30720),
    ]
}

INSTANCE_FAMILIES: frozenset[str] = frozenset(t.family for t in INSTANCE_TYPES.values())

# Elastic Fabric Adapters an instance type can attach (one per network card that supports EFA). Sources: the EFA
# device plugin's list of supported types (github.com/aws/eks-charts stable/aws-efa-k8s-device-plugin/values.yaml,
# chart v0.5.30) and "Network cards" in https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html; transcribed
# 2026-12-03 without AWS access from this machine (check with `aws ec2 describe-instance-types --query
# "InstanceTypes[].NetworkInfo.EfaInfo"`). Types not listed have none.
EFA_INTERFACES: dict[str, int] = {
    **{f"{family}.{size}": 1 for family in ("g5", "g6", "g6e")
       for size in ("8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")},
    "g6e.24xlarge": 2, "g6e.48xlarge": 4,
    "p4d.24xlarge": 4, "p4de.24xlarge": 4,
    "p5.48xlarge": 32, "p5e.48xlarge": 32, "p5en.48xlarge": 16,
}


def efa_interfaces(instance_type: str) -> int:
    return EFA_INTERFACES.get(instance_type, 0)


def types_in_pool(families: list[str], types: list[str]) -> list[InstanceType]:
    """Every catalog instance type a pool admits: the union of its families and its explicit types."""
    chosen = {name for name, t in INSTANCE_TYPES.items() if t.family in families} | set(types)
    return [INSTANCE_TYPES[name] for name in sorted(chosen) if name in INSTANCE_TYPES]


# On-demand Linux price, USD per hour. Source: AWS EC2 On-Demand pricing, https://aws.amazon.com/ec2/pricing/on-demand/
# (P4/P5 after the June 2025 price reduction). Transcribed 2026-11-24 without AWS access from this machine: verify
# with `aws pricing get-products --service-code AmazonEC2` before a purchase decision. These families cost the
# same in us-east-1 and us-west-2.
_ON_DEMAND = {
    "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g5.4xlarge": 1.624, "g5.8xlarge": 2.448, "g5.16xlarge": 4.096,
    "g5.12xlarge": 5.672, "g5.24xlarge": 8.144, "g5.48xlarge": 16.288,
    "g6.xlarge": 0.8048, "g6.2xlarge": 0.9776, "g6.4xlarge": 1.3232, "g6.8xlarge": 2.0144, "g6.16xlarge": 3.3968,
    "g6.12xlarge": 4.6016, "g6.24xlarge": 6.6752, "g6.48xlarge": 13.3504,
    "g6e.xlarge": 1.861, "g6e.2xlarge": 2.242, "g6e.4xlarge": 3.004, "g6e.8xlarge": 4.529, "g6e.16xlarge": 7.577,
    "g6e.12xlarge": 10.493, "g6e.24xlarge": 15.066, "g6e.48xlarge": 30.131,
    "p4d.24xlarge": 21.96, "p4de.24xlarge": 27.45,
    "p5.4xlarge": 6.88, "p5.48xlarge": 55.04, "p5e.48xlarge": 60.91, "p5en.48xlarge": 63.30,
}
ON_DEMAND_USD_PER_HOUR: dict[str, dict[str, float]] = {"us-east-1": _ON_DEMAND, "us-west-2": _ON_DEMAND}
ON_DEMAND_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/"
SPOT_SOURCE = "https://aws.amazon.com/ec2/spot/instance-advisor/ (typical 2025 spot share of on-demand; an estimate)"
PRICES_CHECKED = "2026-11-24"

SPOT_INTERRUPTION_NOTICE_SECONDS = 120
"""EC2 warns two minutes before it reclaims a spot instance. Source: "Spot Instance interruption notices",
https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html, checked 2026-11-24."""

# Planning assumption, not a quote: typical spot price as a share of on-demand over 2025 for these families
# (EC2 Spot Instance Advisor, https://aws.amazon.com/ec2/spot/instance-advisor/). Spot prices move hourly.
SPOT_SHARE_OF_ON_DEMAND: dict[str, float] = {"g5": 0.40, "g6": 0.45, "g6e": 0.45, "p4d": 0.50, "p4de": 0.50,
                                             "p5": 0.55, "p5e": 0.60, "p5en": 0.60}


def on_demand_price(instance_type: str, region: str) -> float | None:
    """USD per hour, or None when the catalog has no price for that region."""
    return ON_DEMAND_USD_PER_HOUR.get(region, {}).get(instance_type)


def spot_estimate(instance_type: str, region: str) -> float | None:
    price = on_demand_price(instance_type, region)
    return None if price is None else round(price * SPOT_SHARE_OF_ON_DEMAND[INSTANCE_TYPES[instance_type].family], 4)
