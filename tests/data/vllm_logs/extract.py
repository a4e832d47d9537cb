"""Refresh the vLLM start-up log excerpts in this folder from the llm-d planner's published logs (run by hand).

    python tests/data/vllm_logs/extract.py GIT_DIR COMMIT

GIT_DIR is a clone of https://github.com/llm-d-incubation/llm-d-planner (Apache-2.0). Each excerpt keeps only the
lines `llmctl calibrate` reads (planning/calibration.py), in their order, verbatim, under a header naming the file
and commit they come from. Which logs, and which of them produce calibration records: LOGS below.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from planning.calibration import ENGINE_LINE, NON_DEFAULT_ARGS, PATTERNS  # noqa: E402

REPOSITORY = "https://github.com/llm-d-incubation/llm-d-planner"
FOLDER = "accuracy/results/v0.19.0/logs"
# excerpt name: (log file, role). `calibrate`: its record goes into catalog/calibrations.yaml; `held_out`: used only
# to measure the calibrated planner (`make accuracy`). The three Llama-3.1-8B runs at 8,192 tokens calibrate TP 1, 2
# and 4 on H100; every other catalog model the folder has a complete log of is held out. Left out: Qwen2.5-7B at 2,048
# and 32,768 tokens (the same engine and memory as at 8,192: nothing new), and the RedHatAI FP8-dynamic Llama-3.3-70B
# (a compressed-tensors checkpoint the catalog does not describe).
LOGS = {
    "llama31-8b-h100-tp1": ("meta-llama-llama-3-1-8b---h100-80gb--tp1pp1dp1--8192.log", "calibrate"),
    "llama31-8b-h100-tp2": ("meta-llama-llama-3-1-8b---h100-80gb--tp2pp1dp1--8192.log", "calibrate"),
    "llama31-8b-h100-tp4": ("meta-llama-llama-3-1-8b---h100-80gb--tp4pp1dp1--8192.log", "calibrate"),
    "qwen25-7b-h100-tp1": ("qwen-qwen2-5-7b-instruct--h100-80gb--tp1pp1dp1--8192.log", "held_out"),
    "qwen25-7b-h100-tp2": ("qwen-qwen2-5-7b-instruct--h100-80gb--tp2pp1dp1--8192.log", "held_out"),
    "qwen25-7b-h100-tp4": ("qwen-qwen2-5-7b-instruct--h100-80gb--tp4pp1dp1--8192.log", "held_out"),
    "qwen25-72b-h100-tp2": ("qwen-qwen2-5-72b-instruc--h100-80gb--tp2pp1dp1--8192.log", "held_out"),
    "qwen3-8b-h100-tp1": ("qwen-qwen3-8b--h100-80gb--tp1pp1dp1--8192.log", "held_out"),
    "qwen3-30b-a3b-h100-tp1": ("qwen-qwen3-30b-a3b--h100-80gb--tp1pp1dp1--8192.log", "held_out"),
    "mixtral-8x7b-h100-tp2": ("mistralai-mixtral-8x7b-i--h100-80gb--tp2pp1dp1--8192.log", "held_out"),
    "gemma2-9b-h100-tp1": ("google-gemma-2-9b-it--h100-80gb--tp1pp1dp1--8192.log", "held_out"),
    "gemma2-27b-h100-tp1": ("google-gemma-2-27b-it--h100-80gb--tp1pp1dp1--8192.log", "held_out"),
}
GPU = "H100-80GB"
KEEP = [ENGINE_LINE, NON_DEFAULT_ARGS, *PATTERNS.values(), re.compile(r"version [0-9]+\.[0-9]+\.[0-9]+\s*$")]


def excerpt(text: str) -> list[str]:
    """The lines the parser reads, each once (TP workers repeat theirs), in order; progress bars stripped."""
    kept, seen = [], set()
    for line in text.splitlines():
        line = line.split("\r")[-1]
        if any(p.search(line) for p in KEEP):
            key = re.sub(r"^\([^)]*\) ", "", re.sub(r"pid=[0-9]+", "", line))
            key = re.sub(r"[0-9]{2}-[0-9]{2} [0-9:]{8} ", "", key)
            if key not in seen:
                seen.add(key)
                kept.append(line)
    return kept


def main(git_dir: str, commit: str) -> None:
    for name, (log, role) in LOGS.items():
        text = subprocess.run(["git", "--git-dir", git_dir, "show", f"{commit}:{FOLDER}/{log}"], check=True,
                              capture_output=True, text=True).stdout
        header = [f"# source: {REPOSITORY}/blob/{commit}/{FOLDER}/{log}", f"# gpu: {GPU}", f"# role: {role}",
                  "# Lines kept verbatim by tests/data/vllm_logs/extract.py (those llmctl calibrate reads)."]
        (HERE / f"{name}.log").write_text("\n".join(header + excerpt(text)) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
