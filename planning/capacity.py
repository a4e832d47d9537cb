"""Capacity planner: GPU memory of one vLLM replica, from the model's architecture. Pure functions.

vLLM (0.32, `vllm/v1/worker/gpu_worker.py::determine_available_memory`) gives the KV cache whatever is left of
`total_memory * gpu_memory_utilization` after three things it measures at start-up, per GPU:

1. weights: every parameter's bytes, divided across tensor-parallel ranks (see `weights_bytes_per_gpu`), and with
   pipeline parallelism only the layers of the GPU's own stage (see `stage_layers`);
2. non-KV overhead: memory the instance adds outside PyTorch (mostly NCCL and custom all-reduce buffers at TP >= 2),
   the activation peak of one forward pass over `max_num_batched_tokens` tokens (or of the sampler over
   `max_num_seqs` sequences, whichever is larger), and since vLLM 0.21 its estimate of the CUDA graphs;
3. the KV cache, allocated in blocks of 16 tokens; a token costs
   2 (K and V) x layers x KV heads x head size x bytes of the KV dtype, and each rank holds its share of the heads.

With pipeline parallelism every stage does this for its own layers, and the engine then gives every stage the
fewest blocks any stage has room for (`vllm/v1/core/kv_cache_utils.py::get_kv_cache_configs`, step 5): the replica
holds as many tokens as its tightest stage.

Every constant below says where it comes from. Accuracy against public vLLM start-up logs: tests/test_planner.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from catalog.gpus import GPUS, INTERCONNECTS, NVLINK, PCIE
from catalog.models import ModelArch
from catalog.versions import VLLM
from planning import calibration

GiB = 1024**3
BLOCK_SIZE = 16
"""vLLM's default KV block size on CUDA (tokens per block); capacity is a whole number of blocks."""
CPU_BLOCK_SIZE = 128
"""vLLM 0.32's KV block size on its CPU backend (`vllm/platforms/cpu.py`, when the user sets none)."""
VLLM_RELEASE = ".".join(VLLM.tag.lstrip("v").split(".")[:2])
"""The vLLM release the platform deploys (catalog/versions.py), as major.minor: what calibrations are matched on."""
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92
"""vLLM 0.32 default (`vllm/config/cache.py`: `gpu_memory_utilization: float = Field(default=0.92, ...)`)."""

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "auto": 2}
"""`auto` is the checkpoint's torch_dtype, which is bf16 or fp16 for every catalog model."""
KV_DTYPE_BYTES = {"fp8": 1}
WEIGHT_QUANTIZATIONS = ("none", "fp8", "int8", "awq", "gptq", "bitsandbytes-nf4")
# Bytes per parameter of a quantized linear layer. 4-bit formats carry per-group scales: AWQ/GPTQ with group size 128
# add an fp16 scale and a 4-bit zero point per 128 weights (2.5 bytes / 128); bitsandbytes NF4 adds an absmax per
# 64 weights, itself quantized to 8 bits with a second-level fp32 constant per 256 blocks (~1/64 + 4/16384 bytes).
# FP8 and INT8 per-channel scales are one float per output row: negligible.
QUANT_BYTES_PER_PARAM = {"fp8": 1.0, "int8": 1.0, "awq": 0.5 + 2.5 / 128, "gptq": 0.5 + 2.5 / 128,
                         "bitsandbytes-nf4": 0.5 + 1 / 64 + 4 / 16384}
VOCAB_PADDING = 64
"""vLLM pads the vocabulary of its embedding and LM head to a multiple of 64 (`pad_vocab_size`) before sharding."""

# The measurements below come from 59 complete vLLM 0.19.0 start-up logs on H100 (nearly all at utilization 0.95,
# all with 1024 sequences and 8192 batched tokens), published by the llm-d planner's accuracy study (checked
# 2026-11-24):
# https://github.com/llm-d-incubation/llm-d-planner/tree/d3121e059da88662db39a926a3ead964be97359b/accuracy/results/v0.19.0/logs
# Memory the vLLM instance adds outside PyTorch ("non-torch forward increase memory"): 0.24-0.27 GiB per GPU at TP 1,
# and 0.26 in vLLM 0.31 on A100 (tests/data/vllm_measurements.yaml, llama31-8b-a100-v031).
# vLLM takes its budget from the total memory times the utilization, so the CUDA context, created before vLLM's
# first memory snapshot, is not part of it.
NON_TORCH_GIB = 0.25
# At TP >= 2 the communicators add to it, and what they allocate depends on how the GPUs are joined
# (`vllm/distributed/device_communicators/`):
# - NVLink on an NVSwitch (p4d/p4de/p5/p5e/p5en): vLLM's custom all-reduce buffers, and on Hopper NCCL's NVLink
#   SHARP and the symmetric-memory communicator. 2.06-2.21 GiB per GPU at TP 2 and 4 on H100 in the 0.19.0 logs, so
#   1.85 over TP 1. A100 has neither NVLS nor symmetric memory (both need SM 9.0+), so this is an upper bound there.
# - PCIe only (g5/g6/g6e): custom all-reduce is off above two GPUs ("not supported on more than two PCIe-only GPUs",
#   custom_all_reduce.py), NVLS needs NVSwitch and symmetric memory needs SM 9.0+: only NCCL's ring buffers remain.
#   vLLM reported 0.30 GiB at TP 2 on L40S and 0.25 GiB at TP 2 on RTX 4090, against 0.25 at TP 1
#   (qwen25-32b-l40s-tp2 and r1-distill-qwen-14b-rtx4090-tp2 in tests/data/vllm_measurements.yaml): 0.05 over TP 1.
TP_COMM_GIB = {NVLINK: 1.85, PCIE: 0.05}
UNKNOWN_GPU_INTERCONNECT = NVLINK
"""A GPU outside the catalog gets the larger allowance: under-counting KV is safer than promising memory."""
# vLLM >= 0.21 estimates CUDA-graph memory before sizing the KV cache and takes it from the budget
# (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS, default on since 0.21). The graphs hold one piece per decoder layer for
# each captured batch size, so the estimate grows with the layer count and the number of captures: the 0.19.0 logs
# print the same estimate (not yet applied there) at 0.020-0.026 GiB per layer for dense and MoE models from 28 to
# 80 layers at TP 1-4 (one TP 2 outlier at 0.053), all with 1024 sequences, i.e. 102 captures (see cuda_graph_captures).
CUDA_GRAPH_GIB_PER_LAYER_CAPTURE = 0.023 / 102
# Activation peak of the profiling forward pass, bytes per batched token per GPU, in the activation dtype:
# the gate/up projection output (2 x intermediate) plus the activated intermediate (1 x), the q/k/v projection
# output, and two hidden-size buffers (residual and layer output). For Llama-3.1-8B that is 112 KiB per token;
# vLLM measured 107 KiB per token at 20,000 and 29,000 batched tokens (https://github.com/vllm-project/vllm/issues/10517),
# and CodeLlama-7B (small vocabulary, so the forward pass dominates) peaked at 0.77 GiB for 8192 tokens where this
# predicts 0.82.
# After the forward pass vLLM runs its sampler (top-k and top-p) over max_num_seqs rows of the vocabulary; the peak is
# whichever is larger. 1.89 GiB for Llama-3.1-8B (1024 x 128,256 logits) and 2.21 GiB for Qwen2.5-7B (1024 x 152,064)
# in the 0.19.0 logs: 15.2-15.5 bytes per logit.
SAMPLER_BYTES_PER_LOGIT = 15.5
# Mixture-of-experts models also keep the fused-MoE workspace through the profiling pass: their peak was 0.38 GiB
# (Mixtral-8x7B) and 0.43 GiB (Qwen3-30B-A3B) above the dense figure in the 0.19.0 logs.
MOE_WORKSPACE_GIB = 0.4


class PlannerInputError(ValueError):
    """Inputs the planner cannot size: each message names the input, the bad value and what is allowed."""


@dataclass(frozen=True)
class SizingRequest:
    model: ModelArch
    gpu_memory_gib: float
    gpu_name: str = "custom"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    """Stages: each holds a contiguous share of the decoder layers on tensor_parallel_size GPUs (one node each when
    the model spans nodes)."""
    dtype: str = "auto"
    quantization: str = "none"
    """`none` uses the checkpoint as published (Meta's FP8 405B stays FP8)."""
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    max_model_len: int | None = None
    """Default: the model's max_position_embeddings, as vLLM does."""
    max_num_seqs: int | None = None
    """Default: vLLM's for `vllm serve` on this GPU (see `scheduler_defaults`)."""
    max_num_batched_tokens: int | None = None
    cuda_graphs_profiled: bool = True
    """False for vLLM < 0.21 (graphs then came out of the headroom above the utilization)."""
    interconnect: str | None = None
    """`nvlink` or `pcie`. Default: the catalog GPU's (catalog/gpus.py); UNKNOWN_GPU_INTERCONNECT for other GPUs."""
    lora_slots: int = 0
    """--max-loras: adapters one batch may mix. 0: LoRA off."""
    lora_rank: int = 0
    """--max-lora-rank: the rank every slot is sized for."""
    vllm_release: str = VLLM_RELEASE
    """major.minor of the vLLM that runs: a calibration is used only for its own release."""
    calibrations: tuple[calibration.Calibration, ...] | None = None
    """Measured overheads to prefer to the general formula when one matches the GPU, tensor-parallel size and
    release (planning/calibration.py). Default: catalog/calibrations.yaml; () for the general formula only."""
    non_torch_gib: float | None = None
    """Memory outside PyTorch per GPU. Default: a matching calibration's, else what vLLM 0.19+ measures
    (NON_TORCH_GIB, plus the interconnect's TP_COMM_GIB at TP >= 2).
    Replaying a log of an older vLLM passes the value that version reported: it measured from an earlier baseline
    (1.79 GiB on H100 in 0.6.5)."""


@dataclass(frozen=True)
class Sizing:
    model: str
    gpu: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    stage: int
    """The pipeline stage the figures below are for: the one with the fewest KV tokens, which sets the replica's
    capacity (0 without pipeline parallelism)."""
    stage_layers: tuple[int, ...]
    """Decoder layers per stage, as vLLM splits them."""
    interconnect: str
    gpu_memory_gib: float
    gpu_memory_utilization: float
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    weights_gib_per_gpu: float
    lora_gib_per_gpu: float
    """GPU memory vLLM reserves for LoRA slots (`lora_bytes_per_gpu`); 0 without adapters."""
    non_torch_gib_per_gpu: float
    activation_gib_per_gpu: float
    cuda_graph_gib_per_gpu: float
    overhead_gib_per_gpu: float
    kv_cache_gib_per_gpu: float
    kv_bytes_per_token: int
    """Whole model, before sharding across tensor-parallel ranks."""
    kv_bytes_per_token_per_gpu: int
    kv_cache_tokens: int
    overheads_from: str
    """`general formula`, or the calibration record whose measured overheads were used (planning/calibration.py)."""
    max_concurrency: float
    """KV capacity / max_model_len: how many requests of full length fit at once (vLLM logs the same ratio)."""
    fits: bool
    reason: str

    def as_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def scheduler_defaults(gpu_memory_gib: float, gpu_name: str) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) that `vllm serve` 0.32 picks for a GPU
    (`EngineArgs.get_batch_defaults`, OPENAI_API_SERVER usage context)."""
    if gpu_memory_gib >= 160:
        return 16384, 1024
    if gpu_memory_gib >= 70 and "a100" not in gpu_name.lower():
        return 8192, 1024
    return 2048, 256


@dataclass(frozen=True)
class InputProblem:
    """One bad input: the SizingRequest field, its value, and what is allowed. Callers name the field in their own
    vocabulary (config keys, command-line flags); str() uses the field's own name."""

    field: str
    value: object
    why: str

    def __str__(self) -> str:
        return f"{self.field} {self.value!r}: {self.why}"


MAX_GPU_MEMORY_GIB = 4096
"""A ceiling on one GPU's memory, far above any catalog GPU (B200: 179 GiB): it keeps the arithmetic finite."""
MAX_NUM_SEQS = 65_536
"""The same ceiling config/schema.py puts on models.<key>.maxNumSeqs."""
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The values vLLM 0.32 accepts for --max-lora-rank (vllm/config/lora.py MaxLoRARanks; checked 2026-12-02)."""
MAX_PIPELINE_STAGES = 8
"""This program's ceiling on pipeline stages (config models.<key>.pipelineParallelSize, nodes per replica): each
stage adds a network hop to every generated token."""
MAX_LORA_SLOTS = 64
"""This program's ceiling on --max-loras (models.<key>.maxLoras): each slot reserves GPU memory for an adapter of
the largest rank on every layer, whether or not a request uses it."""


def validate(req: SizingRequest) -> list[InputProblem]:
    """Every problem with a request, each naming the input, its value and what is allowed."""
    m, tp = req.model, req.tensor_parallel_size
    problems = []

    def bad(field: str, why: str) -> None:
        problems.append(InputProblem(field, getattr(req, field), why))

    if not 1 <= req.pipeline_parallel_size <= m.num_layers:
        bad("pipeline_parallel_size", f"must be from 1 to {m.name}'s {m.num_layers} decoder layers (each stage holds "
                                      "at least one)")
    if tp < 1:
        bad("tensor_parallel_size", "must be a positive integer")
    elif m.num_attention_heads % tp:
        divisors = [d for d in (1, 2, 4, 8, 16) if m.num_attention_heads % d == 0]
        bad("tensor_parallel_size", f"must divide {m.name}'s {m.num_attention_heads} attention heads; "
                                    f"allowed: {', '.join(map(str, divisors))}")
    elif tp > m.num_kv_heads and tp % m.num_kv_heads:
        bad("tensor_parallel_size", f"above {m.name}'s {m.num_kv_heads} KV heads it must be a multiple of them "
                                    "(vLLM replicates KV heads across ranks)")
    if not 0 < req.gpu_memory_gib <= MAX_GPU_MEMORY_GIB:  # also refuses nan and inf
        bad("gpu_memory_gib", f"must be more than 0 and at most {MAX_GPU_MEMORY_GIB} GiB")
    if not 0 < req.gpu_memory_utilization <= 1:
        bad("gpu_memory_utilization", "must be in (0, 1]")
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens"):
        value = getattr(req, name)
        if value is not None and value <= 0:
            bad(name, "must be a positive integer")
    if req.max_num_seqs is not None and req.max_num_seqs > MAX_NUM_SEQS:
        bad("max_num_seqs", f"must be at most {MAX_NUM_SEQS:,} (vLLM sizes per-sequence buffers by it at start)")
    if req.max_model_len is not None and req.max_model_len > m.max_position_embeddings:
        bad("max_model_len", f"above {m.name}'s max_position_embeddings ({m.max_position_embeddings}); vLLM "
                             "refuses it without rope scaling")
    if req.dtype not in DTYPE_BYTES:
        bad("dtype", f"allowed: {', '.join(DTYPE_BYTES)}")
    if req.quantization not in WEIGHT_QUANTIZATIONS:
        bad("quantization", f"allowed: {', '.join(WEIGHT_QUANTIZATIONS)}")
    elif m.checkpoint_quantization != "none" and req.quantization not in ("none", m.checkpoint_quantization):
        bad("quantization", f"{m.name} is published as {m.checkpoint_quantization}; "
                            f"allowed: none or {m.checkpoint_quantization}")
    if req.kv_cache_dtype not in ("auto", "fp8"):
        bad("kv_cache_dtype", "allowed: auto, fp8")
    if req.interconnect is not None and req.interconnect not in INTERCONNECTS:
        bad("interconnect", f"allowed: {', '.join(INTERCONNECTS)}")
    if not 0 <= req.lora_slots <= MAX_LORA_SLOTS:
        bad("lora_slots", f"must be from 0 (no LoRA) to {MAX_LORA_SLOTS}")
    elif req.lora_slots and req.lora_rank not in LORA_RANKS:
        bad("lora_rank", f"vLLM sizes LoRA slots for {', '.join(map(str, LORA_RANKS))}")
    elif req.lora_slots and m.is_moe:
        bad("lora_slots", f"{m.name} is a mixture of experts, whose LoRA memory this planner does not size")
    return problems


def interconnect(req: SizingRequest) -> str:
    """The link between the request's GPUs: as given, else the catalog GPU's, else the conservative default."""
    if req.interconnect:
        return req.interconnect
    gpu = GPUS.get(req.gpu_name)
    return gpu.interconnect if gpu else UNKNOWN_GPU_INTERCONNECT


def non_torch_gib(tp: int, link: str) -> float:
    return NON_TORCH_GIB + (TP_COMM_GIB[link] if tp > 1 else 0.0)


def cuda_graph_captures(max_num_seqs: int) -> int:
    """Batch sizes vLLM captures by default: 1, 2, 4, then every 8 up to 248 and every 16 from 256, up to
    min(2 x max_num_seqs, 512) for the piecewise graphs and up to max_num_seqs for the full decode graphs
    (a vLLM 0.21 log for 256 sequences prints "PIECEWISE=51 (largest=512), FULL=35 (largest=256)")."""
    def sizes_up_to(limit: int) -> int:
        sizes = [1, 2, 4, *range(8, 256, 8), *range(256, 513, 16)]
        return sum(1 for b in sizes if b <= limit)
    return sizes_up_to(min(2 * max_num_seqs, 512)) + sizes_up_to(min(max_num_seqs, 512))


def cuda_graph_gib(m: ModelArch, max_num_seqs: int, lora_slots: int = 0, layers: int | None = None,
                   gib_per_layer_capture: float | None = None) -> float:
    """`layers`: the decoder layers whose graph pieces this GPU holds (one pipeline stage's; default all).
    `gib_per_layer_capture`: a calibration's measured figure (default CUDA_GRAPH_GIB_PER_LAYER_CAPTURE)."""
    per_piece = CUDA_GRAPH_GIB_PER_LAYER_CAPTURE if gib_per_layer_capture is None else gib_per_layer_capture
    return (per_piece * (m.num_layers if layers is None else layers)
            * cuda_graph_captures(max_num_seqs) * cuda_graph_lora_cases(lora_slots))


def calibration_for(req: SizingRequest) -> calibration.Calibration | None:
    """The measured overheads for this request's GPU, tensor-parallel size and vLLM release, if a record has them.
    Records come from single-stage runs, so a pipeline-parallel request uses the general formula."""
    if req.pipeline_parallel_size != 1:
        return None
    records = calibration.shipped() if req.calibrations is None else req.calibrations
    return calibration.match(records, req.gpu_name, req.tensor_parallel_size, req.vllm_release, req.model.name)


def cpu_kv_tokens(m: ModelArch, kv_cache_space_gib: float, pipeline_parallel_size: int = 1,
                  block_size: int = CPU_BLOCK_SIZE) -> int:
    """KV tokens of a vLLM server on its CPU backend: VLLM_CPU_KVCACHE_SPACE GiB per stage, in whole blocks of
    the stage with the most layers (`tests/upstream/stage_memory.py` measures this exactly)."""
    per_token = max(kv_bytes_per_token(m, DTYPE_BYTES["auto"], 1, s.layers) for s in stages(m, pipeline_parallel_size))
    return int(kv_cache_space_gib * GiB // (block_size * per_token)) * block_size


def cuda_graph_lora_cases(lora_slots: int) -> int:
    """With LoRA on, vLLM 0.32 captures every batch size twice, without and with active adapters
    (`compilation_config.cudagraph_specialize_lora`, default true; `vllm/v1/cudagraph_dispatcher.py`
    `_get_lora_cases` returns [0, max_loras + 1] unless --specialize-active-lora adds more), and its estimate counts
    every graph: LoRA doubles the CUDA graphs' memory. Read from the source; not measured on a GPU here."""
    return 2 if lora_slots else 1


def kv_bytes_per_token(m: ModelArch, kv_dtype_bytes: int, tp: int = 1, layers: int | None = None) -> int:
    """K and V for every layer (or `layers` of them: one pipeline stage's). Per rank: each holds num_kv_heads / tp
    heads, or one replicated head when tp exceeds the KV heads (so KV memory stops shrinking past tp = num_kv_heads)."""
    heads = m.num_kv_heads if tp == 1 else max(m.num_kv_heads // tp, 1)
    return 2 * (m.num_layers if layers is None else layers) * heads * m.head_size * kv_dtype_bytes


def parameter_count(m: ModelArch) -> int:
    """Parameters of the whole model from its architecture (dense, GQA, MoE, tied embeddings)."""
    return _parameters(m, tp=1)["total"]


def _parameters(m: ModelArch, tp: int) -> dict[str, int]:
    """Parameters held by one tensor-parallel rank, grouped by how they are stored."""
    h, hd = m.hidden_size, m.head_size
    q_out = m.num_attention_heads * hd // tp
    kv_out = max(m.num_kv_heads // tp, 1) * hd if tp > 1 else m.num_kv_heads * hd
    attention = h * q_out + 2 * h * kv_out + q_out * h
    if m.is_moe:
        mlp = m.num_experts * 3 * h * m.moe_intermediate_size // tp
        router = h * m.num_experts
    else:
        mlp = 3 * h * m.intermediate_size // tp
        router = 0
    small = 2 * h + (2 * hd if m.qk_norm else 0) + (q_out + 2 * kv_out if m.qkv_bias else 0) + router
    vocab = math.ceil(m.vocab_size / VOCAB_PADDING) * VOCAB_PADDING if tp > 1 else m.vocab_size
    embeddings = (1 if m.tie_word_embeddings else 2) * vocab * h // tp
    return {"attention": attention, "mlp": mlp, "small": small, "vocab_matrix": vocab * h // tp,
            "total": m.num_layers * (attention + mlp + small) + embeddings + h}


def stage_layers(num_layers: int, pp: int) -> list[int]:
    """Decoder layers per pipeline stage as vLLM 0.32 splits them (`vllm/distributed/utils.py::get_pp_indices`,
    without VLLM_PP_LAYER_PARTITION): an equal share each, and the remainder one apiece to the stages before the
    last, starting from the second-to-last (the last stage already holds the final norm and the LM head)."""
    parts = [num_layers // pp] * pp
    for i in range(2, num_layers % pp + 2):
        parts[-i] += 1
    return parts


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its decoder layers [start, end), and whether it is the first (input embedding) or the
    last (final norm, LM head, sampler). Without pipeline parallelism the only stage is both."""
    start: int
    end: int
    first: bool
    last: bool

    @property
    def layers(self) -> int:
        return self.end - self.start


def stages(m: ModelArch, pp: int) -> list[Stage]:
    out, start = [], 0
    for i, n in enumerate(stage_layers(m.num_layers, pp)):
        out.append(Stage(start, start + n, i == 0, i == pp - 1))
        start += n
    return out


def vocab_copies(m: ModelArch, stage: Stage) -> int:
    """Vocabulary-sized matrices a stage holds (vLLM 0.32 `models/llama.py`, the pattern every decoder follows): the
    input embedding on the first stage, the LM head on the last. Tied embeddings share one matrix when both are on
    the same stage; across stages the last one keeps its own copy of the embedding for the head."""
    copies = int(stage.first) + int(stage.last)
    return 1 if copies == 2 and m.tie_word_embeddings else copies


def weights_bytes_per_gpu(m: ModelArch, tp: int, dtype_bytes: int, quantization: str,
                          stage: Stage | None = None) -> int:
    """Embeddings, LM head and norms stay in the activation dtype under every quantization vLLM supports;
    quantized formats apply to the decoder layers' linear weights (attention too, unless the checkpoint says
    only the MLP). Also counts the rotary cos/sin cache (max positions x head size, activation dtype): the 32 MiB
    gap between Llama-3.1-8B's parameters and vLLM's reported 14.99 GiB. `stage`: one pipeline stage's share
    (default: the whole model, one stage)."""
    stage = stage or Stage(0, m.num_layers, True, True)
    p = _parameters(m, tp)
    quant = m.checkpoint_quantization if quantization == "none" else quantization
    linear_bytes = QUANT_BYTES_PER_PARAM.get(quant, dtype_bytes)
    unquantized = sum(1 for i in m.unquantized_layers if stage.start <= i < stage.end)
    quantized_layers = stage.layers - unquantized if quant != "none" else 0
    attention_bytes = linear_bytes if m.quantized_modules == "all" else dtype_bytes
    layers = (quantized_layers * (p["attention"] * attention_bytes + p["mlp"] * linear_bytes)
              + (stage.layers - quantized_layers) * (p["attention"] + p["mlp"]) * dtype_bytes)
    rope_cache = m.max_position_embeddings * m.head_size * dtype_bytes
    final_norm = m.hidden_size if stage.last else 0
    vocab = vocab_copies(m, stage) * p["vocab_matrix"]
    return int(layers + (stage.layers * p["small"] + vocab + final_norm) * dtype_bytes + rope_cache)


# LoRA (vLLM 0.32, `vllm/lora/layers/`): with --enable-lora, every linear layer of the decoder, the input embedding
# and the LM head get stacked A and B tensors for --max-loras slots at --max-lora-rank, allocated when the model loads
# (before the KV cache is sized), in the model's dtype, whether or not an adapter fills them:
# - column-parallel layers (q/k/v and gate/up, one slice per packed projection): A is rank x full input per slice,
#   B is the rank-sized share of each slice's output on this rank (`base_linear.py`, `column_parallel_linear.py`);
# - row-parallel layers (o_proj, down_proj): A is rank x this rank's share of the input, B is full output x rank;
# - the input embedding: A is vocabulary x rank, B is hidden x rank (`vocab_parallel_embedding.py`);
# - the LM head: A is rank x hidden, B is vocabulary x rank, unsharded (`logits_processor.py`).
# `make test-upstream` (tests/upstream/lora_memory.py) sums the real tensors of a vLLM CPU engine and compares.
# Not counted: the adapters' own copies in host memory (--max-cpu-loras, on the CPU side) and the punica kernels'
# per-batch metadata (a few MiB, inside the activation allowance).


def lora_bytes_per_gpu(m: ModelArch, tp: int, slots: int, rank: int, dtype_bytes: int) -> int:
    """GPU memory the LoRA slots take on one tensor-parallel rank (dense models)."""
    if slots == 0:
        return 0
    h, hd = m.hidden_size, m.head_size
    q_out = m.num_attention_heads * hd // tp
    kv_out = max(m.num_kv_heads // tp, 1) * hd if tp > 1 else m.num_kv_heads * hd
    intermediate = m.intermediate_size // tp
    per_layer = rank * (3 * h + q_out + 2 * kv_out      # qkv_proj: A for each of q, k, v; B their outputs
                        + q_out + h                     # o_proj
                        + 2 * h + 2 * intermediate      # gate_up_proj
                        + intermediate + h)             # down_proj
    embeddings = rank * (m.vocab_size + h) + rank * (h + m.vocab_size)
    return slots * (m.num_layers * per_layer + embeddings) * dtype_bytes


def activation_bytes_per_gpu(m: ModelArch, tp: int, dtype_bytes: int, batched_tokens: int, max_num_seqs: int,
                             samples: bool = True) -> int:
    """`samples`: whether this GPU runs the sampler (only the last pipeline stage does)."""
    intermediate = m.experts_per_token * m.moe_intermediate_size if m.is_moe else m.intermediate_size
    qkv = (m.num_attention_heads + 2 * m.num_kv_heads) * m.head_size
    per_token = dtype_bytes * (3 * intermediate // tp + qkv // tp + 2 * m.hidden_size)
    sampler = max_num_seqs * m.vocab_size * SAMPLER_BYTES_PER_LOGIT if samples else 0
    moe_workspace = MOE_WORKSPACE_GIB * GiB if m.is_moe else 0
    return int(max(batched_tokens * per_token, sampler) + moe_workspace)


def size(req: SizingRequest) -> Sizing:
    """Size one replica. Raises PlannerInputError listing every problem with the request. With pipeline
    parallelism, every stage is sized and the figures are the tightest stage's: vLLM gives every stage the same
    number of KV blocks, the fewest any stage has room for."""
    problems = validate(req)
    if problems:
        raise PlannerInputError("; ".join(map(str, problems)))
    sized = [_size_stage(req, i, stage) for i, stage in enumerate(stages(req.model, req.pipeline_parallel_size))]
    return min(sized, key=lambda s: (s.kv_cache_tokens, not s.fits, s.stage))


def _size_stage(req: SizingRequest, index: int, stage: Stage) -> Sizing:
    m, tp = req.model, req.tensor_parallel_size
    dtype_bytes = DTYPE_BYTES[req.dtype]
    default_batched, default_seqs = scheduler_defaults(req.gpu_memory_gib, req.gpu_name)
    max_model_len = req.max_model_len or m.max_position_embeddings
    max_num_seqs = req.max_num_seqs or default_seqs
    batched = req.max_num_batched_tokens or default_batched

    weights = weights_bytes_per_gpu(m, tp, dtype_bytes, req.quantization, stage) / GiB
    lora = lora_bytes_per_gpu(m, tp, req.lora_slots, req.lora_rank, dtype_bytes) / GiB
    link = interconnect(req)
    measured = calibration_for(req)
    non_torch = (req.non_torch_gib if req.non_torch_gib is not None
                 else measured.non_torch_gib if measured else non_torch_gib(tp, link))
    # The activation peak is the model's own (its widths and vocabulary): a record's ratio applies to its model only.
    # Memory outside PyTorch and the CUDA graphs' per-layer cost belong to the GPU, TP size and release.
    activation = (activation_bytes_per_gpu(m, tp, dtype_bytes, batched, max_num_seqs, samples=stage.last) / GiB
                  * (measured.activation_ratio if measured and measured.model == m.name else 1.0))
    graphs = cuda_graph_gib(m, max_num_seqs, req.lora_slots, stage.layers,
                            measured.cuda_graph_gib_per_layer_capture if measured else None) \
        if req.cuda_graphs_profiled else 0.0
    overhead = non_torch + activation + graphs

    budget = math.ceil(req.gpu_memory_gib * GiB * req.gpu_memory_utilization) / GiB
    kv_gib = budget - weights - lora - overhead
    kv_dtype = KV_DTYPE_BYTES.get(req.kv_cache_dtype, dtype_bytes)
    per_token_gpu = kv_bytes_per_token(m, kv_dtype, tp, stage.layers)
    blocks = max(int(kv_gib * GiB // (BLOCK_SIZE * per_token_gpu)), 0)
    tokens = blocks * BLOCK_SIZE
    needed = weights + lora + overhead + max_model_len * per_token_gpu / GiB
    fits = tokens >= max_model_len
    pp = req.pipeline_parallel_size
    where = f"{req.gpu_name} has {budget:.1f} GiB at utilization {req.gpu_memory_utilization}"
    if pp > 1:
        where = f"pipeline stage {index + 1} of {pp} ({stage.layers} layers); {where}"
    if fits:
        reason = f"{tokens:,} KV tokens hold {tokens / max_model_len:.1f} requests of {max_model_len:,} tokens; {where}"
    else:
        adapters = f" + LoRA slots {lora:.1f}" if lora else ""
        reason = (f"needs {needed:.1f} GiB per GPU (weights {weights:.1f}{adapters} + overhead {overhead:.1f} + KV for one "
                  f"{max_model_len:,}-token request {max_model_len * per_token_gpu / GiB:.1f}), {where}")
    return Sizing(
        model=m.name, gpu=req.gpu_name, tensor_parallel_size=tp, pipeline_parallel_size=pp, stage=index,
        stage_layers=tuple(stage_layers(m.num_layers, pp)), interconnect=link, gpu_memory_gib=req.gpu_memory_gib,
        gpu_memory_utilization=req.gpu_memory_utilization, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=batched, weights_gib_per_gpu=weights, lora_gib_per_gpu=lora, non_torch_gib_per_gpu=non_torch,
        activation_gib_per_gpu=activation, cuda_graph_gib_per_gpu=graphs, overhead_gib_per_gpu=overhead,
        kv_cache_gib_per_gpu=max(kv_gib, 0.0), kv_bytes_per_token=kv_bytes_per_token(m, kv_dtype),
        kv_bytes_per_token_per_gpu=per_token_gpu, kv_cache_tokens=tokens,
        overheads_from=measured.describe() if measured else "general formula", max_concurrency=tokens / max_model_len,
        fits=fits, reason=reason,
    )


def suggestion(req: SizingRequest, max_gpus: int, across_nodes: bool = True) -> str:
    """One concrete way out for a request that does not fit, for error messages. `across_nodes`: whether the
    engine can split a model across nodes (vLLM can, TGI cannot)."""
    m = req.model
    for tp in (t for t in (2, 4, 8) if req.tensor_parallel_size < t <= max_gpus):
        wider = replace(req, tensor_parallel_size=tp)
        if not validate(wider) and size(wider).fits:
            return f"use tensorParallelSize {tp}"
    span = _across_nodes(req, max_gpus) if across_nodes else None
    also = f", or {span}" if span else ""
    if req.quantization == "none" and m.checkpoint_quantization == "none":
        for quant in ("fp8", "awq"):
            if size(replace(req, quantization=quant)).fits:
                return f"quantize the weights ({quant}){also}"
    if req.max_model_len and req.max_model_len > 4096 and size(replace(req, max_model_len=4096)).fits:
        return f"lower maxModelLen (4096 fits){also}"
    return span or "use a pool with larger GPUs"


def _across_nodes(req: SizingRequest, max_gpus: int) -> str | None:
    """The fewest nodes of these GPUs that hold the model, pipeline parallel across them (None: not even the most
    the planner proposes)."""
    for pp in (p for p in MULTI_NODE_STAGES if p > req.pipeline_parallel_size):
        wider = replace(req, tensor_parallel_size=max_gpus, pipeline_parallel_size=pp)
        if not validate(wider) and size(wider).fits:
            return f"span {pp} nodes: tensorParallelSize {max_gpus} with pipelineParallelSize {pp}"
    return None


MULTI_NODE_STAGES = (2, 3, 4)
"""Pipeline stages (nodes) the planner proposes for a model one node cannot hold; more nodes add a network hop per
stage to every token, which few deployments accept."""
