"""LoRA adapters: config checks, the vLLM arguments and init containers, the planner's slot memory, the gateway's
names, grants and prices, and the per-adapter signals. The real vLLM checks are in `make test-upstream`
(tests/upstream/lora_memory.py, adapter_fetch.py, vllm_args.py) and `make e2e` (tests/e2e/check_platform.py)."""

from __future__ import annotations

import copy
import json
import math

import pytest

import config
from catalog.models import MODELS
from components.edge import gateway
from components.observability import signals
from components.serving.model_server import cache_gib
from components.serving.vllm_service import VllmService, vllm_args
from gateway_plugins.gateway_auth import GatewayError, KeyTable
from planning import capacity
from tests.conftest import Rendered, raw, stack_values
from tests.conftest import config_problems as problems

KEYS = {key: f"llm-platform:{key}" for key in config.KEYS}
BUCKET = "models-bucket"


def prod_with(change) -> dict:
    """Prod's stack values with `change(models)` applied to its models map."""
    values = copy.deepcopy(stack_values("prod"))
    change(values[KEYS["models"]])
    return values


def adapter(rank: int = 16, **fields) -> dict:
    return {"checkpoint": "acme/some-adapter", "rank": rank, **fields}


# Config ---------------------------------------------------------------------------------------------------------

def _set_adapter(name: str, body: dict, model: str = "llama-8b"):
    return lambda models: models[model].setdefault("adapters", {}).__setitem__(name, body)


BAD = [
    ("name is a model key", _set_adapter("llama-70b", adapter()), "models.llama-8b.adapters.llama-70b",
     "is also a model key (models.llama-70b)"),
    ("name is a tier", _set_adapter("fast", adapter()), "models.llama-8b.adapters.fast", "reserves"),
    ("name is auto", _set_adapter("auto", adapter()), "models.llama-8b.adapters.auto", "reserves"),
    ("name is a router", _set_adapter("llama-70b-router", adapter()), "models.llama-8b.adapters.llama-70b-router",
     "replica router Service"),
    ("name not a label", _set_adapter("Support_EN", adapter()), "models.llama-8b.adapters.Support_EN",
     "lowercase letters, digits and '-'"),
    ("same name on two models", _set_adapter("support-en", adapter(), "llama-70b"),
     "models.llama-70b.adapters.support-en", "models.llama-8b already serves an adapter of this name"),
    ("rank above maxLoraRank", lambda ms: ms["llama-8b"].update(maxLoraRank=16),
     "models.llama-8b.adapters.sql-assistant.rank", "above the model's maxLoraRank (16)"),
    ("maxLoraRank vLLM refuses", lambda ms: ms["llama-8b"].update(maxLoraRank=24), "models.llama-8b.maxLoraRank",
     "320"),
    ("more slots than adapters", lambda ms: ms["llama-8b"].update(maxLoras=4), "models.llama-8b.maxLoras",
     "at most the number of adapters (3)"),
    ("fewer host copies than slots", lambda ms: ms["llama-8b"].update(maxLoras=3, maxCpuLoras=2),
     "models.llama-8b.maxCpuLoras", "at least maxLoras (3)"),
    ("LoRA limits without adapters", lambda ms: ms["llama-70b"].update(maxLoras=2), "models.llama-70b.maxLoras",
     "applies only to a model with adapters"),
    ("adapters on TGI", _set_adapter("tgi-lora", adapter(), "llama-70b-tgi"), "models.llama-70b-tgi.adapters",
     "applies only to engine: vllm"),
    ("revision with the registry", _set_adapter("pinned", adapter(revision="v1")),
     "models.llama-8b.adapters.pinned.revision", "applies only to source: huggingface"),
    ("path out of the registry", _set_adapter("escape", adapter(checkpoint="../../etc")),
     "models.llama-8b.adapters.escape", "Hugging Face repository id"),
    ("rank zero", _set_adapter("flat", adapter(rank=0)), "models.llama-8b.adapters.flat.rank", "at least 1"),
    ("rank as text", _set_adapter("texty", adapter(rank="16")), "models.llama-8b.adapters.texty.rank", "16"),
]


@pytest.mark.parametrize(("change", "key", "text"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_adapter_config_is_refused_by_key_with_what_is_allowed(change, key, text):
    found = problems(prod_with(change))
    matching = [p for p in found if p.key.startswith(key)]
    assert matching, [str(p) for p in found]
    assert any(text in str(p) for p in matching), [str(p) for p in matching]


def test_adapter_problems_are_reported_together():
    def several(models):
        models["llama-8b"]["adapters"]["llama-70b"] = adapter()
        models["llama-8b"]["maxLoraRank"] = 16
        models["llama-70b"]["adapters"] = {"support-de": adapter()}
    keys = {p.key for p in problems(prod_with(several))}
    assert {"models.llama-8b.adapters.llama-70b", "models.llama-8b.adapters.sql-assistant.rank",
            "models.llama-70b.adapters.support-de"} <= keys


def test_adapters_on_a_mixture_of_experts_model_are_refused():
    moe = next(name for name, arch in MODELS.items() if arch.is_moe)
    values = stack_values("dev")
    values[KEYS["models"]] = {"moe": {"model": moe, "gpuPool": "general", "adapters": {"a": adapter()}}}
    found = problems(values)
    assert any(p.key == "models.moe.adapters" and "mixture of experts" in str(p) for p in found), found


@pytest.mark.parametrize(("ranks", "slots", "rank", "host"), [
    ([16], 1, 16, 1),
    ([8, 12], 2, 16, 2),        # 12 is not a rank vLLM sizes slots for: the next one up
    ([4, 4, 4, 4, 4, 100], 4, 128, 6),
])
def test_lora_limits_default_from_the_adapters(ranks, slots, rank, host):
    m = config.ModelDeployment.model_validate({"model": "llama-3.1-8b", "gpuPool": "p", "adapters": {
        f"a{i}": adapter(r) for i, r in enumerate(ranks)}})
    assert (m.lora_slots, m.lora_rank, m.cpu_lora_slots) == (slots, rank, host)
    assert m.lora_rank in config.schema.LORA_RANKS and m.lora_rank >= max(ranks)


# Serving --------------------------------------------------------------------------------------------------------

def deployment(**fields) -> config.ModelDeployment:
    return config.ModelDeployment.model_validate({"model": "llama-3.1-8b", "gpuPool": "p", **fields})


def flag(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_adapters_are_loaded_at_start_from_their_local_copies():
    m = deployment(adapters={"support-en": adapter(16), "sql": adapter(32)}, maxCpuLoras=3)
    args = vllm_args("llama-8b", m, BUCKET, 8000)
    assert "--enable-lora" in args
    assert (flag(args, "--max-loras"), flag(args, "--max-lora-rank"), flag(args, "--max-cpu-loras")) == ("2", "32", "3")
    start = args.index("--lora-modules") + 1
    assert args[start:start + 2] == ["support-en=/cache/adapters/support-en", "sql=/cache/adapters/sql"]
    assert not {"--enable-lora", "--lora-modules", "--max-loras"} & set(vllm_args("llama-8b", deployment(), BUCKET, 8000))


def test_extra_args_cannot_set_the_lora_flags():
    values = prod_with(lambda ms: ms["llama-8b"].update(extraArgs=["--max-loras", "8"]))
    assert any(p.key == "models.llama-8b.extraArgs" and "maxLoras" in str(p) for p in problems(values))


def _pod(m: config.ModelDeployment, token: str | None = "huggingface-token"):
    from components.serving.model_server import ModelServerArgs, pod_spec
    args = ModelServerArgs("llama-8b", m, config.GpuPool(instance_families=["g6e"], gpu_limit=8), "us-east-1",
                           BUCKET, token, [])
    container, init = VllmService.pod_parts(args, BUCKET)
    return pod_spec(args, container, init, cache_gib(m, VllmService.streams_from_s3(m)))


def test_registry_adapters_are_copied_with_the_pods_identity_before_the_server_starts():
    m = deployment(source="registry", adapters={"support-en": adapter(checkpoint="acme/support-en-v3")})
    pod = _pod(m, token=None)
    [init] = pod["initContainers"]
    assert init["command"][:3] == ["aws", "s3", "sync"]
    assert init["command"][-2:] == [f"s3://{BUCKET}/models/acme/support-en-v3/", "/cache/adapters/support-en"]
    env = {e["name"] for e in init["env"]}
    assert not env & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "HF_TOKEN"}
    assert pod["serviceAccountName"] == "model-server"  # the registry reader (Pod Identity)
    assert init["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "cache", "mountPath": "/cache"} in init["volumeMounts"]


def test_a_hub_adapter_is_fetched_at_its_revision_with_the_token_file_even_beside_a_registry_model():
    m = deployment(source="registry", adapters={"public": adapter(source="huggingface", checkpoint="org/lora",
                                                                  revision="abc123")})
    pod = _pod(m)
    [init] = pod["initContainers"]
    assert init["command"] == ["hf", "download", "org/lora", "--local-dir", "/cache/adapters/public",
                               "--revision", "abc123"]
    assert {"name": "HF_TOKEN_PATH", "value": "/var/run/secrets/huggingface/token"} in init["env"]
    # The registry-sourced server itself has no token mount, but the pod still gets the token volume.
    assert "volumeMounts" not in pod["containers"][0] or all(
        v["name"] != "huggingface-token" for v in pod["containers"][0]["volumeMounts"])
    assert any(v["name"] == "huggingface-token" for v in pod["volumes"])


def test_a_hub_adapter_needs_the_huggingface_token_secret():
    def hub_adapter(models):
        models["llama-405b-fp8"]["adapters"] = {"public": adapter(source="huggingface", checkpoint="org/lora")}
    values = prod_with(hub_adapter)
    for model in values[KEYS["models"]].values():
        model["source"] = "registry"
        model.pop("checkpoint", None)
    secrets = {"grafanaAdminPassword", "pagerdutyRoutingKey", "slackWebhookUrl", "gatewayMasterKey",
               "redisAuthToken", "gatewayKeys.search-app", "gatewayKeys.support-desk", "gatewayKeys.research"}
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(values), secrets_set=secrets)
    [problem] = raised.value.problems
    assert problem.key == "huggingfaceToken" and "public" in str(problem)


def test_the_cache_volume_holds_the_adapters():
    m = deployment(source="registry")
    with_adapters = deployment(source="registry", adapters={f"a{i}": adapter(512) for i in range(8)})
    assert cache_gib(with_adapters, True) > cache_gib(m, True)


# Capacity -------------------------------------------------------------------------------------------------------

def _slot_tensors(arch, rank: int) -> int:
    """Elements of one LoRA slot at TP 1, listed layer class by layer class as vLLM 0.32 allocates them:
    (A rows x cols, B rows x cols) per slice."""
    h, hd, inter = arch.hidden_size, arch.head_size, arch.intermediate_size
    q, kv = arch.num_attention_heads * hd, arch.num_kv_heads * hd
    layer = [
        *[(rank, h, out, rank) for out in (q, kv, kv)],      # MergedQKVParallelLinearWithLoRA: 3 slices
        (rank, q, h, rank),                                   # RowParallelLinearWithLoRA (o_proj)
        *[(rank, h, inter, rank) for _ in range(2)],         # MergedColumnParallelLinearWithLoRA (gate, up)
        (rank, inter, h, rank),                               # RowParallelLinearWithLoRA (down_proj)
    ]
    per_layer = sum(a * b + c * d for a, b, c, d in layer)
    embedding = arch.vocab_size * rank + h * rank            # VocabParallelEmbeddingWithLoRA
    lm_head = rank * h + arch.vocab_size * rank              # LogitsProcessorWithLoRA
    return arch.num_layers * per_layer + embedding + lm_head


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b", "qwen2.5-7b"])
@pytest.mark.parametrize(("slots", "rank"), [(1, 8), (4, 16), (8, 64)])
def test_lora_memory_is_the_slot_tensors_vllm_allocates(model, slots, rank):
    arch = MODELS[model]
    assert capacity.lora_bytes_per_gpu(arch, 1, slots, rank, 2) == slots * _slot_tensors(arch, rank) * 2


def test_lora_memory_for_llama_8b_at_four_rank_16_slots_is_about_a_third_of_a_gib():
    gib = capacity.lora_bytes_per_gpu(MODELS["llama-3.1-8b"], 1, 4, 16, 2) / capacity.GiB
    assert 0.3 < gib < 0.35, gib


def test_tensor_parallelism_splits_the_sharded_side_of_each_slot():
    arch = MODELS["llama-3.1-70b"]
    one, four = (capacity.lora_bytes_per_gpu(arch, tp, 4, 16, 2) for tp in (1, 4))
    # A of column-parallel and B of row-parallel layers stay whole on every rank; the rest is split.
    assert one / 4 < four < one


def test_the_slots_come_out_of_the_kv_cache_and_can_make_a_model_not_fit():
    base = capacity.SizingRequest(MODELS["llama-3.1-8b"], 24.0, gpu_name="A10G", max_model_len=8192)
    lora = capacity.size(capacity.replace(base, lora_slots=4, lora_rank=64))
    plain = capacity.size(base)
    taken = plain.kv_cache_gib_per_gpu - lora.kv_cache_gib_per_gpu
    # The slots, and the CUDA graphs vLLM captures a second time with LoRA active.
    assert lora.cuda_graph_gib_per_gpu == pytest.approx(2 * plain.cuda_graph_gib_per_gpu)
    assert taken == pytest.approx(lora.lora_gib_per_gpu + plain.cuda_graph_gib_per_gpu) and lora.lora_gib_per_gpu > 1
    assert lora.kv_cache_tokens < plain.kv_cache_tokens
    crowded = capacity.size(capacity.replace(base, lora_slots=64, lora_rank=512, max_model_len=65536))
    assert not crowded.fits and "LoRA slots" in crowded.reason


def test_the_fit_check_at_load_counts_the_slots():
    def heavy(models):
        models["llama-8b"]["adapters"] = {f"a{i}": adapter(512) for i in range(40)}
        models["llama-8b"]["maxLoras"] = 40
    found = [p for p in problems(prod_with(heavy)) if p.key == "models.llama-8b"]
    assert found and "LoRA slots" in str(found[0]), found


# Gateway --------------------------------------------------------------------------------------------------------

def test_each_adapter_is_a_model_name_served_by_its_models_backend(prod: Rendered):
    models = prod.config.models
    backends = {key: f"http://{key}.test:8000" for key in models}
    entries = gateway.litellm_config(models, backends, prod.config.gateway)["model_list"]
    by_name = {e["model_name"]: e for e in entries if e["model_name"] not in config.schema.TIERS}
    for name in models["llama-8b"].adapters:
        params = by_name[name]["litellm_params"]
        assert params["model"] == f"openai/{name}" and params["api_base"] == "http://llama-8b.test:8000/v1"
        assert by_name[name]["model_info"]["id"] == name
    # No tier in prod's adapters: no tier group holds one.
    tier_members = {e["model_info"]["id"] for e in entries if e["model_name"] in config.schema.TIERS}
    assert not {t for t in tier_members if t.split("/")[1] in models["llama-8b"].adapters}


def test_an_adapter_with_a_tier_joins_that_tier_group_and_its_grant():
    values = prod_with(lambda ms: ms["llama-8b"]["adapters"]["sql-assistant"].update(tier="balanced"))
    cfg = config.parse("prod", raw(values))
    entries = gateway.litellm_config(cfg.models, {k: "http://x" for k in cfg.models}, cfg.gateway)["model_list"]
    balanced = {e["model_info"]["id"] for e in entries if e["model_name"] == "balanced"}
    assert balanced == {"balanced/llama-70b", "balanced/sql-assistant"}
    assert "sql-assistant" in gateway.allowed_models(["balanced"], cfg.models)
    assert "support-en" not in gateway.allowed_models(["fast"], cfg.models)


def _table(cfg: config.StackConfig, grants: dict[str, list[str]]) -> KeyTable:
    keys = {name: {"models": gateway.allowed_models(models, cfg.models), "requestsPerMinute": 10,
                   "tokensPerMinute": 1000} for name, models in grants.items()}
    policy = {**gateway.key_policy(cfg.gateway, cfg.models), "keys": keys}
    return KeyTable(policy, {name: gateway.key_hash(f"sk-{name}") for name in grants})


@pytest.mark.parametrize(("grant", "model", "allowed"), [
    (["support-en"], "support-en", True),
    (["support-en"], "llama-8b", False),       # an adapter's grant is not its base model's
    (["support-en"], "support-de", False),     # nor a sibling adapter's
    (["support-en"], "fast", False),
    (["llama-8b"], "support-en", False),       # the base model's grant is not its adapters'
    (["fast"], "sql-assistant", False),        # a tier's grant reaches adapters only in that tier
    (["*"], "sql-assistant", True),
])
def test_grants_name_adapters_and_base_models_separately(prod: Rendered, grant, model, allowed):
    table = _table(prod.config, {"k": grant})
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    if allowed:
        table.authorize("sk-k", "POST", "/v1/chat/completions", body=body, headers={})
    else:
        with pytest.raises(GatewayError) as refused:
            table.authorize("sk-k", "POST", "/v1/chat/completions", body=body, headers={})
        assert refused.value.code == "403"


# Signals --------------------------------------------------------------------------------------------------------

def test_a_request_for_an_adapter_wakes_its_model_from_zero(prod: Rendered):
    m = prod.config.models["llama-8b"].model_copy(update={"min_replicas": 0})
    names = signals.gateway_request_names("llama-8b", m)
    assert {"llama-8b", "support-en", "support-de", "sql-assistant", "fast", "auto"} == set(names)
    [trigger] = [q for q in signals.scaler_queries("llama-8b", m) if q.name == "gateway-requests"]
    assert 'requested_model=~"llama-8b|support-en|support-de|sql-assistant|fast|auto"' in trigger.query


def test_adapter_series_are_recorded_per_adapter_with_their_model(prod: Rendered):
    [group] = [g for r in prod.kind("PrometheusRule") for g in r["spec"]["groups"]
               if g["name"] == "llm-platform.adapters"]
    rate = [r for r in group["rules"] if r["record"] == signals.ADAPTER_REQUESTS]
    assert {(r["labels"]["adapter"], r["labels"]["model"], r["labels"]["tier"]) for r in rate} == {
        ("support-en", "llama-8b", "fast"), ("support-de", "llama-8b", "fast"), ("sql-assistant", "llama-8b", "fast")}
    support = next(r for r in rate if r["labels"]["adapter"] == "support-en")
    assert 'model_id=~"support-en|[a-z]+/support-en"' in support["expr"]
    assert math.isfinite(len(group["rules"])) and len(group["rules"]) == 3 * (1 + len(signals.ADAPTER_LATENCY))


def test_plan_lists_each_adapter_with_its_source_and_memory(prod: Rendered):
    m = prod.config.models["llama-8b"]
    slots = capacity.lora_bytes_per_gpu(MODELS[m.model], 1, m.lora_slots, m.lora_rank, 2) / capacity.GiB
    assert f"llama-8b: 3 adapter(s), {m.lora_slots} slot(s) x rank {m.lora_rank} = {slots:.2f} GiB per GPU, plus " \
           in prod.stdout
    for name, a in m.adapters.items():
        line = next(line for line in prod.stdout.splitlines() if line.strip().startswith(name + " "))
        assert f"s3://<registry>/models/{a.checkpoint}/" in line and f"rank {a.rank}" in line, line


# llmctl size --------------------------------------------------------------------------------------------------------

def test_llmctl_size_counts_lora_slots_and_refuses_what_vllm_would(capsys):
    from llmctl.__main__ import main

    common = ["size", "--model", "llama-3.1-8b", "--gpu", "A10G", "--max-model-len", "8192", "--json"]
    assert main(common) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*common, "--max-loras", "4", "--max-lora-rank", "64"]) == 0
    lora = json.loads(capsys.readouterr().out)
    expected = capacity.lora_bytes_per_gpu(MODELS["llama-3.1-8b"], 1, 4, 64, 2) / capacity.GiB
    assert lora["lora_gib_per_gpu"] == pytest.approx(expected, abs=1e-3) and plain["lora_gib_per_gpu"] == 0
    assert lora["kv_cache_tokens"] < plain["kv_cache_tokens"]
    for extra, named in ((["--max-loras", "4", "--max-lora-rank", "24"], "--max-lora-rank 24"),
                         (["--max-loras", "65"], "--max-loras 65"), (["--max-loras", "-1"], "--max-loras -1")):
        assert main([*common, *extra]) == 2
        assert named in capsys.readouterr().err
