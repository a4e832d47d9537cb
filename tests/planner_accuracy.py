"""Planner error against the public vLLM measurements: `python -m tests.planner_accuracy` (also `make accuracy`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from config import planner
from config.gpus import GPUS
from config.model_catalog import MODELS

MEASUREMENTS = yaml.safe_load((Path(__file__).parent / "data" / "vllm_measurements.yaml").read_text())


def replay(record: dict) -> planner.SizingRequest:
    """The planner request for one measured run, with the engine settings that run used."""
    gpu = GPUS.get(record["gpu"])
    return planner.SizingRequest(
        MODELS[record["model"]], record["gpu_memory_gib"], record["gpu"],
        gpu.architecture if gpu else record["architecture"], gpu.interconnect if gpu else record["interconnect"],
        tensor_parallel_size=record["tp"], gpu_memory_utilization=record["gpu_memory_utilization"],
        max_model_len=record["max_model_len"], max_num_seqs=record["max_num_seqs"],
        max_num_batched_tokens=record["max_num_batched_tokens"], cuda_graphs_profiled=record["cuda_graphs_profiled"],
    )


def reported_kv_tokens(record: dict, bytes_per_token_per_gpu: int) -> int:
    if "kv_tokens" in record:
        return record["kv_tokens"]
    return int(record["kv_gib"] * planner.GiB // (planner.BLOCK_SIZE * bytes_per_token_per_gpu)) * planner.BLOCK_SIZE


def errors() -> dict[str, dict[str, float]]:
    """Relative error (predicted / reported - 1) per check and record."""
    out: dict[str, dict[str, float]] = {"weights": {}, "kv_tokens": {}}
    for r in MEASUREMENTS:
        if "weights" in r["checks"]:
            predicted = planner.weights_bytes_per_gpu(MODELS[r["model"]], r["tp"], 2, "none") / planner.GiB
            out["weights"][r["id"]] = predicted / r["weights_gib"] - 1
        if "kv_tokens" in r["checks"]:
            s = planner.size(replay(r))
            out["kv_tokens"][r["id"]] = s.kv_cache_tokens / reported_kv_tokens(r, s.kv_bytes_per_token_per_gpu) - 1
    return out


def main() -> None:
    for check, by_record in errors().items():
        print(f"{check}:")
        for record, error in by_record.items():
            print(f"  {record:<36} {error:+7.2%}")
        absolute = [abs(e) for e in by_record.values()]
        print(f"  mean |error| {sum(absolute) / len(absolute):.2%}, max {max(absolute):.2%}, n={len(absolute)}")


if __name__ == "__main__":
    main()
