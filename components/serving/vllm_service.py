"""VllmService: a model on vLLM's OpenAI-compatible server. The argument list is a pure function of the config,
and `make test-upstream` parses every rendered list with the real vLLM argument parser."""

from __future__ import annotations

from catalog.engines import VLLM_QUANTIZATION
from catalog.versions import AWS_CLI, VLLM
from components.serving.leader_worker_set import group_args
from components.serving.model_server import (
    CACHE_PATH,
    REGISTRY_PREFIX,
    TOKEN_FILE,
    ModelServer,
    ModelServerArgs,
    hub_token_secret,
    token_file_mount,
)
from config import ModelDeployment
from config.schema import LoraAdapter

CONTAINER = "vllm"
"""The server's container, whose log holds vLLM's start-up lines (`llmctl verify --kubectl-logs` reads it)."""
ADAPTERS_PATH = f"{CACHE_PATH}/adapters"
"""Each adapter's files, fetched before the server starts: <ADAPTERS_PATH>/<adapter name>/."""


def model_location(m: ModelDeployment, bucket: str) -> str:
    """A Hub repository, or the registry's copy of it, which vLLM streams from S3 with the Run:ai streamer (the
    vllm-openai image installs runai-model-streamer[s3] in its vllm-openai-base stage, docker/Dockerfile, since at
    least v0.11; not checked in the v0.32.0 image from here)."""
    if m.source == "registry":
        return f"s3://{bucket}/{REGISTRY_PREFIX}/{m.repository}/"
    return m.repository


def vllm_args(key: str, m: ModelDeployment, bucket: str, port: int) -> list[str]:
    """`vllm serve` arguments. Unset options are left to vLLM's own defaults (which the capacity planner models)."""
    args = [model_location(m, bucket), "--served-model-name", key, "--host", "0.0.0.0", "--port", str(port),
            "--tensor-parallel-size", str(m.tensor_parallel_size),
            "--gpu-memory-utilization", f"{m.gpu_memory_utilization:g}",
            "--enable-prefix-caching" if m.enable_prefix_caching else "--no-enable-prefix-caching",
            # SIGTERM drains: running requests get this long to finish (vLLM's default, 0, aborts them).
            "--shutdown-timeout", str(m.drain_seconds)]
    optional = {
        "--max-model-len": m.max_model_len,
        "--max-num-seqs": m.max_num_seqs,
        "--dtype": None if m.dtype == "auto" else m.dtype,
        "--kv-cache-dtype": None if m.kv_cache_dtype == "auto" else m.kv_cache_dtype,
        "--quantization": VLLM_QUANTIZATION[m.quantization],
        "--load-format": "runai_streamer" if m.source == "registry" else None,
        "--revision": m.revision,
    }
    for flag, value in optional.items():
        if value is not None:
            args += [flag, str(value)]
    if needs_scale_out_endpoints(m):
        args.append("--enable-scale-out")
    if m.multi_node:
        args += group_args(m.pipeline_parallel_size)
    return args + lora_args(m) + list(m.extra_args)


def adapter_path(name: str) -> str:
    return f"{ADAPTERS_PATH}/{name}"


def lora_args(m: ModelDeployment) -> list[str]:
    """Adapters are loaded at start (--lora-modules), from local copies the init containers fetched: every replica a
    Deployment starts, in a rollout or a scale-up, gets the adapters its pod template names, and a server that
    cannot load one never becomes ready. vLLM's run-time load/unload endpoints would leave each replica's set to
    whoever called it last, and they are off unless VLLM_ALLOW_RUNTIME_LORA_UPDATING is set (it is not)."""
    if not m.adapters:
        return []
    return ["--enable-lora", "--max-loras", str(m.lora_slots), "--max-lora-rank", str(m.lora_rank),
            "--max-cpu-loras", str(m.cpu_lora_slots),
            "--lora-modules", *(f"{name}={adapter_path(name)}" for name in m.adapters)]


def adapter_fetch(name: str, adapter: LoraAdapter, bucket: str, region: str, has_token: bool) -> dict:
    """Init container that copies one adapter into the cache volume: from the registry with the pod's own identity
    (Pod Identity, as the weights), or from the Hub at the pinned revision with the token file, by the `hf` command of
    the server's own image (already on the node; `make test-upstream` runs the command with vLLM's huggingface_hub).
    vLLM would fetch a Hub id itself, but always at main (vllm/lora/utils.py get_adapter_absolute_path passes no
    revision)."""
    if adapter.source == "registry":
        return {
            "name": f"adapter-{name}",
            "image": AWS_CLI.reference,
            "command": ["aws", "s3", "sync", "--only-show-errors", "--no-progress",
                        f"s3://{bucket}/{REGISTRY_PREFIX}/{adapter.checkpoint}/", adapter_path(name)],
            "env": [{"name": "AWS_REGION", "value": region}],
            "resources": FETCH_RESOURCES,
            "volumeMounts": [{"name": "cache", "mountPath": CACHE_PATH}],
        }
    command = ["hf", "download", adapter.checkpoint, "--local-dir", adapter_path(name)]
    if adapter.revision:
        command += ["--revision", adapter.revision]
    return {
        "name": f"adapter-{name}",
        "image": VLLM.reference,
        "command": command,
        "env": [{"name": "HF_HOME", "value": CACHE_PATH},
                *([{"name": "HF_TOKEN_PATH", "value": TOKEN_FILE}] if has_token else [])],
        "resources": FETCH_RESOURCES,
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_PATH}, *([token_file_mount()] if has_token else [])],
    }


FETCH_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
"""An adapter is tens to hundreds of MiB; the copy streams it to disk."""


def needs_scale_out_endpoints(m: ModelDeployment) -> bool:
    """The replica router's cache_aware policy asks each server to tokenize every prompt (POST
    /v1/chat/completions/render, one of vLLM's scale-out endpoints). vLLM 0.32 answers it 403 unless started with
    --enable-scale-out, and the router then routes by load alone without saying so. The flag also opens
    /inference/v1/generate and /inference/v1/abort_requests, which only the router and Prometheus can reach
    (components/edge/network_policy.py), so it is set only where the policy needs it."""
    return m.routed and m.routing.policy == "cache_aware"


class VllmService(ModelServer):
    PORT = 8000

    @staticmethod
    def streams_from_s3(m: ModelDeployment) -> bool:
        return m.source == "registry"

    @classmethod
    def pod_parts(cls, args: ModelServerArgs, bucket: str) -> tuple[dict, list[dict]]:
        env = [
            {"name": "HF_HOME", "value": CACHE_PATH},
            # The Run:ai streamer's S3 client and boto3 need the region; credentials come from Pod Identity.
            {"name": "AWS_REGION", "value": args.region},
            {"name": "AWS_DEFAULT_REGION", "value": args.region},
        ]
        container = {
            "name": CONTAINER,
            "image": VLLM.reference,
            "command": ["vllm", "serve"],
            "args": vllm_args(args.key, args.deployment, bucket, cls.PORT),
            "env": env,
            "ports": [{"name": "http", "containerPort": cls.PORT, "protocol": "TCP"}],
        }
        if hub_token_secret(args):
            # vLLM downloads through huggingface_hub, which reads the token from the file HF_TOKEN_PATH names when
            # HF_TOKEN is unset (make test-upstream checks this with the huggingface_hub vLLM installs).
            env.append({"name": "HF_TOKEN_PATH", "value": TOKEN_FILE})
            container["volumeMounts"] = [token_file_mount()]
        has_token = args.token_secret is not None
        init = [adapter_fetch(name, adapter, bucket, args.region, has_token)
                for name, adapter in args.deployment.adapters.items()]
        return container, init
