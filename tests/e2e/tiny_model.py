"""A tiny random Llama checkpoint for the end-to-end run: nothing is downloaded (these machines reach no model
hub). Two layers, hidden size 64, head_dim 32 (16 crashes vLLM's CPU attention at the first request), grouped-query
attention like the real Llama 3, and a byte-level BPE tokenizer trained on a few sentences, with a chat template.
Its answers are noise; what matters is that vLLM loads, schedules, streams, caches and counts it like any Llama.

`make bench` uses a larger one of the same kind (`--size bench`: 8 layers, hidden size 512, about 25 million
parameters), big enough that prefilling a long prompt on a CPU takes long enough to show in time to first token.

Runs in the vLLM virtualenv: python -m tests.e2e.tiny_model OUT_DIR [--size bench] (idempotent: an existing model
is kept)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

# vLLM reads the chat template from the tokenizer; this is the shape of a plain role-tagged template.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<|begin|>", "<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
CORPUS = [
    "Hello, how are you today? I am fine, thank you.",
    "Explain step by step how to prove that the square root of two is irrational.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Large language models generate text one token at a time from a prompt.",
    "Kubernetes schedules pods onto nodes; Karpenter launches the nodes they need.",
    "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) [ ] { } < > ? ! . , ; : ' \"",
]
MAX_POSITIONS = 8192
SHAPES = {
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "num_key_value_heads": 1, "head_dim": 32},
    "bench": {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8,
              "num_key_value_heads": 2, "head_dim": 64},
}


def write_config(out: Path, size: str = "tiny") -> Path:
    """Only the config.json of a checkpoint of this shape (no weights, no tokenizer): enough for the capacity
    planner, which sizes a model from its config. The vocabulary is the BPE trainer's 512."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({
        **SHAPES[size], "vocab_size": 512, "max_position_embeddings": MAX_POSITIONS,
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "torch_dtype": "bfloat16"}))
    return out


def build(out: Path, size: str) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin|>", eos_token="<|end|>",
                                   pad_token="<|pad|>", model_max_length=MAX_POSITIONS)
    fast.chat_template = CHAT_TEMPLATE

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), **SHAPES[size], max_position_embeddings=MAX_POSITIONS, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id, dtype="bfloat16")
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)


def main(argv: list[str]) -> int:
    path, size = Path(argv[0]), argv[2] if argv[1:2] == ["--size"] else "tiny"
    if (path / "config.json").is_file() and (path / "tokenizer.json").is_file():
        print(f"{size} model already at {path}")
        return 0
    build(path, size)
    print(f"{size} model written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
