"""The cost report's decode throughput (planning/cost.py: memory-bound decode at 60% of HBM bandwidth) against
NVIDIA AIConfigurator's vLLM estimates, for the prod models on the GPUs their pools launch (`make
throughput-compare`; report in build/throughput/report.md).

AIConfigurator (PyPI `aiconfigurator`, pinned in requirements-aic.txt, its own virtualenv) predicts a static decode
batch from kernel timings NVIDIA measured per GPU, framework and release; it runs offline. Each case asks it for
`--estimate-mode static_gen` with the batch the cost report assumes (ASSUMED_CONCURRENCY sequences, fewer if the
replica's KV cache or max_num_seqs holds fewer) and ASSUMED_CONTEXT_TOKENS of context on average (1,000 prompt
tokens, 2,000 generated). Usage: python -m tests.throughput_comparison AICONFIGURATOR_BINARY [OUT_DIR]
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import config
from catalog.gpus import GPUS, MEMORY_BANDWIDTH_GB_S
from config.checks import sizing_request
from planning import cost
from tests.conftest import ROOT

PROMPT_TOKENS, GENERATED_TOKENS = 1000, 2000
"""Average context (1,000 + 2,000 / 2) = ASSUMED_CONTEXT_TOKENS."""
HF_IDS = {"llama-3.1-8b": "meta-llama/Meta-Llama-3.1-8B", "llama-3.1-70b": "meta-llama/Meta-Llama-3.1-70B",
          "llama-3.1-405b": "meta-llama/Meta-Llama-3.1-405B", "llama-3.1-405b-fp8": "meta-llama/Meta-Llama-3.1-405B"}
"""AIConfigurator's bundled model configs (aiconfigurator_core/model_configs): the same architectures."""
SYSTEMS = {"L40S": "l40s", "A100-80GB": "a100_sxm", "H100-80GB": "h100_sxm", "H200": "h200_sxm"}
"""Catalog GPU -> AIConfigurator system with vLLM data in 0.12.0. Not covered: L4, A10G (no vLLM data)."""


@dataclass(frozen=True)
class Case:
    model_key: str
    gpu: str
    note: str = ""


CASES = [
    Case("llama-8b", "L4", "prod's small pool at max (g6.xlarge)"),
    Case("llama-8b", "L40S", "prod's small pool also launches g6e"),
    Case("llama-70b", "A100-80GB", "prod's large pool (p4de.24xlarge)"),
    Case("llama-70b", "H100-80GB", "prod's large pool also launches p5.48xlarge"),
    Case("llama-405b-fp8", "H100-80GB", "prod's quality pool; AIConfigurator quantizes every GEMM to FP8, Meta's "
                                        "checkpoint keeps attention in bf16"),
    Case("llama-405b-bf16", "H100-80GB", "prod's multinode pool: two nodes, pipeline parallel 2"),
    Case("llama-70b-tgi", "H100-80GB", "TGI"),
]


@dataclass(frozen=True)
class Row:
    case: Case
    shape: str
    batch: int
    ours: float
    theirs: float | None
    tpot_ms: float | None
    seconds: float
    why_not: str = ""
    release: str = ""
    printed: float | None = None


def ours(key: str, gpu: str) -> tuple[cost.Throughput, config.ModelDeployment]:
    m = config.load_stack_file(ROOT, "prod").models[key]
    spec = GPUS[gpu]
    request = replace(sizing_request(m), gpu_memory_gib=spec.memory_gib, gpu_name=spec.name)
    return cost.decode_throughput(request, MEMORY_BANDWIDTH_GB_S[spec.name]), m


def estimate(binary: str, m: config.ModelDeployment, gpu: str, batch: int) -> tuple[float, float, str, float]:
    """(tokens per second of `batch` sequences, TPOT ms, data release, the tokens/s line it prints). The first is
    tokens/s/user x concurrency: with pipeline parallelism AIConfigurator 0.12.0's tokens/s line is that times the
    stages (1,446 against 22.6 x 32 = 723 for 405B at PP 2), which no 32 sequences at its own TPOT can reach."""
    argv = [binary, "cli", "estimate", "--model-path", HF_IDS[m.model], "--system", SYSTEMS[gpu], "--backend", "vllm",
            "--estimate-mode", "static_gen", "--batch-size", str(batch), "--isl", str(PROMPT_TOKENS),
            "--osl", str(GENERATED_TOKENS), "--tp-size", str(m.tensor_parallel_size),
            "--pp-size", str(m.pipeline_parallel_size), "--no-color"]
    if m.model.endswith("-fp8"):
        argv += ["--gemm-quant-mode", "fp8"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    def number(label: str) -> float | None:
        found = re.search(rf"^\s*{re.escape(label)}:\s+([0-9,.]+)", done.stdout, re.MULTILINE)
        return float(found.group(1).replace(",", "")) if found else None
    per_user, users, printed, tpot = (number(k) for k in ("tokens/s/user", "Concurrency", "tokens/s", "TPOT"))
    backend = re.search(r"Backend:\s+vllm \(([0-9.]+)\)", done.stdout)
    if done.returncode or None in (per_user, users, printed, tpot):
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return per_user * users, tpot, backend.group(1) if backend else "?", printed


def compare(binary: str) -> list[Row]:
    rows = []
    for case in CASES:
        throughput, m = ours(case.model_key, case.gpu)
        shape = f"TP {m.tensor_parallel_size}" + (f" x PP {m.pipeline_parallel_size}" if m.multi_node else "")
        why_not = ("AIConfigurator has no TGI backend" if m.engine != "vllm"
                   else f"AIConfigurator 0.12.0 has no vLLM data for {case.gpu}" if case.gpu not in SYSTEMS else "")
        if why_not:
            rows.append(Row(case, shape, throughput.concurrency, throughput.tokens_per_second, None, None, 0, why_not))
            continue
        started = time.monotonic()
        theirs, tpot, release, printed = estimate(binary, m, case.gpu, throughput.concurrency)
        rows.append(Row(case, shape, throughput.concurrency, throughput.tokens_per_second, theirs, tpot,
                        time.monotonic() - started, "", release, printed))
    return rows


def report(rows: list[Row]) -> str:
    lines = ["# Decode throughput: the cost report's roofline against AIConfigurator 0.12.0", "",
             f"Each replica decodes the batch below with {cost.ASSUMED_CONTEXT_TOKENS:,} tokens of context on average "
             f"(AIConfigurator: static_gen, {PROMPT_TOKENS:,} prompt + {GENERATED_TOKENS:,} generated tokens).", "",
             "| model | GPU | shape | batch | roofline tok/s | AIConfigurator tok/s (its vLLM data) | "
             "roofline / AIConfigurator | AIConfigurator TPOT ms | seconds | note |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        ratio = f"{r.ours / r.theirs:.2f}" if r.theirs else "-"
        theirs = f"{r.theirs:,.0f} ({r.release})" if r.theirs else r.why_not
        if r.printed and r.theirs and abs(r.printed / r.theirs - 1) > 0.01:
            theirs += f"; its tokens/s line says {r.printed:,.0f}"
        tpot = f"{r.tpot_ms:.1f}" if r.tpot_ms else "-"
        lines.append(f"| {r.case.model_key} | {r.case.gpu} | {r.shape} | {r.batch} | {r.ours:,.0f} | {theirs} | "
                     f"{ratio} | {tpot} | {r.seconds:.1f} | {r.case.note} |")
    compared = [r for r in rows if r.theirs]
    ratios = [r.ours / r.theirs for r in compared]
    lines += ["", f"{len(compared)} of {len(rows)} cases covered; roofline / AIConfigurator from {min(ratios):.2f} to "
                  f"{max(ratios):.2f}; AIConfigurator took {sum(r.seconds for r in compared):.0f} s for them."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    binary, out = argv[0], Path(argv[1] if len(argv) > 1 else ROOT / "build" / "throughput")
    text = report(compare(binary))
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
