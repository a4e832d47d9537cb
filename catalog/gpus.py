"""GPUs the catalog's instance types carry, with the memory CUDA reports (not the marketing number).

`memory_gib` is `torch.cuda.mem_get_info()[1]` / 2**30: what vLLM multiplies by `gpu_memory_utilization`.
The driver keeps ~0.5 GiB of the board, so an "80GB" H100 reports about 79.2 GiB.
Where a public vLLM or PyTorch log shows the number, `source` is that log; otherwise it is the board's
`nvidia-smi` total less the same driver reservation, marked "estimate". Collected 2026-11-24.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    source: str
    interconnect: str
    """How the catalog's instance types join this GPU to its peers: `nvlink` (SXM boards on an NVSwitch: p4d, p4de,
    p5, p5e, p5en) or `pcie` (g5, g6, g6e: no NVLink). Tensor parallelism costs memory by it (planning/capacity.py)."""


NVLINK, PCIE = "nvlink", "pcie"
INTERCONNECTS = (NVLINK, PCIE)
# AWS's instance pages name the link: "NVSwitch" for P4d/P4de/P5/P5e/P5en, none for G5/G6/G6e (checked 2026-11-24,
# https://aws.amazon.com/ec2/instance-types/p5/, https://aws.amazon.com/ec2/instance-types/g6e/).

GPUS: dict[str, Gpu] = {
    g.name: g
    for g in [
        Gpu("A10G", 22.0, "estimate: nvidia-smi 23028 MiB less ~0.5 GiB driver reservation", PCIE),
        Gpu("L4", 22.0, "estimate: nvidia-smi 23034 MiB less ~0.5 GiB driver reservation", PCIE),
        Gpu("L40S", 44.42, "vLLM log, https://github.com/vllm-project/vllm/issues/15815", PCIE),
        Gpu("A100-40GB", 39.50, "PyTorch OOM message, https://github.com/TianheWu/CoSeR/issues/10", NVLINK),
        Gpu("A100-80GB", 79.14, "PyTorch OOM message, https://github.com/lianqi1008/Control-GIC/issues/6", NVLINK),
        Gpu("H100-80GB", 79.22, "vLLM log on H100-80G, https://github.com/vllm-project/vllm/pull/12126", NVLINK),
        Gpu("H200", 139.8, "estimate: nvidia-smi 143771 MiB less ~0.5 GiB driver reservation", NVLINK),
        Gpu("B200", 178.4, "estimate: nvidia-smi 183359 MiB less ~0.5 GiB driver reservation", NVLINK),
    ]
}

# Memory bandwidth, GB/s (10^9 bytes per second): what bounds decode, which reads every weight once per step. From
# NVIDIA's datasheets (SXM parts where AWS uses SXM: p4d, p4de, p5, p5e, p5en), checked 2026-11-24:
# https://www.nvidia.com/en-us/data-center/products/a10-gpu/ (A10G: AWS's A10 variant, same 600 GB/s),
# https://www.nvidia.com/en-us/data-center/l4/, https://www.nvidia.com/en-us/data-center/l40s/,
# https://www.nvidia.com/en-us/data-center/a100/, https://www.nvidia.com/en-us/data-center/h100/,
# https://www.nvidia.com/en-us/data-center/h200/, https://www.nvidia.com/en-us/data-center/hgx/ (B200).
MEMORY_BANDWIDTH_GB_S: dict[str, float] = {
    "A10G": 600, "L4": 300, "L40S": 864, "A100-40GB": 1555, "A100-80GB": 2039, "H100-80GB": 3350, "H200": 4800,
    "B200": 8000,
}
