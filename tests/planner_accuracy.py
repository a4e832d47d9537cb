"""Planner error against the public vLLM measurements: `python -m tests.planner_accuracy` (also `make accuracy`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from catalog.gpus import GPUS
from catalog.models import MODELS
from llmctl.calibrate import header
from planning import calibration, capacity

MEASUREMENTS = yaml.safe_load((Path(__file__).parent / "data" / "vllm_measurements.yaml").read_text())
MULTI_NODE = yaml.safe_load((Path(__file__).parent / "data" / "multi_node_configs.yaml").read_text())
LOGS = Path(__file__).parent / "data" / "vllm_logs"


def replay(record: dict) -> capacity.SizingRequest:
    """The planner request for one measured run, with the engine settings that run used."""
    return capacity.SizingRequest(
        MODELS[record["model"]], record["gpu_memory_gib"], record["gpu"],
        tensor_parallel_size=record["tp"], quantization=record.get("quantization", "none"),
        kv_cache_dtype=record.get("kv_cache_dtype", "auto"), gpu_memory_utilization=record["gpu_memory_utilization"],
        max_model_len=record["max_model_len"], max_num_seqs=record["max_num_seqs"],
        max_num_batched_tokens=record["max_num_batched_tokens"], cuda_graphs_profiled=record["cuda_graphs_profiled"],
        non_torch_gib=record.get("non_torch_gib"), interconnect=record.get("interconnect"),
        calibrations=(),  # the general formula: these records are what it was fit and measured on
    )


# Calibration, held out ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldOut:
    log: str
    reported: int
    general: int
    calibrated: int
    calibration: str


def log_request(reading: calibration.LogReading, gpu: str,
                records: tuple[calibration.Calibration, ...]) -> capacity.SizingRequest:
    """The planner's request for the run a log records, with its own engine settings and release."""
    return capacity.SizingRequest(
        calibration.catalog_model(reading.model_id), reading.total_gib or GPUS[gpu].memory_gib, gpu,
        tensor_parallel_size=reading.tensor_parallel_size, kv_cache_dtype=reading.kv_cache_dtype,
        gpu_memory_utilization=reading.gpu_memory_utilization, max_model_len=reading.max_model_len,
        max_num_seqs=reading.max_num_seqs, max_num_batched_tokens=reading.max_num_batched_tokens,
        cuda_graphs_profiled=reading.release >= (0, 21), vllm_release=".".join(map(str, reading.release)),
        calibrations=records)


def held_out(records: tuple[calibration.Calibration, ...] | None = None) -> list[HeldOut]:
    """Every held-out log's reported KV tokens against the general formula and against the calibrated planner.
    Refuses a held-out log that produced one of the records (it would be measured on its own data)."""
    records = calibration.shipped() if records is None else records
    sources = {r.source for r in records}
    out = []
    for path in sorted(LOGS.glob("*.log")):
        text = path.read_text()
        if header(text, "role") != "held_out":
            continue
        if header(text, "source") in sources:
            raise AssertionError(f"{path.name} is held out but a calibration record was made from it")
        reading, gpu = calibration.read_log(text, path.name), header(text, "gpu")
        general = capacity.size(log_request(reading, gpu, ()))
        calibrated = capacity.size(log_request(reading, gpu, records))
        out.append(HeldOut(path.stem, reading.kv_tokens, general.kv_cache_tokens, calibrated.kv_cache_tokens,
                           calibrated.overheads_from.split(" (")[0]))
    return out


def reported_kv_tokens(record: dict, bytes_per_token_per_gpu: int) -> int:
    if "kv_tokens" in record:
        return record["kv_tokens"]
    return int(record["kv_gib"] * capacity.GiB // (capacity.BLOCK_SIZE * bytes_per_token_per_gpu)) * capacity.BLOCK_SIZE


def weights_gib(record: dict) -> tuple[float, float]:
    """(predicted, reported) weights per GPU."""
    predicted = capacity.weights_bytes_per_gpu(MODELS[record["model"]], record["tp"], 2, record.get("quantization", "none"))
    return predicted / capacity.GiB, record["weights_gib"]


def kv_tokens(record: dict) -> tuple[int, int]:
    """(predicted, reported) KV capacity in tokens, sizing the run from its GPU memory and engine settings."""
    s = capacity.size(replay(record))
    return s.kv_cache_tokens, reported_kv_tokens(record, s.kv_bytes_per_token_per_gpu)


def errors() -> dict[str, dict[str, float]]:
    """Relative error (predicted / reported - 1) per check and record."""
    out: dict[str, dict[str, float]] = {"weights": {}, "kv_tokens": {}}
    for r in MEASUREMENTS:
        for check, compare in (("weights", weights_gib), ("kv_tokens", kv_tokens)):
            if check in r["checks"]:
                predicted, reported = compare(r)
                out[check][r["id"]] = predicted / reported - 1
    return out


def vllm_release(record: dict) -> tuple[int, int]:
    """(0, 19) from "0.19.0 (V1)"; a range such as "0.9/0.10" counts as its first release."""
    major, minor = record["vllm"].split()[0].split("/")[0].split(".")[:2]
    return int(major), int(minor)


def groups(record: dict) -> list[str]:
    """The groups `make accuracy` reports a record under: the interconnect its GPUs use and the vLLM generation."""
    link = capacity.interconnect(replay(record)) if "gpu_memory_gib" in record else record.get("interconnect")
    out = []
    if record.get("gpu") == "H100-80GB":
        out.append("H100/NVLink")
    if link == "pcie":
        out.append("PCIe")
    if vllm_release(record) >= (0, 21):
        out.append("vLLM >= 0.21")
    return out


def summary(check: str = "kv_tokens") -> dict[str, dict[str, list[float]]]:
    """Absolute errors of one check by group ("all" too) and role ("fit", "held_out")."""
    by_record = errors()[check]
    out: dict[str, dict[str, list[float]]] = {}
    for r in MEASUREMENTS:
        if r["id"] in by_record:
            for group in ["all", *groups(r)]:
                out.setdefault(group, {"fit": [], "held_out": []})[r["role"]].append(abs(by_record[r["id"]]))
    return out


def overheads() -> dict[str, tuple[float, float]]:
    """(predicted, implied) GiB per GPU outside weights and KV (non-torch, activation peak, CUDA graphs when the run
    took them from the budget), for records that report weights and KV GiB: implied is the budget less what vLLM
    reported for those two, so the overhead model is judged apart from the weights and the GPU's total. V0 records
    (they carry the non-torch figure their engine reported, measured from another baseline) are left out."""
    out = {}
    for r in MEASUREMENTS:
        if {"weights_gib", "kv_gib", "gpu_memory_gib"} <= set(r) and "non_torch_gib" not in r:
            s = capacity.size(replay(r))
            budget = s.weights_gib_per_gpu + s.overhead_gib_per_gpu + s.kv_cache_gib_per_gpu  # the planner's own split
            out[r["id"]] = (s.overhead_gib_per_gpu, budget - r["weights_gib"] - r["kv_gib"])
    return out


def multi_node_request(record: dict) -> capacity.SizingRequest:
    """The planner's request for one published configuration, with the engine defaults of the release it ran."""
    gpu = GPUS[record["gpu"]]
    major, minor = (int(v) for v in record["vllm"].split(".")[:2])
    return capacity.SizingRequest(
        MODELS[record["model"]], gpu.memory_gib, gpu.name, tensor_parallel_size=record["tp"],
        pipeline_parallel_size=record["pp"], gpu_memory_utilization=record["gpu_memory_utilization"],
        max_model_len=record["max_model_len"], cuda_graphs_profiled=(major, minor) >= (0, 21))


def multi_node_verdicts() -> dict[str, tuple[bool, capacity.Sizing]]:
    """Per published configuration: whether the planner agrees that it runs (or does not), and its sizing."""
    out = {}
    for record in MULTI_NODE:
        sizing = capacity.size(multi_node_request(record))
        out[record["id"]] = (sizing.fits == record["runs"], sizing)
    return out


def _cell(values: list[float]) -> str:
    if not values:
        return f"{'-':>24}"
    return f"{sum(values) / len(values):6.2%} {max(values):6.2%} n={len(values):<3}".rjust(24)


def _held_out_lines() -> list[str]:
    rows = held_out()
    general = [abs(r.general / r.reported - 1) for r in rows]
    calibrated = [abs(r.calibrated / r.reported - 1) for r in rows]
    lines = [f"calibration: {len(calibration.shipped())} records in catalog/calibrations.yaml, measured on "
             f"{len(rows)} held-out logs (tests/data/vllm_logs/, none of them a record's source): KV tokens",
             f"  {'log':<26} {'reported':>10} {'general formula':>22} {'calibrated':>22}  record used"]
    for r in rows:
        lines.append(f"  {r.log:<26} {r.reported:>10,} {r.general:>12,} {r.general / r.reported - 1:+8.2%} "
                     f"{r.calibrated:>12,} {r.calibrated / r.reported - 1:+8.2%}  {r.calibration}")
    lines.append(f"  mean |error|: general formula {sum(general) / len(general):.2%} (max {max(general):.2%}), "
                 f"calibrated {sum(calibrated) / len(calibrated):.2%} (max {max(calibrated):.2%})")
    return lines


def main() -> None:
    for check, by_record in errors().items():
        print(f"{check}:")
        for record, error in by_record.items():
            print(f"  {record:<36} {error:+7.2%}")
        print(f"  {'group':<16}{'fit: mean max n':>24}{'held out: mean max n':>24}")
        for group, roles in summary(check).items():
            print(f"  {group:<16}{_cell(roles['fit'])}{_cell(roles['held_out'])}")
    print("overhead GiB per GPU (non-torch + activation + CUDA graphs): predicted, implied by the log, difference")
    for record, (predicted, implied) in overheads().items():
        print(f"  {record:<36} {predicted:6.2f} {implied:6.2f} {predicted - implied:+6.2f}")
    print("\n".join(_held_out_lines()))
    verdicts = multi_node_verdicts()
    print(f"multi-node configurations (tests/data/multi_node_configs.yaml): the planner agrees with "
          f"{sum(agree for agree, _ in verdicts.values())} of {len(verdicts)}")
    for record in MULTI_NODE:
        agree, s = verdicts[record["id"]]
        print(f"  {record['id']:<36} {record['gpu']:<10} TP {record['tp']} x PP {record['pp']}  published: "
              f"{'runs' if record['runs'] else 'does not fit'}; planner: "
              f"{'fits' if s.fits else 'does not fit'}, {s.kv_cache_tokens:,} KV tokens, weights "
              f"{s.weights_gib_per_gpu:.1f} GiB/GPU on stage {s.stage + 1} of {s.pipeline_parallel_size}  "
              f"{'agrees' if agree else 'DISAGREES'}")


if __name__ == "__main__":
    main()
