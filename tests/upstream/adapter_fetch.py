"""Check the init container that fetches a Hugging Face LoRA adapter against the `hf` command line of the
huggingface_hub the installed vLLM depends on (the vLLM image runs the same command).

Runs in the project's virtualenv with the vLLM virtualenv's `hf` as argument (`make test-upstream`). Renders a hub
adapter pinned to a revision with the program's own function, runs its command with that `hf` offline, and requires huggingface_hub to have parsed every argument and gone for that
repository at that revision (it stops at "offline mode"): a renamed flag or a missing argument fails as a usage
error instead. Registry adapters use the AWS CLI's `s3 sync`, the same command as TGI's registry copy.
Usage: python -m tests.upstream.adapter_fetch PATH_TO_HF; exit 1 with the command and what it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import config
from components.serving.vllm_service import adapter_fetch

REPO, REVISION = "example-org/support-adapter", "a1b2c3d"


def main(hf: str) -> int:
    adapter = config.schema.LoraAdapter.model_validate(
        {"checkpoint": REPO, "source": "huggingface", "revision": REVISION, "rank": 8})
    container = adapter_fetch("support", adapter, "unused-bucket", "us-east-1", has_token=False)
    command = container["command"]
    if command[0] != Path(hf).name or not Path(hf).is_file():
        print(f"adapter_fetch: the container runs {command[0]!r}; {hf} is not that program")
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": f"{scratch}/home", "NO_COLOR": "1"}
        args = [a.replace("/cache", scratch) for a in command[1:]]
        proc = subprocess.run([hf, *args], env=env, capture_output=True, text=True, timeout=120)
    said = proc.stdout + proc.stderr
    reached = "offline mode is enabled" in said and f"{REPO}/revision/{REVISION}" in said
    print(f"adapter_fetch: `{' '.join(command)}` exit {proc.returncode}: "
          f"{'parsed, asked for the pinned revision' if reached else 'FAILED'}")
    if not reached:
        print(said[-2000:])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
