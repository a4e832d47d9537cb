"""Check the capacity planner's pipeline-parallel split against a real vLLM engine with several pipeline stages.

Runs in the vLLM virtualenv (`make test-upstream`). For each case (a generated checkpoint, a pipeline-parallel size)
it builds vLLM's CPU engine in a child process with `--pipeline-parallel-size N --distributed-executor-backend mp`
(one worker process per stage, as the nodes of a LeaderWorkerSet group are) and asks every worker for:
- the decoder layers it holds, and whether it holds the input embedding and the LM head;
- the bytes of its KV cache tensors, and the engine's number of KV blocks.
Then it compares, to the exact value:
- the layers with `planning.capacity.stages` (vLLM's get_pp_indices), and the embedding and head with
  `vocab_copies`;
- each stage's weights (`weights_bytes_per_gpu` for the stage, without the rotary cache) with the bytes of the
  checkpoint tensors that stage loads (its layers, and the embedding, final norm and LM head where vLLM put them);
- each stage's KV bytes with blocks x block size x `kv_bytes_per_token` for the stage's layers;
- the blocks with what the planner's rule gives: every stage gets the fewest any stage has room for, from the same
  budget (VLLM_CPU_KVCACHE_SPACE), so the stage with the most layers decides.
Weights are compared through the checkpoint because vLLM's CPU backend repacks linear weights after loading (they
stop being parameters). Tensor parallelism cannot run here (one CPU engine per stage).
Usage: python -m tests.upstream.stage_memory MODEL_DIR [MODEL_DIR ...]; exit 1 names every case that differs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import tests.upstream.vllm_cpu  # noqa: F401  (before vLLM: its CPU build must be told its device and version)

STAGES = (2, 3)
"""Pipeline-parallel sizes per checkpoint (at most its layers): 3 splits 8 layers unevenly."""
KV_SPACE_GIB = 1
"""VLLM_CPU_KVCACHE_SPACE: every stage's KV budget, the same on each (as on equal GPUs)."""
RESULT = "STAGES "


def worker_stage(worker) -> dict:
    import torch

    model = worker.model_runner.model
    caches = worker.model_runner.kv_caches
    kv = sum(t.numel() * t.element_size() for t in caches if isinstance(t, torch.Tensor))
    return {"start": model.model.start_layer, "end": model.model.end_layer, "kv_bytes": kv,
            "embedding": type(model.model.embed_tokens).__name__ != "PPMissingLayer",
            "lm_head": type(model.lm_head).__name__ != "PPMissingLayer"}


def measure(model_dir: str, stages: int) -> dict:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"  # collective_rpc sends worker_stage to the workers
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(KV_SPACE_GIB)
    # One core per stage worker, shared round-robin: vLLM refuses to place more workers than NUMA nodes itself.
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(str(i % os.cpu_count()) for i in range(stages))
    from vllm import LLM

    llm = LLM(model=model_dir, pipeline_parallel_size=stages, distributed_executor_backend="mp", max_model_len=256,
              max_num_seqs=4, enforce_eager=True)
    return {"workers": llm.collective_rpc(worker_stage),
            "blocks": llm.llm_engine.vllm_config.cache_config.num_gpu_blocks}


def checkpoint_bytes(model_dir: str) -> dict[str, int]:
    """Every tensor's bytes in the checkpoint, by name."""
    from safetensors import safe_open

    sizes = {}
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_slice(name)
                shape = t.get_shape()
                count = 1
                for d in shape:
                    count *= d
                sizes[name] = count * {"BF16": 2, "F16": 2, "F32": 4}[t.get_dtype()]
    return sizes


def loaded_bytes(sizes: dict[str, int], worker: dict) -> int:
    """The checkpoint tensors a stage loads: its layers', and the embedding, final norm and head where it has them."""
    total = 0
    for name, size in sizes.items():
        if name.startswith("model.layers."):
            total += size if worker["start"] <= int(name.split(".")[2]) < worker["end"] else 0
        elif name == "model.embed_tokens.weight":
            total += size if worker["embedding"] else 0
        elif name in ("model.norm.weight", "lm_head.weight"):
            total += size if worker["lm_head"] else 0
    return total


def compare(model_dir: str, stages: int, measured: dict) -> tuple[list[str], str]:
    from catalog.models import from_hf_config
    from planning import capacity

    config = json.loads((Path(model_dir) / "config.json").read_text())
    m = from_hf_config(config)
    dtype_bytes = {"bfloat16": 2, "float16": 2}[config.get("dtype") or config["torch_dtype"]]
    rope = m.max_position_embeddings * m.head_size * dtype_bytes
    sizes = checkpoint_bytes(model_dir)
    planned = capacity.stages(m, stages)
    workers, blocks = measured["workers"], measured["blocks"]
    problems = []
    if [(w["start"], w["end"]) for w in workers] != [(s.start, s.end) for s in planned]:
        problems.append(f"layers: vLLM {[(w['start'], w['end']) for w in workers]}, planner "
                        f"{[(s.start, s.end) for s in planned]}")
    per_token = [capacity.kv_bytes_per_token(m, dtype_bytes, 1, s.layers) for s in planned]
    expected_blocks = capacity.cpu_kv_tokens(m, KV_SPACE_GIB, stages) // capacity.CPU_BLOCK_SIZE
    if blocks != expected_blocks:
        problems.append(f"KV blocks: vLLM {blocks}, the tightest stage's {expected_blocks}")
    rows = []
    for i, (w, s, token_bytes) in enumerate(zip(workers, planned, per_token, strict=True)):
        placed = (w["embedding"], w["lm_head"])
        if placed != (s.first, s.last) or capacity.vocab_copies(m, s) != sum(placed):
            problems.append(f"stage {i}: vLLM embedding/head {placed}, planner {(s.first, s.last)}")
        weights = capacity.weights_bytes_per_gpu(m, 1, dtype_bytes, "none", s) - rope
        loaded = loaded_bytes(sizes, w)
        if weights != loaded:
            problems.append(f"stage {i}: loads {loaded:,} bytes of weights, the planner says {weights:,}")
        if w["kv_bytes"] != blocks * capacity.CPU_BLOCK_SIZE * token_bytes:
            problems.append(f"stage {i}: {w['kv_bytes']:,} bytes of KV cache, the planner says "
                            f"{blocks * capacity.CPU_BLOCK_SIZE * token_bytes:,}")
        rows.append(f"    stage {i}: layers {w['start']}-{w['end'] - 1}, embedding {w['embedding']}, head "
                    f"{w['lm_head']}: weights {loaded:,} B (planner {weights:,}), KV {w['kv_bytes']:,} B")
    head = f"  {Path(model_dir).name:<12} pipeline {stages}: {blocks} KV blocks in each stage (planner {expected_blocks})"
    return problems, "\n".join([head, *rows])


def main(model_dirs: list[str]) -> int:
    failures, reports = [], []
    for model_dir in model_dirs:
        layers = json.loads((Path(model_dir) / "config.json").read_text())["num_hidden_layers"]
        for stages in (s for s in STAGES if s <= layers):
            proc = subprocess.run([sys.executable, "-m", "tests.upstream.stage_memory", "--case", model_dir,
                                   str(stages)], capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
            if proc.returncode or not lines:
                failures.append(f"{model_dir} pipeline {stages}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
                continue
            problems, text = compare(model_dir, stages, json.loads(lines[-1].removeprefix(RESULT)))
            reports.append(text)
            failures += [f"{model_dir} pipeline {stages}: {p}" for p in problems]
    print(f"stage_memory: {len(reports)} cases measured, {len(failures)} failures")
    print("\n".join(reports))
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures or not reports else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--case"]:
        print(RESULT + json.dumps(measure(sys.argv[2], int(sys.argv[3]))), flush=True)
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
