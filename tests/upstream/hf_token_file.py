"""Check that a rendered vLLM server can read its Hugging Face token from the mounted file, with the huggingface_hub
the installed vLLM depends on (the library vLLM downloads checkpoints through).

Runs in the vLLM virtualenv (`make test-upstream`). For every rendered vLLM container that sets HF_TOKEN_PATH, it
writes a stand-in token at a temporary path, points HF_TOKEN_PATH there as the container does, removes HF_TOKEN, and
asks huggingface_hub for the token in a fresh interpreter; a container that also sets HF_TOKEN fails the check.
Usage: python -m tests.upstream.hf_token_file PLAN_DIR [PLAN_DIR ...]; exit 1 names every failing container.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

STAND_IN = "hf_stand_in_token_for_the_check"


def token_read_with(token_path: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env["HF_TOKEN_PATH"] = token_path
    with tempfile.TemporaryDirectory() as home:
        env["HF_HOME"] = home  # no token cached from elsewhere
        proc = subprocess.run([sys.executable, "-c", "import huggingface_hub; print(huggingface_hub.get_token())"],
                              env=env, capture_output=True, text=True, timeout=120)
    return proc.stdout.strip() if proc.returncode == 0 else f"error: {proc.stderr[-500:]}"


def main(plan_dirs: list[str]) -> int:
    failures, checked = [], 0
    for plan in plan_dirs:
        for path in sorted(Path(plan, "manifests").glob("deployment-*.yaml")):
            deployment = yaml.safe_load(path.read_text())
            for container in deployment["spec"]["template"]["spec"]["containers"]:
                env = {e["name"]: e for e in container.get("env", [])}
                if "HF_TOKEN_PATH" not in env:
                    continue
                checked += 1
                if "HF_TOKEN" in env:
                    failures.append(f"{path}: {container['name']} sets HF_TOKEN beside the token file")
                with tempfile.TemporaryDirectory() as mount:
                    token_file = Path(mount) / Path(env["HF_TOKEN_PATH"]["value"]).name
                    token_file.write_text(STAND_IN + "\n")
                    read = token_read_with(str(token_file))
                if read != STAND_IN:
                    failures.append(f"{path}: {container['name']}: huggingface_hub read {read!r} from HF_TOKEN_PATH")
    if not checked:
        failures.append("no rendered container sets HF_TOKEN_PATH: nothing was checked")
    print(f"hf_token_file: {checked} containers checked, {len(failures)} failures")
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
