"""TgiService: a model on Hugging Face Text Generation Inference, configured through the launcher's environment
variables. TGI is in maintenance mode upstream; vLLM is the default engine."""

from __future__ import annotations

from catalog.engines import TGI_KV_CACHE_DTYPE, TGI_QUANTIZE
from catalog.versions import AWS_CLI, TGI
from components.serving.model_server import (
    CACHE_PATH,
    REGISTRY_PREFIX,
    ModelServer,
    ModelServerArgs,
    hub_token_secret,
    token_env_from_secret,
)
from config import ModelDeployment

# TGI keeps at most this many tokens of each request's budget for generation; the rest may be prompt.
MAX_NEW_TOKENS_RESERVE = 4096


def max_input_tokens(max_total_tokens: int) -> int:
    """TGI needs MAX_INPUT_TOKENS < MAX_TOTAL_TOKENS: keep half the window, up to 4096 tokens, for the answer."""
    return max_total_tokens - min(max_total_tokens // 2, MAX_NEW_TOKENS_RESERVE)


def local_copy(m: ModelDeployment) -> str:
    return f"{CACHE_PATH}/{REGISTRY_PREFIX}/{m.repository}"


def tgi_env(m: ModelDeployment, port: int) -> dict[str, str]:
    """The launcher's variables (names checked against TGI's documented list in tests)."""
    env = {
        "MODEL_ID": local_copy(m) if m.source == "registry" else m.repository,
        "NUM_SHARD": str(m.tensor_parallel_size),
        "PORT": str(port),
        # Kubernetes sets HOSTNAME to the pod name, and TGI reads HOSTNAME as its listen address.
        "HOSTNAME": "0.0.0.0",
        "HF_HOME": CACHE_PATH,
        "CUDA_MEMORY_FRACTION": f"{m.gpu_memory_utilization:g}",
        "GRACEFUL_TERMINATION_TIMEOUT": str(m.drain_seconds),
    }
    if m.max_model_len:
        inputs = max_input_tokens(m.max_model_len)
        env |= {"MAX_TOTAL_TOKENS": str(m.max_model_len), "MAX_INPUT_TOKENS": str(inputs),
                # TGI's own default (max input + 50), explicit so a whole prompt is prefilled in one batch.
                "MAX_BATCH_PREFILL_TOKENS": str(inputs + 50)}
    optional = {"QUANTIZE": TGI_QUANTIZE[m.quantization], "KV_CACHE_DTYPE": TGI_KV_CACHE_DTYPE[m.kv_cache_dtype],
                "DTYPE": None if m.dtype == "auto" else m.dtype, "REVISION": m.revision}
    env |= {name: value for name, value in optional.items() if value is not None}
    return env


def registry_sync(m: ModelDeployment, bucket: str, region: str) -> dict:
    """Init container: copy the registry's files into the cache volume before TGI starts (TGI cannot read S3)."""
    return {
        "name": "registry-sync",
        "image": AWS_CLI.reference,
        "command": ["aws", "s3", "sync", "--only-show-errors", "--no-progress",
                    f"s3://{bucket}/{REGISTRY_PREFIX}/{m.repository}/", local_copy(m)],
        "env": [{"name": "AWS_REGION", "value": region}],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [{"name": "cache", "mountPath": CACHE_PATH}],
    }


class TgiService(ModelServer):
    PORT = 8080

    @classmethod
    def pod_parts(cls, args: ModelServerArgs, bucket: str) -> tuple[dict, list[dict]]:
        m = args.deployment
        env = [{"name": k, "value": v} for k, v in sorted(tgi_env(m, cls.PORT).items())]
        token = hub_token_secret(args)
        container = {
            "name": "tgi",
            "image": TGI.reference,
            # TGI's Rust launcher and router read the token from the environment only (unchecked for a file here).
            "env": env + ([token_env_from_secret(token)] if token else []),
            "ports": [{"name": "http", "containerPort": cls.PORT, "protocol": "TCP"}],
        }
        init = [registry_sync(m, bucket, args.region)] if m.source == "registry" else []
        return container, init
