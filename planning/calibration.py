"""Calibration: what a real vLLM start-up reported about its memory, turned into the planner's overhead terms.

`read_log` reads the lines vLLM prints while it sizes its KV cache (0.19 to 0.32; the lines at DEBUG level are used
when present). `record` turns one reading into a `Calibration`: the overhead terms measured on that GPU, at that
tensor-parallel size, on that vLLM release. `planning.capacity.size` prefers a matching record to its general
formula (`match`), and says which it used. Records live in `catalog/calibrations.yaml`, reviewed like the catalogs.

What a log gives, per GPU (vLLM's `determine_available_memory`):
- weights: "Model loading took X GiB";
- memory outside PyTorch: 0.19 prints it ("non-torch forward increase memory"); 0.32 prints weights + non-torch
  together ("Actual usage is X GiB for consumed memory (weights + non-torch)"), so it is that less the weights;
- the activation peak: 0.19 "torch peak memory increase"; 0.32 "X GiB for peak activation", which includes the
  CUDA-graph estimate when vLLM took it from the budget (default since 0.21), so that is subtracted;
- the CUDA-graph estimate: "Estimated CUDA graph memory: X GiB total";
- the KV cache: "Available KV cache memory: X GiB" and "GPU KV cache size: N tokens".
The run's inputs come from the same log: the engine line ("Initializing a V1 LLM engine (vX) with config: model=...,
tensor_parallel_size=N, ..."), the non-default arguments, the scheduler's limits and the GPU's total memory.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from catalog.gpus import GPUS
from catalog.models import MODELS, ModelArch

GIB_PATTERN = r"([0-9]+(?:\.[0-9]+)?) ?Gi?B"
# Each measured value: the first line that matches (with TP > 1 every worker prints its own; they agree).
PATTERNS = {
    "weights_gib": re.compile(r"Model loading took " + GIB_PATTERN),
    "kv_gib": re.compile(r"Available KV cache memory: " + GIB_PATTERN),
    # "GPU KV cache size" on CUDA; 0.32 names the device ("CPU KV cache size: N tokens, Maximum concurrency ...").
    "kv_tokens": re.compile(r"\b[A-Z]+(?: \+ host)? KV cache size: ([0-9,]+) tokens"),
    "cuda_graph_estimate_gib": re.compile(r"Estimated CUDA graph memory: " + GIB_PATTERN + " total"),
    "activation_gib_v019": re.compile(r"torch peak memory increase: " + GIB_PATTERN),
    "non_torch_gib_v019": re.compile(r"non-torch forward increase memory: " + GIB_PATTERN),
    "total_gib_v019": re.compile(r"total_memory=" + GIB_PATTERN),
    "consumed_gib": re.compile(r"Actual usage is " + GIB_PATTERN + r" for consumed memory"),
    "peak_activation_gib": re.compile(r"GiB for consumed memory \(weights \+ non-torch\), " + GIB_PATTERN
                                      + " for peak activation"),
    "total_gib": re.compile(r"Free memory on device \([0-9.]+/" + GIB_PATTERN + r"\) on startup"),
    "utilization": re.compile(r"Desired GPU memory utilization is \(([0-9.]+),"),
    "max_num_batched_tokens": re.compile(r"max_num_batched_tokens[= ](?:to )?([0-9]+)"),
    "max_num_seqs": re.compile(r"[Dd]efaulting max_num_seqs to ([0-9]+)"),
}
RELEASE = re.compile(r"([0-9]+)\.([0-9]+)")
ENGINE_LINE = re.compile(r"Initializing a V1 LLM engine \(v([0-9][0-9a-z.+-]*)\) with config: (.*)")
NON_DEFAULT_ARGS = re.compile(r"non-default args: (\{.*\})\s*$")
ENGINE_FIELDS = {"model": r"model='([^']+)'", "tensor_parallel_size": r"tensor_parallel_size=([0-9]+)",
                 "pipeline_parallel_size": r"pipeline_parallel_size=([0-9]+)", "max_seq_len": r"max_seq_len=([0-9]+)",
                 "quantization": r"quantization=([A-Za-z0-9_-]+)", "kv_cache_dtype": r"kv_cache_dtype=([A-Za-z0-9_]+)",
                 "dtype": r"dtype=torch\.([a-z0-9]+)", "device": r"device_config=([a-z]+)"}
GPU_MEMORY_TOLERANCE = 0.03
"""How far the log's total memory may be from the named GPU's (CUDA reserves a little; 79.19 GiB on a 79.65 H100)."""


class CalibrationError(ValueError):
    """A log that cannot be read into a calibration: the message names what is missing or wrong, and where."""


@dataclass(frozen=True)
class LogReading:
    """What one vLLM start-up log states: the run's inputs and its measured memory per GPU (GiB)."""
    vllm: str
    model_id: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    max_model_len: int
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    gpu_memory_utilization: float
    quantization: str
    kv_cache_dtype: str
    device: str
    total_gib: float | None
    weights_gib: float | None
    non_torch_gib: float | None
    activation_gib: float | None
    cuda_graph_estimate_gib: float | None
    cuda_graphs_applied: bool
    kv_gib: float | None
    kv_tokens: int | None

    @property
    def release(self) -> tuple[int, int]:
        major, minor = RELEASE.match(self.vllm).groups()
        return int(major), int(minor)


@dataclass(frozen=True)
class Calibration:
    """The overhead terms one real start-up measured, for the planner to use on the same GPU, tensor-parallel size
    and vLLM release. `measured` keeps the reading it came from."""
    id: str
    source: str
    checked: str
    vllm: str
    """major.minor: overheads change between releases (CUDA graphs entered the budget in 0.21)."""
    gpu: str
    tensor_parallel_size: int
    model: str
    non_torch_gib: float
    activation_ratio: float
    """The activation peak vLLM measured over the planner's formula at the run's own settings."""
    cuda_graph_gib_per_layer_capture: float | None
    """vLLM's CUDA-graph estimate per decoder layer and captured batch size; None when the log has none."""
    measured: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        return f"calibration {self.id} (vLLM {self.vllm}, {self.gpu}, TP {self.tensor_parallel_size}, {self.source})"


def _number(pattern: re.Pattern, text: str) -> float | None:
    """The first match's number (thousands separators dropped), or None."""
    found = pattern.search(text)
    return float(found.group(1).replace(",", "")) if found else None


def read_log(text: str, where: str = "log") -> LogReading:
    """Read one vLLM start-up log. Raises CalibrationError naming every line it needed and did not find."""
    engine = ENGINE_LINE.search(text)
    if not engine:
        raise CalibrationError(f"{where}: no 'Initializing a V1 LLM engine (vX) with config:' line; is this a vLLM "
                               "(0.8 or later) server's start-up log?")
    version, engine_config = engine.groups()
    if not RELEASE.match(version):
        raise CalibrationError(f"{where}: the engine line's version {version!r} is not major.minor[.patch]")
    fields = {k: (m.group(1) if (m := re.search(p, engine_config)) else None) for k, p in ENGINE_FIELDS.items()}
    non_default: dict = {}
    for line in text.splitlines():
        found = NON_DEFAULT_ARGS.search(line)
        if found:
            try:
                parsed = ast.literal_eval(found.group(1))
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                parsed = {}
            non_default = parsed if isinstance(parsed, dict) else {}
            break
    missing = [k for k in ("model", "tensor_parallel_size", "max_seq_len") if fields[k] is None]
    if missing:
        raise CalibrationError(f"{where}: the engine line has no {', '.join(missing)}")
    release = tuple(int(v) for v in RELEASE.match(version).groups())
    # vLLM's default --gpu-memory-utilization: 0.92 from 0.21 on (capacity.DEFAULT_GPU_MEMORY_UTILIZATION), 0.9 before.
    utilization = _number(PATTERNS["utilization"], text) or non_default.get("gpu_memory_utilization") \
        or (0.92 if release >= (0, 21) else 0.9)
    peak = _number(PATTERNS["peak_activation_gib"], text)
    consumed = _number(PATTERNS["consumed_gib"], text)
    weights = _number(PATTERNS["weights_gib"], text)
    estimate = _number(PATTERNS["cuda_graph_estimate_gib"], text)
    # From 0.21 vLLM takes its CUDA-graph estimate from the budget and prints it inside "peak activation".
    applied = release >= (0, 21) and estimate is not None
    if peak is not None:
        activation = peak - (estimate if applied else 0.0)
        non_torch = consumed - weights if consumed is not None and weights is not None else None
    else:
        activation = _number(PATTERNS["activation_gib_v019"], text)
        non_torch = _number(PATTERNS["non_torch_gib_v019"], text)
    seqs = non_default.get("max_num_seqs") or _number(PATTERNS["max_num_seqs"], text)
    batched = non_default.get("max_num_batched_tokens") or _number(PATTERNS["max_num_batched_tokens"], text)
    tokens = _number(PATTERNS["kv_tokens"], text)
    quantization = fields["quantization"] or "None"
    return LogReading(
        vllm=version, model_id=fields["model"], tensor_parallel_size=int(fields["tensor_parallel_size"]),
        pipeline_parallel_size=int(fields["pipeline_parallel_size"] or 1), max_model_len=int(fields["max_seq_len"]),
        max_num_seqs=int(seqs) if seqs else None, max_num_batched_tokens=int(batched) if batched else None,
        gpu_memory_utilization=float(utilization),
        quantization="none" if quantization == "None" else quantization,
        kv_cache_dtype=fields["kv_cache_dtype"] or "auto", device=fields["device"] or "cuda",
        total_gib=_number(PATTERNS["total_gib"], text) or _number(PATTERNS["total_gib_v019"], text),
        weights_gib=weights, non_torch_gib=non_torch, activation_gib=activation, cuda_graph_estimate_gib=estimate,
        cuda_graphs_applied=applied, kv_gib=_number(PATTERNS["kv_gib"], text),
        kv_tokens=int(tokens) if tokens is not None else None,
    )


def catalog_model(model_id: str) -> ModelArch | None:
    """The catalog model a log's `model=` names: its Hugging Face id, or a local folder named after a catalog
    model; None when the catalog does not have it."""
    by_id = {m.hf_id.lower(): m for m in MODELS.values()}
    return by_id.get(model_id.lower()) or MODELS.get(Path(model_id).name)


def record(reading: LogReading, gpu: str, model: ModelArch, *, id: str, source: str, checked: str,
           where: str = "log") -> Calibration:
    """The calibration one reading gives for `gpu` (a catalog GPU name). Raises CalibrationError naming every line
    the log lacks, and a GPU whose memory is not what the log measured."""
    from planning import capacity

    problems = []
    if reading.device != "cuda":
        problems.append(f"it ran on {reading.device}, not a GPU: vLLM's {reading.device} backend takes its KV "
                        "cache from a fixed setting (VLLM_CPU_KVCACHE_SPACE) and prints no memory profile")
    if gpu not in GPUS:
        problems.append(f"GPU {gpu!r} is not in the catalog; allowed: {', '.join(sorted(GPUS))}")
    elif reading.total_gib is not None and abs(reading.total_gib / GPUS[gpu].memory_gib - 1) > GPU_MEMORY_TOLERANCE:
        problems.append(f"the log measured {reading.total_gib} GiB of GPU memory, {gpu} has {GPUS[gpu].memory_gib}")
    if reading.pipeline_parallel_size != 1:
        problems.append(f"pipeline_parallel_size {reading.pipeline_parallel_size}: only single-stage runs calibrate")
    needed = {"weights_gib": "the weights ('Model loading took X GiB')",
              "non_torch_gib": "the memory outside PyTorch ('Actual usage is X GiB for consumed memory' in 0.21+, "
                               "'non-torch forward increase memory' at DEBUG before)",
              "activation_gib": "the activation peak ('X GiB for peak activation' in 0.21+, 'torch peak memory "
                                "increase' at DEBUG before)",
              "max_num_seqs": "max_num_seqs (the non-default args, or 'Defaulting max_num_seqs' at DEBUG)",
              "max_num_batched_tokens": "max_num_batched_tokens ('Chunked prefill is enabled with ...')"}
    problems += [f"missing {what}" for key, what in needed.items() if getattr(reading, key) is None]
    if problems:
        raise CalibrationError(f"{where}: cannot calibrate from it: " + "; ".join(problems))
    dtype_bytes = capacity.DTYPE_BYTES["auto"]
    formula = capacity.activation_bytes_per_gpu(model, reading.tensor_parallel_size, dtype_bytes,
                                                reading.max_num_batched_tokens, reading.max_num_seqs) / capacity.GiB
    captures = capacity.cuda_graph_captures(reading.max_num_seqs)
    per_layer_capture = (reading.cuda_graph_estimate_gib / (model.num_layers * captures)
                         if reading.cuda_graph_estimate_gib else None)
    measured = {k: v for k, v in vars(reading).items() if v is not None}
    return Calibration(
        id=id, source=source, checked=checked, vllm=".".join(map(str, reading.release)), gpu=gpu,
        tensor_parallel_size=reading.tensor_parallel_size, model=model.name,
        non_torch_gib=round(reading.non_torch_gib, 4), activation_ratio=round(reading.activation_gib / formula, 4),
        cuda_graph_gib_per_layer_capture=None if per_layer_capture is None else float(f"{per_layer_capture:.4g}"),
        measured=measured)


def match(records: tuple[Calibration, ...], gpu: str, tensor_parallel_size: int, vllm: str,
          model: str | None = None) -> Calibration | None:
    """The record for this GPU, tensor-parallel size and vLLM major.minor: the same model's if there is one, else
    the terms averaged over every matching record (named after the first)."""
    found = [r for r in records if (r.gpu, r.tensor_parallel_size, r.vllm) == (gpu, tensor_parallel_size, vllm)]
    if not found:
        return None
    same_model = [r for r in found if r.model == model]
    if same_model:
        return same_model[0]
    if len(found) == 1:
        return found[0]
    graphs = [r.cuda_graph_gib_per_layer_capture for r in found if r.cuda_graph_gib_per_layer_capture is not None]
    return Calibration(
        id="+".join(r.id for r in found), source="; ".join(r.source for r in found), checked=found[0].checked,
        vllm=vllm, gpu=gpu, tensor_parallel_size=tensor_parallel_size, model="(several)",
        non_torch_gib=sum(r.non_torch_gib for r in found) / len(found),
        activation_ratio=sum(r.activation_ratio for r in found) / len(found),
        cuda_graph_gib_per_layer_capture=sum(graphs) / len(graphs) if graphs else None)


# The reviewed records --------------------------------------------------------------------------------------------

RECORDS_FILE = Path(__file__).resolve().parent.parent / "catalog" / "calibrations.yaml"
TERMS = ("id", "source", "checked", "vllm", "gpu", "tensor_parallel_size", "model", "non_torch_gib",
         "activation_ratio", "cuda_graph_gib_per_layer_capture")


def as_yaml(records: list[Calibration]) -> str:
    return yaml.safe_dump([{**{k: getattr(r, k) for k in TERMS}, "measured": r.measured} for r in records],
                          sort_keys=False, width=120)


@functools.cache
def shipped() -> tuple[Calibration, ...]:
    """The reviewed records (catalog/calibrations.yaml), read once."""
    return load(RECORDS_FILE)


def load(path: Path = RECORDS_FILE) -> tuple[Calibration, ...]:
    """The records in a calibrations file; every record must carry its source and the date it was checked."""
    data = yaml.safe_load(path.read_text()) or []
    if not isinstance(data, list):
        raise CalibrationError(f"{path}: expected a list of records, got {type(data).__name__}")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict):
            raise CalibrationError(f"{path}: record {i + 1} is not a mapping")
        missing = [k for k in TERMS if k not in item and k != "cuda_graph_gib_per_layer_capture"]
        if missing:
            raise CalibrationError(f"{path}: record {i + 1} has no {', '.join(missing)}")
        numbers = ("non_torch_gib", "activation_ratio", "tensor_parallel_size")
        bad = [k for k in numbers if isinstance(item[k], bool) or not isinstance(item[k], (int, float))
               or not 0 <= item[k] < 1000]
        if bad or not RELEASE.fullmatch(str(item["vllm"])):
            raise CalibrationError(f"{path}: record {item['id']!r}: {', '.join(bad) or 'vllm'} must be "
                                   f"{'numbers from 0 to 1000' if bad else 'major.minor, e.g. 0.32'}")
        out.append(Calibration(**{k: item.get(k) for k in TERMS}, measured=item.get("measured") or {}))
    ids = [r.id for r in out]
    if len(set(ids)) != len(ids):
        raise CalibrationError(f"{path}: record ids repeat: {sorted({i for i in ids if ids.count(i) > 1})}")
    return tuple(out)
