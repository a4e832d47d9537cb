"""`llmctl size`: the capacity planner from the command line, and the cheapest instances for a model."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, replace

from catalog.gpus import GPUS
from catalog.instances import INSTANCE_TYPES, InstanceType, efa_interfaces, on_demand_price, spot_estimate
from catalog.models import ModelConfigError, load_model
from planning import capacity


def add_arguments(p: argparse.ArgumentParser) -> None:
    model = p.add_mutually_exclusive_group(required=True)
    model.add_argument("--model", help="catalog model name, e.g. llama-3.1-70b")
    model.add_argument("--model-config", help="path to a Hugging Face config.json")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", help=f"catalog GPU: {', '.join(GPUS)} (required unless --recommend or --gpu-memory-gib)")
    gpu.add_argument("--gpu-memory-gib", type=float, help="GPU memory as CUDA reports it, instead of --gpu")
    p.add_argument("--tp", type=int, default=1, help="tensor-parallel size (default 1)")
    p.add_argument("--pp", type=int, default=1,
                   help="pipeline-parallel size: nodes per replica, each with --tp GPUs (default 1)")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 (default auto)")
    p.add_argument("--quantization", default="none", help=f"{', '.join(capacity.WEIGHT_QUANTIZATIONS)} (default none)")
    p.add_argument("--kv-cache-dtype", default="auto", help="auto or fp8 (default auto)")
    p.add_argument("--gpu-memory-utilization", type=float, default=capacity.DEFAULT_GPU_MEMORY_UTILIZATION,
                   help=f"default {capacity.DEFAULT_GPU_MEMORY_UTILIZATION}, vLLM's")
    p.add_argument("--max-model-len", type=int, help="default: the model's full context")
    p.add_argument("--max-num-seqs", type=int, help="default: vLLM's for the GPU")
    p.add_argument("--max-loras", type=int, default=0,
                   help="LoRA slots vLLM reserves (--max-loras); default 0, no LoRA")
    p.add_argument("--max-lora-rank", type=int, default=16, help="with --max-loras: the slots' rank (default 16)")
    p.add_argument("--recommend", action="store_true",
                   help="list the cheapest instance types (and the TP they need) that serve the model; a model no "
                        "single node holds is offered across 2-4 nodes of an EFA-capable type, priced as all of them")
    p.add_argument("--concurrency", type=int, default=1,
                   help="with --recommend: requests of max-model-len tokens that must fit at once (default 1)")
    p.add_argument("--region", default="us-east-1", help="with --recommend: price region (default us-east-1)")
    p.add_argument("--vllm-release", default=capacity.VLLM_RELEASE,
                   help=f"major.minor of the vLLM that runs (default {capacity.VLLM_RELEASE}, the platform's): a "
                        "calibration in catalog/calibrations.yaml is used only for its own release")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


class UsageError(ValueError):
    """Bad command-line input; the message says which flag and what is allowed."""


# The flag each planner input comes from.
FLAGS = {"tensor_parallel_size": "--tp", "pipeline_parallel_size": "--pp", "gpu_memory_gib": "--gpu-memory-gib",
         "dtype": "--dtype",
         "quantization": "--quantization", "kv_cache_dtype": "--kv-cache-dtype",
         "gpu_memory_utilization": "--gpu-memory-utilization", "max_model_len": "--max-model-len",
         "max_num_seqs": "--max-num-seqs", "lora_slots": "--max-loras", "lora_rank": "--max-lora-rank"}


def _refuse(problems: list[capacity.InputProblem]) -> None:
    if problems:
        raise UsageError("; ".join(f"{FLAGS.get(p.field, p.field)} {p.value}: {p.why}" for p in problems))


def run(args: argparse.Namespace) -> str:
    try:
        model = load_model(args.model, args.model_config)
    except ModelConfigError as e:
        raise UsageError(f"--model: {e}" if args.model else f"--model-config: {e}") from None
    base = capacity.SizingRequest(
        model, 0.0, tensor_parallel_size=args.tp, pipeline_parallel_size=args.pp, dtype=args.dtype,
        quantization=args.quantization,
        kv_cache_dtype=args.kv_cache_dtype, gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs, lora_slots=args.max_loras,
        lora_rank=args.max_lora_rank if args.max_loras else 0, vllm_release=args.vllm_release)
    if args.recommend:
        if args.concurrency < 1:
            raise UsageError(f"--concurrency {args.concurrency}: must be a positive integer")
        options = recommend(base, args.concurrency, args.region)
        return json.dumps([o.as_dict() for o in options], indent=2) if args.json else _recommend_table(options, args)
    req = _on_gpu(base, args)
    _refuse(capacity.validate(req))
    sizing = capacity.size(req)
    return json.dumps(sizing.as_dict(), indent=2) if args.json else _sizing_table(sizing)


def _on_gpu(base: capacity.SizingRequest, args: argparse.Namespace) -> capacity.SizingRequest:
    if args.gpu is not None:
        if args.gpu not in GPUS:
            raise UsageError(f"--gpu {args.gpu!r}: unknown GPU; allowed: {', '.join(GPUS)}")
        g = GPUS[args.gpu]
        return replace(base, gpu_memory_gib=g.memory_gib, gpu_name=g.name)
    if args.gpu_memory_gib is not None:
        if args.gpu_memory_gib <= 0:
            raise UsageError(f"--gpu-memory-gib {args.gpu_memory_gib}: must be positive")
        return replace(base, gpu_memory_gib=args.gpu_memory_gib, gpu_name=f"{args.gpu_memory_gib:g} GiB GPU")
    raise UsageError("give --gpu NAME or --gpu-memory-gib N (or --recommend)")


@dataclass(frozen=True)
class Option:
    instance_type: str
    gpu: str
    gpus: int
    interconnect: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    """Nodes per replica (1: one node)."""
    kv_cache_tokens: int
    max_concurrency: float
    on_demand_usd_per_hour: float
    spot_estimate_usd_per_hour: float

    def as_dict(self) -> dict:
        return {**self.__dict__, "max_concurrency": round(self.max_concurrency, 2)}


def shapes(instance: InstanceType) -> list[tuple[int, int]]:
    """(TP, PP) to try on an instance type, smallest first: one node at TP 1, 2, 4, 8 up to its GPUs; then, on a
    type with EFA, its whole node per stage across 2 to 4 nodes (a group needs the same GPUs on every node)."""
    single = [(tp, 1) for tp in (1, 2, 4, 8) if tp <= instance.gpus]
    multi = [(instance.gpus, pp) for pp in capacity.MULTI_NODE_STAGES] if efa_interfaces(instance.name) else []
    return single + multi


def recommend(base: capacity.SizingRequest, concurrency: int, region: str) -> list[Option]:
    """Per priced instance type, the smallest shape (`shapes`) that holds `concurrency` requests of max_model_len
    tokens; cheapest first. One replica per instance, or per group of instances: the price is all of them."""
    # TP and PP are chosen below
    _refuse(capacity.validate(replace(base, gpu_memory_gib=1.0, tensor_parallel_size=1, pipeline_parallel_size=1)))
    options = []
    for name, instance in INSTANCE_TYPES.items():
        price = on_demand_price(name, region)
        if price is None:
            continue
        g = instance.gpu_spec
        for tp, pp in shapes(instance):
            req = replace(base, gpu_memory_gib=g.memory_gib, gpu_name=g.name, tensor_parallel_size=tp,
                          pipeline_parallel_size=pp)
            if capacity.validate(req):
                continue
            s = capacity.size(req)
            if s.fits and s.max_concurrency >= concurrency:
                options.append(Option(name, g.name, instance.gpus, s.interconnect, tp, pp, s.kv_cache_tokens,
                                      s.max_concurrency, price * pp, spot_estimate(name, region) * pp))
                break
    return sorted(options, key=lambda o: (o.on_demand_usd_per_hour, o.instance_type))


def _sizing_table(s: capacity.Sizing) -> str:
    rows = [
        ("model", s.model), ("GPU", f"{s.gpu} ({s.gpu_memory_gib:.2f} GiB)"),
        ("tensor parallel", f"{s.tensor_parallel_size} over {s.interconnect}"),
        *([("pipeline parallel", f"{s.pipeline_parallel_size} stages (nodes), layers {list(s.stage_layers)}; "
                                 f"figures below are stage {s.stage + 1}'s, the tightest")]
          if s.pipeline_parallel_size > 1 else []),
        ("budget per GPU", f"{s.gpu_memory_gib * s.gpu_memory_utilization:.2f} GiB at utilization "
                           f"{s.gpu_memory_utilization}"),
        ("weights per GPU", f"{s.weights_gib_per_gpu:.2f} GiB"),
        *([("LoRA slots per GPU", f"{s.lora_gib_per_gpu:.2f} GiB")] if s.lora_gib_per_gpu else []),
        ("overhead per GPU", f"{s.overhead_gib_per_gpu:.2f} GiB (outside PyTorch {s.non_torch_gib_per_gpu:.2f}, "
                             f"activations {s.activation_gib_per_gpu:.2f}, CUDA graphs {s.cuda_graph_gib_per_gpu:.2f})"),
        ("KV cache per GPU", f"{s.kv_cache_gib_per_gpu:.2f} GiB"),
        ("KV bytes per token", f"{s.kv_bytes_per_token:,} ({s.kv_bytes_per_token_per_gpu:,} per GPU)"),
        ("KV capacity", f"{s.kv_cache_tokens:,} tokens"),
        ("max concurrency", f"{s.max_concurrency:.2f} requests of {s.max_model_len:,} tokens"),
        ("scheduler", f"max_num_seqs {s.max_num_seqs}, max_num_batched_tokens {s.max_num_batched_tokens}"),
        ("overheads from", s.overheads_from),
        ("fits", "yes" if s.fits else "NO"), ("reason", s.reason),
    ]
    return "\n".join(f"{k:<20} {v}" for k, v in rows)


def _recommend_table(options: list[Option], args: argparse.Namespace) -> str:
    target = f"{args.concurrency} concurrent request(s) of max-model-len tokens"
    if not options:
        return f"no catalog instance type serves {args.model or args.model_config} with {target}"
    head = f"{'instance type':<16} {'GPU':<10} {'link':<6} {'TP':>2} {'nodes':>5} {'KV tokens':>11} " \
           f"{'concurrency':>11} {'on-demand $/h':>13} {'spot est. $/h':>13}"
    lines = [f"cheapest instance types for {target} ({args.region}; spot is an estimate; a replica of several "
             "nodes is priced as all of them):", head]
    lines += [f"{o.instance_type:<16} {o.gpu:<10} {o.interconnect:<6} {o.tensor_parallel_size:>2} "
              f"{o.pipeline_parallel_size:>5} {o.kv_cache_tokens:>11,} "
              f"{o.max_concurrency:>11.1f} {o.on_demand_usd_per_hour:>13.2f} {o.spot_estimate_usd_per_hour:>13.2f}"
              for o in options]
    return "\n".join(lines)
