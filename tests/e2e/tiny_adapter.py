"""A LoRA adapter for the end-to-end run's tiny model, in the files PEFT writes (adapter_config.json and
adapter_model.safetensors with PEFT's tensor names), with random weights on every attention and MLP projection.

PEFT itself starts B at zero (an untrained adapter changes nothing); here both A and B are random, so the adapter
visibly changes the model's answers, which is what the run checks. Nothing is downloaded; `peft` is not needed to
write its format (vLLM reads it with its own loader, vllm/lora/peft_helper.py and lora_model.py).

Runs in the vLLM virtualenv: python -m tests.e2e.tiny_adapter MODEL_DIR OUT_DIR (idempotent)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

RANK = 8
ALPHA = 16
PROJECTIONS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def shapes(config: dict) -> dict[str, tuple[int, int]]:
    """(input, output) features of each projection in one decoder layer, from the model's config.json."""
    hidden, inter = config["hidden_size"], config["intermediate_size"]
    head_dim = config.get("head_dim") or hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head_dim, config["num_key_value_heads"] * head_dim
    return {"q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
            "gate_proj": (hidden, inter), "up_proj": (hidden, inter), "down_proj": (inter, hidden)}


def build(model_dir: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    config = json.loads((model_dir / "config.json").read_text())
    features = shapes(config)
    generator = torch.Generator().manual_seed(1)
    tensors = {}
    for layer in range(config["num_hidden_layers"]):
        for block, names in PROJECTIONS.items():
            for name in names:
                fan_in, fan_out = features[name]
                prefix = f"base_model.model.model.layers.{layer}.{block}.{name}"
                tensors[f"{prefix}.lora_A.weight"] = (torch.randn(RANK, fan_in, generator=generator) / fan_in**0.5
                                                      ).to(torch.bfloat16)
                tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, RANK, generator=generator).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, out / "adapter_model.safetensors")
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(model_dir), "r": RANK,
        "lora_alpha": ALPHA, "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
        "target_modules": [n for names in PROJECTIONS.values() for n in names], "use_rslora": False,
        "use_dora": False, "modules_to_save": None}, indent=2))


def main(argv: list[str]) -> int:
    model_dir, out = Path(argv[0]), Path(argv[1])
    if (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file():
        print(f"adapter already at {out}")
        return 0
    build(model_dir, out)
    print(f"rank-{RANK} adapter for {model_dir} written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
