"""EC2 GPU instance types the platform can schedule model servers on.

Facts per type: GPU model, GPUs per instance, vCPUs, memory (GiB) and local NVMe instance storage (GB).
Source: AWS "Accelerated computing instance specifications",
https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html, checked 2026-11-24.
Prices and GPU memory are the capacity planner's business (config/ catalog of the sizing issue).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def types_in_pool(families: list[str], types: list[str]) -> list[InstanceType]:
    """Every catalog instance type a pool admits: the union of its families and its explicit types."""
    chosen = {name for name, t in INSTANCE_TYPES.items() if t.family in families} | set(types)
    return [INSTANCE_TYPES[name] for name in sorted(chosen) if name in INSTANCE_TYPES]
