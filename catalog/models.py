"""Architecture facts of common open models, as their Hugging Face `config.json` states them.

Each entry names the checkpoint it was read from (https://huggingface.co/<hf_id>/blob/main/config.json);
transcribed 2026-11-24. Where a public vLLM log reports the weight size, tests/data/vllm_measurements.yaml holds it
and tests/test_planner.py checks the parameter count against it, which is how a transcription error would show.
`from_hf_config` reads any other model's `config.json` into the same shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ModelArch:
    name: str
    hf_id: str
    hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    head_dim: int = 0
    """0 means hidden_size / num_attention_heads (most models); Gemma 2 and Qwen 3 set it explicitly."""
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    qk_norm: bool = False
    num_experts: int = 0
    """0 for a dense model."""
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    """Per-expert MLP width; Mixtral's equals intermediate_size."""
    checkpoint_quantization: str = "none"
    """A checkpoint published already quantized (e.g. Meta's FP8 405B): the planner uses it unless told otherwise."""
    quantized_modules: str = "all"
    """`all` linear layers, or only the `mlp` ones (Meta's FP8 405B keeps attention in bf16)."""
    unquantized_layers: tuple[int, ...] = field(default_factory=tuple)
    """Decoder layers the checkpoint left in bf16 (Meta's FP8 405B: the first and the last)."""

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


MODELS: dict[str, ModelArch] = {
    m.name: m
    for m in [
        ModelArch("llama-3-8b", "meta-llama/Meta-Llama-3-8B-Instruct", 4096, 32, 32, 8, 14336, 128256, 8192),
        ModelArch("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 4096, 32, 32, 8, 14336, 128256, 131072),
        ModelArch("llama-3.1-70b", "meta-llama/Llama-3.1-70B-Instruct", 8192, 80, 64, 8, 28672, 128256, 131072),
        ModelArch("llama-3.3-70b", "meta-llama/Llama-3.3-70B-Instruct", 8192, 80, 64, 8, 28672, 128256, 131072),
        ModelArch("llama-3.1-405b", "meta-llama/Llama-3.1-405B-Instruct", 16384, 126, 128, 8, 53248, 128256, 131072),
        ModelArch("llama-3.1-405b-fp8", "meta-llama/Llama-3.1-405B-Instruct-FP8", 16384, 126, 128, 8, 53248, 128256,
                  131072, checkpoint_quantization="fp8", quantized_modules="mlp", unquantized_layers=(0, 125)),
        ModelArch("mistral-7b", "mistralai/Mistral-7B-Instruct-v0.3", 4096, 32, 32, 8, 14336, 32768, 32768),
        ModelArch("mixtral-8x7b", "mistralai/Mixtral-8x7B-Instruct-v0.1", 4096, 32, 32, 8, 14336, 32000, 32768,
                  num_experts=8, experts_per_token=2, moe_intermediate_size=14336),
        ModelArch("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 3584, 28, 28, 4, 18944, 152064, 32768, qkv_bias=True),
        ModelArch("qwen2.5-14b", "Qwen/Qwen2.5-14B-Instruct", 5120, 48, 40, 8, 13824, 152064, 32768, qkv_bias=True),
        ModelArch("qwen2.5-32b", "Qwen/Qwen2.5-32B-Instruct", 5120, 64, 40, 8, 27648, 152064, 32768, qkv_bias=True),
        ModelArch("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct", 8192, 80, 64, 8, 29568, 152064, 32768, qkv_bias=True),
        ModelArch("deepseek-r1-distill-qwen-14b", "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 5120, 48, 40, 8, 13824,
                  152064, 131072, qkv_bias=True),
        ModelArch("qwen3-8b", "Qwen/Qwen3-8B", 4096, 36, 32, 8, 12288, 151936, 40960, head_dim=128, qk_norm=True),
        ModelArch("qwen3-14b", "Qwen/Qwen3-14B", 5120, 40, 40, 8, 17408, 151936, 40960, head_dim=128, qk_norm=True),
        ModelArch("qwen3-32b", "Qwen/Qwen3-32B", 5120, 64, 64, 8, 25600, 151936, 40960, head_dim=128, qk_norm=True),
        ModelArch("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", 2048, 48, 32, 4, 6144, 151936, 40960, head_dim=128,
                  qk_norm=True, num_experts=128, experts_per_token=8, moe_intermediate_size=768),
        ModelArch("qwen3-235b-a22b-fp8", "Qwen/Qwen3-235B-A22B-FP8", 4096, 94, 64, 4, 12288, 151936, 40960,
                  head_dim=128, qk_norm=True, num_experts=128, experts_per_token=8, moe_intermediate_size=1536,
                  checkpoint_quantization="fp8"),
        # Gemma 2 alternates sliding-window (4096) and global layers. vLLM 0.19 still reports capacity as if every
        # layer were global (gemma2-* records in tests/data/vllm_measurements.yaml), and so does the planner.
        ModelArch("gemma-2-9b", "google/gemma-2-9b-it", 3584, 42, 16, 8, 14336, 256000, 8192, head_dim=256,
                  tie_word_embeddings=True),
        ModelArch("gemma-2-27b", "google/gemma-2-27b-it", 4608, 46, 32, 16, 36864, 256000, 8192, head_dim=128,
                  tie_word_embeddings=True),
    ]
}


class ModelConfigError(ValueError):
    """A `config.json` the planner cannot read; the message names the missing or bad key."""


MAX_CONFIG_BYTES = 1 << 20
"""A config.json is a few KiB; reading stops past 1 MiB (a path such as /dev/zero would never end)."""
_LARGEST_COUNT = 2**31 - 1


def from_hf_config(config: dict, name: str = "custom") -> ModelArch:
    """Read a Hugging Face `config.json` (already parsed). Multimodal configs nest the language model under
    `text_config`; that part is what the KV cache and most of the weights belong to."""
    cfg = config.get("text_config", config) if isinstance(config, dict) else None
    if not isinstance(cfg, dict):
        raise ModelConfigError("config.json must be a JSON object (and text_config, if present, one too)")
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                           "vocab_size") if k not in cfg]
    if missing:
        raise ModelConfigError(f"config.json lacks {', '.join(missing)}; is it a decoder-only language model?")

    def count(key: str, default: object = None, least: int = 1) -> int:
        value = cfg.get(key)
        value = default if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= _LARGEST_COUNT:
            raise ModelConfigError(f"config.json {key}: got {str(value)[:40]!r}; must be a whole number from "
                                   f"{least} to {_LARGEST_COUNT}")
        return value

    num_experts = count("num_local_experts", cfg.get("num_experts") or 0, least=0)
    quantization = cfg.get("quantization_config") or config.get("quantization_config") or {}
    quant = quantization.get("quant_method", "none") if isinstance(quantization, dict) else "none"
    return ModelArch(
        name=name,
        hf_id=str(cfg.get("_name_or_path", name))[:200],
        hidden_size=count("hidden_size"),
        num_layers=count("num_hidden_layers"),
        num_attention_heads=count("num_attention_heads"),
        num_kv_heads=count("num_key_value_heads", cfg["num_attention_heads"]),
        intermediate_size=count("intermediate_size"),
        vocab_size=count("vocab_size"),
        max_position_embeddings=count("max_position_embeddings", 4096),
        head_dim=count("head_dim", 0, least=0),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        qkv_bias=bool(cfg.get("attention_bias", False)) or cfg.get("model_type") == "qwen2",
        qk_norm=cfg.get("model_type") in ("qwen3", "qwen3_moe"),
        num_experts=num_experts,
        experts_per_token=count("num_experts_per_tok", 0, least=0) if num_experts else 0,
        moe_intermediate_size=count("moe_intermediate_size", cfg["intermediate_size"]) if num_experts else 0,
        checkpoint_quantization={"fp8": "fp8", "awq": "awq", "gptq": "gptq"}.get(quant, "none"),
    )


def load_model(name: str | None = None, config_path: str | Path | None = None) -> ModelArch:
    """A catalog model by name, or a model read from a `config.json` file. Raises ModelConfigError, naming what is
    allowed."""
    if config_path is not None:
        path = Path(config_path)
        try:
            with path.open("rb") as file:
                data = file.read(MAX_CONFIG_BYTES + 1)
            if len(data) > MAX_CONFIG_BYTES:
                raise ModelConfigError(f"model config {path} is larger than {MAX_CONFIG_BYTES} bytes; is it a "
                                       "config.json?")
            return from_hf_config(json.loads(data), name=path.parent.name or "custom")
        except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if isinstance(e, ModelConfigError):
                raise
            raise ModelConfigError(f"cannot read model config {path}: {str(e)[:200]}") from None
    if name not in MODELS:
        raise ModelConfigError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[name]
