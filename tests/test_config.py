"""Stack configuration: the committed stacks load with the documented shape; bad input names key, value and rule."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import config
from planning.capacity import SizingRequest
from tests.conftest import ROOT, config_problems, raw, stack_values
from tests.stack_files import scratch_project

KEYS = {key: f"llm-platform:{key}" for key in config.KEYS}


def test_dev_stack_is_small_and_spot_first():
    cfg = config.load_stack_file(ROOT, "dev")
    assert cfg.cluster.availability_zones == 2
    assert cfg.cluster.nat_gateways == "single"
    [(key, pool)] = cfg.gpu_pools.items()
    assert set(pool.instance_families) == {"g6e", "g5"}
    assert pool.capacity_types == ["spot", "on-demand"]
    assert pool.gpu_limit == 4


def test_prod_stack_is_ha_with_a_pool_per_tier():
    cfg = config.load_stack_file(ROOT, "prod")
    assert cfg.cluster.availability_zones == 3
    assert cfg.cluster.nat_gateways == "perAz"
    assert set(cfg.gpu_pools) == {"large", "quality", "small", "multinode", "single"}
    assert set(cfg.gpu_pools["large"].instance_types) == {"p4de.24xlarge", "p5.48xlarge"}
    assert set(cfg.gpu_pools["quality"].instance_types) == {"p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge"}
    for key, pool in cfg.gpu_pools.items():
        # A spot reclaim of one node takes a whole multi-node group down: that pool is on-demand only.
        assert pool.capacity_types == (["on-demand"] if key == "multinode" else ["spot", "on-demand"])
    multinode = cfg.gpu_pools["multinode"]
    assert (multinode.instance_types, multinode.efa, multinode.placement_group) == (["p5.48xlarge"], True, True)


def test_prod_serves_the_seed_tiers_and_dev_one_8b_model():
    prod = config.load_stack_file(ROOT, "prod").models
    shape = {(m.model, m.engine, m.tensor_parallel_size, m.pipeline_parallel_size, m.quantization, m.tier)
             for m in prod.values()}
    assert shape == {
        ("llama-3.1-8b", "vllm", 1, 1, "none", "fast"),
        ("llama-3.1-70b", "vllm", 8, 1, "none", "balanced"),
        ("llama-3.1-405b-fp8", "vllm", 8, 1, "none", "quality"),
        ("llama-3.1-70b", "tgi", 1, 1, "bitsandbytes-nf4", None),
        ("llama-3.1-405b", "vllm", 8, 2, "none", None),  # the bf16 alternative, on two nodes
    }
    assert prod["llama-405b-fp8"].gpu_pool == "quality"
    [(_, dev)] = config.load_stack_file(ROOT, "dev").models.items()
    assert (dev.model, dev.engine, dev.min_replicas) == ("llama-3.1-8b", "vllm", 0)


def test_defaults_are_applied_for_unset_keys():
    values = stack_values("dev")
    assert "rootVolumeGib" not in values[KEYS["gpuPools"]]["general"]
    cfg = config.parse("dev", raw(values))
    pool = cfg.gpu_pools["general"]
    assert pool.root_volume_gib >= 200
    assert pool.ami_family == "al2023"
    assert cfg.cluster_name == "llm-dev"
    assert cfg.aws_tags["stack"] == "dev" and cfg.aws_tags["environment"] == "dev"


def _set(values: dict, dotted: str, value) -> dict:
    """Set `section.a.b` (section is a config key like gpuPools) in a copy of the stack values; None deletes."""
    values = copy.deepcopy(values)
    section, *path = dotted.split(".")
    node = values[KEYS[section]]
    for part in path[:-1]:
        node = node[part]
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = value
    return values


# (id, stack, key to change, new value, key the error must name, text the error must contain)
INVALID = [
    ("unknown-instance-type", "prod", "gpuPools.large.instanceTypes", ["p4d.24xlarge", "p9.48xlarge"],
     "gpuPools.large.instanceTypes", "p9.48xlarge"),
    ("unknown-instance-family", "dev", "gpuPools.general.instanceFamilies", ["g6e", "x9"],
     "gpuPools.general.instanceFamilies", "unknown GPU instance family x9"),
    ("one-az", "dev", "cluster.availabilityZones", 1, "cluster.availabilityZones", "must be at least 2"),
    ("bad-cidr", "dev", "cluster.vpcCidr", "10.0.0.300/16", "cluster.vpcCidr", "not a valid CIDR"),
    ("vpc-too-small", "dev", "cluster.vpcCidr", "10.0.0.0/24", "cluster.vpcCidr", "/16 to /20"),
    ("public-vpc-cidr", "dev", "cluster.vpcCidr", "8.8.0.0/16", "cluster.vpcCidr", "RFC 1918"),
    ("overlapping-service-cidr", "dev", "cluster.serviceCidr", "10.10.128.0/20", "cluster.serviceCidr",
     "must not overlap cluster.vpcCidr"),
    ("negative-gpu-limit", "dev", "gpuPools.general.gpuLimit", -4, "gpuPools.general.gpuLimit", "must be more than 0"),
    ("gpu-limit-below-smallest-instance", "prod", "gpuPools.large.gpuLimit", 4, "gpuPools.large.gpuLimit",
     "smallest instance in this pool has 8 GPUs"),
    ("unsupported-kubernetes", "dev", "cluster.kubernetesVersion", "1.29", "cluster.kubernetesVersion",
     "must be one of 1.32"),
    ("unknown-capacity-type", "dev", "gpuPools.general.capacityTypes", ["spot", "reserved"],
     "gpuPools.general.capacityTypes[1]", "'spot' or 'on-demand'"),
    ("pool-without-instances", "dev", "gpuPools.general.instanceFamilies", [], "gpuPools.general",
     "at least one instance family or instance type"),
    ("duplicate-instance-types", "prod", "gpuPools.large.instanceTypes", ["p5.48xlarge", "p5.48xlarge"],
     "gpuPools.large.instanceTypes", "more than once"),
    ("bad-region", "dev", "cluster.region", "us-middle-earth-1", "cluster.region", "not an AWS region"),
    ("budget-over-100-percent", "prod", "gpuPools.small.disruptionBudget", "150%", "gpuPools.small.disruptionBudget",
     "must be a share of nodes like 10%"),
    ("bad-duration", "dev", "gpuPools.general.consolidateAfter", "5 minutes", "gpuPools.general.consolidateAfter",
     "must be a duration like 30s"),
    ("root-volume-too-small", "dev", "gpuPools.general.rootVolumeGib", 100, "gpuPools.general.rootVolumeGib",
     "must be at least 200"),
    ("unknown-ami-family", "dev", "gpuPools.general.amiFamily", "al2", "gpuPools.general.amiFamily",
     "'al2023' or 'bottlerocket'"),
    ("ami-version-of-other-family", "dev", "gpuPools.general.amiVersion", "v1.46.0", "gpuPools.general.amiVersion",
     "allowed for al2023"),
    ("misspelled-key", "dev", "gpuPools.general.gpuLimits", 4, "gpuPools.general.gpuLimits", "not a known key"),
    ("system-nodes-min-above-max", "dev", "cluster.systemNodeGroup.minSize", 5, "cluster.systemNodeGroup",
     "minSize <= desiredSize <= maxSize"),
    ("reserved-tag", "dev", "tags.karpenter.sh/nodepool", "x", "tags.karpenter.sh/nodepool", "may not start with"),
    ("model-unknown", "dev", "models.llama-8b.model", "llama-9", "models.llama-8b.model", "allowed: llama-3-8b,"),
    ("model-unknown-pool", "dev", "models.llama-8b.gpuPool", "huge", "models.llama-8b.gpuPool", "allowed: general"),
    ("model-unknown-engine", "dev", "models.llama-8b.engine", "triton", "models.llama-8b.engine", "'vllm' or 'tgi'"),
    ("model-tp-not-dividing-heads", "dev", "models.llama-8b.tensorParallelSize", 3,
     "models.llama-8b.tensorParallelSize", "must divide llama-3.1-8b's 32 attention heads"),
    ("model-min-replicas-above-max", "dev", "models.llama-8b.minReplicas", 3, "models.llama-8b.minReplicas",
     "must not exceed maxReplicas (1)"),
    ("model-context-beyond-model", "dev", "models.llama-8b.maxModelLen", 262144, "models.llama-8b.maxModelLen",
     "above llama-3.1-8b's max_position_embeddings (131072)"),
    ("model-unknown-source", "dev", "models.llama-8b.source", "s3", "models.llama-8b.source",
     "'huggingface' or 'registry'"),
    ("model-awq-without-checkpoint", "dev", "models.llama-8b.quantization", "awq", "models.llama-8b.quantization",
     "vllm needs a checkpoint already quantized with awq"),
    ("model-removed-vllm-flag", "dev", "models.llama-8b.extraArgs", ["--swap-space", "4"],
     "models.llama-8b.extraArgs", "--swap-space was removed from vLLM"),
    ("model-flag-the-platform-sets", "dev", "models.llama-8b.extraArgs", ["--tensor-parallel-size=2"],
     "models.llama-8b.extraArgs", "set by the platform from tensorParallelSize"),
    ("model-extra-args-not-a-flag", "dev", "models.llama-8b.extraArgs", ["fast"], "models.llama-8b.extraArgs",
     "must start with a flag"),
    ("model-tgi-extra-args", "prod", "models.llama-70b-tgi.extraArgs", ["--foo"], "models.llama-70b-tgi.extraArgs",
     "applies only to engine: vllm"),
    ("model-tgi-dtype-with-quantization", "prod", "models.llama-70b-tgi.dtype", "float16",
     "models.llama-70b-tgi.dtype", "TGI cannot force a dtype together with quantization"),
    ("model-revision-from-registry", "prod", "models.llama-405b-fp8.revision", "main",
     "models.llama-405b-fp8.revision", "applies only to source: huggingface"),
    ("model-bad-checkpoint", "dev", "models.llama-8b.checkpoint", "not a repo", "models.llama-8b.checkpoint",
     "must be a Hugging Face repository id"),
    ("monitoring-more-replicas-than-system-nodes", "dev", "monitoring.replicas", 3, "monitoring.replicas",
     "cluster.systemNodeGroup.minSize is 2; use at most 2"),
    ("monitoring-bad-retention", "dev", "monitoring.retention", "3 days", "monitoring.retention",
     "must be a duration like 15d"),
    ("monitoring-tiny-volume", "dev", "monitoring.storageGib", 5, "monitoring.storageGib",
     "must be at least 10"),
    ("monitoring-unknown-receiver", "prod", "monitoring.alerting.opsgenie", True, "monitoring.alerting.opsgenie",
     "not a known key"),
    ("monitoring-bad-slack-channel", "prod", "monitoring.alerting.slackChannel", "LLM alerts!",
     "monitoring.alerting.slackChannel", "must be a channel like #llm-alerts"),
    ("autoscaling-gpu-over-100", "dev", "models.llama-8b.autoscaling", {"gpuUtilizationPercent": 120},
     "models.llama-8b.autoscaling.gpuUtilizationPercent", "must be at most 100"),
    ("autoscaling-no-trigger", "dev", "models.llama-8b.autoscaling",
     {"waitingRequestsPerReplica": None, "p99LatencySeconds": None, "gpuUtilizationPercent": None},
     "models.llama-8b.autoscaling", "keep at least one of"),
    ("autoscaling-hpa-period-too-long", "dev", "models.llama-8b.autoscaling",
     {"scaleDown": {"stabilizationSeconds": 300, "pods": 1, "periodSeconds": 3600}},
     "models.llama-8b.autoscaling.scaleDown.periodSeconds", "must be at most 1,800"),
    ("slo-negative-latency", "dev", "models.llama-8b.slo", {"p99LatencySeconds": -1},
     "models.llama-8b.slo.p99LatencySeconds", "must be more than 0"),
]


@pytest.mark.parametrize(("stack", "key", "value", "named", "text"), [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_config_is_rejected_with_its_key(stack, key, value, named, text):
    values = stack_values(stack)
    if key.startswith("tags."):
        section, name = key.split(".", 1)
        values[KEYS[section]] = {**(values[KEYS[section]] or {}), name: value}
    else:
        values = _set(values, key, value)
    with pytest.raises(config.ConfigError) as raised:
        config.parse(stack, raw(values))
    message = str(raised.value)
    assert f"{named}:" in message, message
    assert text in message, message
    assert [p.key for p in raised.value.problems].count(named) == 1, message


def test_every_problem_is_reported_not_only_the_first():
    values = _set(stack_values("prod"), "cluster.availabilityZones", 1)
    values = _set(values, "gpuPools.large.instanceTypes", ["p9.48xlarge"])
    values = _set(values, "gpuPools.small.gpuLimit", 0)
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(values))
    keys = [p.key for p in raised.value.problems]
    assert keys == ["cluster.availabilityZones", "gpuPools.large.instanceTypes", "gpuPools.small.gpuLimit"]
    assert "(3 problems)" in str(raised.value)


def test_cross_field_problems_are_all_reported():
    values = _set(stack_values("dev"), "cluster.serviceCidr", "10.10.0.0/16")
    values = _set(values, "gpuPools.general.amiVersion", "v1.2.3")
    values = _set(values, "cluster.systemNodeGroup.desiredSize", 9)
    with pytest.raises(config.ConfigError) as raised:
        config.parse("dev", raw(values))
    assert {p.key for p in raised.value.problems} == {
        "cluster.serviceCidr", "cluster.systemNodeGroup", "gpuPools.general.amiVersion",
    }


def test_pool_names_that_collide_in_kubernetes_are_rejected():
    values = stack_values("dev")
    general = values[KEYS["gpuPools"]]["general"]
    values[KEYS["gpuPools"]] = {"a": {**general, "capacityTypes": ["spot"]}, "a-spot": general}
    with pytest.raises(config.ConfigError) as raised:
        config.parse("dev", raw(values))
    assert "gpuPools.a-spot" in str(raised.value) and "'a-spot'" in str(raised.value)


def test_pool_name_must_be_a_dns_label():
    values = stack_values("dev")
    values[KEYS["gpuPools"]] = {"Big_Pool": values[KEYS["gpuPools"]]["general"]}
    with pytest.raises(config.ConfigError, match=r"gpuPools.Big_Pool: got 'Big_Pool'; pool names must be DNS labels"):
        config.parse("dev", raw(values))


def test_aws_region_must_agree_with_cluster_region():
    with pytest.raises(config.ConfigError, match=r"aws:region: got 'eu-west-1'; must equal cluster.region \(us-west-2\)"):
        config.parse("dev", raw(stack_values("dev")), aws_region="eu-west-1")


def _project_copy(tmp_path: Path, stack_text: str) -> Path:
    project = scratch_project(tmp_path)
    (project / "Pulumi.test.yaml").write_text(stack_text)
    return project


def test_duplicate_yaml_keys_are_rejected(tmp_path):
    text = (ROOT / "Pulumi.dev.yaml").read_text().replace(
        "  llm-platform:gpuPools:\n    general:\n",
        "  llm-platform:gpuPools:\n    general:\n      gpuLimit: 2\n    general:\n",
    )
    with pytest.raises(config.ConfigError, match=r"duplicate key \(first defined on line \d+\)") as raised:
        config.load_stack_file(_project_copy(tmp_path, text), "test")
    assert raised.value.problems[0].value == "general"


def test_undeclared_and_missing_project_keys_are_rejected(tmp_path):
    values = stack_values("dev")
    values["llm-platform:gpuPool"] = values.pop(KEYS["gpuPools"])
    project = _project_copy(tmp_path, yaml.safe_dump({"config": values}))
    with pytest.raises(config.ConfigError) as raised:
        config.load_stack_file(project, "test")
    message = str(raised.value)
    assert "llm-platform:gpuPool: got" in message and "is not declared in Pulumi.yaml" in message
    assert "llm-platform:gpuPools: got None; is required by Pulumi.yaml" in message


def test_llmctl_reports_bad_config_without_a_traceback(tmp_path):
    text = (ROOT / "Pulumi.dev.yaml").read_text().replace("gpuLimit: 4", "gpuLimit: -1")
    bad = ROOT / "Pulumi.citest-bad.yaml"
    bad.write_text(text)
    try:
        proc = subprocess.run([sys.executable, "-m", "llmctl", "plan", "citest-bad", "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        bad.unlink()
    assert proc.returncode == 2
    assert "gpuPools.general.gpuLimit: got -1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "inventory.json").exists()


@pytest.mark.parametrize(("changes", "key"), [
    ({"tensorParallelSize": 3}, "tensorParallelSize"),
    ({"maxModelLen": 262144}, "maxModelLen"),
    ({"model": "llama-3.1-405b-fp8", "quantization": "awq", "checkpoint": "org/llama-405b-awq"}, "quantization"),
])
def test_planner_errors_name_the_yaml_key_the_user_wrote(changes, key):
    """The capacity planner's input checks speak in its own field names; a config error must not."""
    problem = _only_problem({"model": "llama-3.1-8b", "gpuPool": "general", **changes}, "g6e.xlarge")
    assert problem.key == f"models.big.{key}" and problem.value == changes[key]
    python_names = {f.name for f in dataclasses.fields(SizingRequest) if "_" in f.name}  # snake_case only
    assert not [name for name in python_names if name in str(problem)], str(problem)


def _only_problem(model: dict, instance_type: str = "g5.xlarge") -> config.Problem:
    """Load dev with a pool of one instance type serving `model` as `big`; it must fail with exactly one problem."""
    values = _set(stack_values("dev"), "gpuPools.general.instanceFamilies", [])
    values = _set(values, "gpuPools.general.instanceTypes", [instance_type])
    values[KEYS["models"]] = {"big": model}
    with pytest.raises(config.ConfigError) as raised:
        config.parse("dev", raw(values))
    [problem] = raised.value.problems
    return problem


def test_70b_in_bf16_on_a_single_a10g_is_rejected_at_load_with_the_numbers():
    problem = _only_problem({"model": "llama-3.1-70b", "gpuPool": "general", "maxModelLen": 8192})
    assert problem.key == "models.big"
    assert "does not fit on g5.xlarge at tensorParallelSize 1: needs 136.2 GiB per GPU" in problem.allowed
    assert "A10G has 20.2 GiB at utilization 0.92" in problem.allowed
    assert "fix: use a pool with larger GPUs" in problem.allowed


def test_fit_check_suggests_more_tensor_parallelism_when_the_instance_has_the_gpus():
    problem = _only_problem({"model": "qwen2.5-32b", "gpuPool": "general", "maxModelLen": 8192}, "g5.12xlarge")
    assert "fix: use tensorParallelSize 4" in problem.allowed


def test_tensor_parallelism_beyond_the_instance_is_rejected_per_instance_type():
    problem = _only_problem({"model": "llama-3.1-8b", "gpuPool": "general", "tensorParallelSize": 2})
    assert problem.key == "models.big.tensorParallelSize"
    assert "g5.xlarge in pool 'general' has 1 GPUs" in problem.allowed


GATEWAY_SECRETS = {"gatewayMasterKey", "redisAuthToken"}
PROD_SECRETS = {"huggingfaceToken", "grafanaAdminPassword", "pagerdutyRoutingKey", "slackWebhookUrl",
                *GATEWAY_SECRETS, "gatewayKeys.search-app", "gatewayKeys.support-desk", "gatewayKeys.research"}
DEV_SECRETS = {"grafanaAdminPassword", *GATEWAY_SECRETS, "gatewayKeys.dev-team"}


def test_hub_models_need_the_huggingface_token_before_anything_is_created():
    values = stack_values("prod")
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(values), secrets_set=PROD_SECRETS - {"huggingfaceToken"})
    [problem] = raised.value.problems
    assert problem.key == "huggingfaceToken"
    # Only the Hub models are named: the registry ones need no token.
    assert "models llama-8b, llama-70b download from Hugging Face" in problem.allowed
    assert "pulumi config set --secret llm-platform:huggingfaceToken" in problem.allowed
    assert config.parse("prod", raw(values), secrets_set=PROD_SECRETS).models


def test_registry_only_stacks_need_no_token():
    values = stack_values("dev")
    values = _set(values, "models.llama-8b.source", "registry")
    cfg = config.parse("dev", raw(values), secrets_set=DEV_SECRETS)
    assert cfg.models["llama-8b"].source == "registry"


def test_every_missing_secret_is_named_with_the_command_that_sets_it():
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", raw(stack_values("prod")), secrets_set=set())
    problems = {p.key: p.allowed for p in raised.value.problems}
    assert set(problems) == PROD_SECRETS
    for key, allowed in problems.items():
        command = (f"pulumi config set --secret --path 'llm-platform:{key}'" if key.startswith("gatewayKeys.")
                   else f"pulumi config set --secret llm-platform:{key}")
        assert command in allowed, allowed
    assert "monitoring.alerting.pagerduty is on" in problems["pagerdutyRoutingKey"]
    assert "monitoring.alerting.slack is on" in problems["slackWebhookUrl"]


def test_receiver_secrets_are_needed_only_for_receivers_that_are_on():
    values = _set(stack_values("prod"), "monitoring.alerting", {"pagerduty": False, "slack": False})
    cfg = config.parse("prod", raw(values), secrets_set=PROD_SECRETS - {"pagerdutyRoutingKey", "slackWebhookUrl"})
    assert not cfg.monitoring.alerting.pagerduty and not cfg.monitoring.alerting.slack
    # dev has no receivers: Grafana's password, the gateway's secrets and the Hub token for its model suffice.
    assert config.parse("dev", raw(stack_values("dev")), secrets_set=DEV_SECRETS | {"huggingfaceToken"})


def test_the_token_is_a_known_secret_key_not_an_undeclared_one(tmp_path):
    text = (ROOT / "Pulumi.dev.yaml").read_text() + "  llm-platform:huggingfaceToken:\n    secure: AAABAJ0x\n"
    project = _project_copy(tmp_path, text)
    assert config.read_stack_file(project, "test")["llm-platform:huggingfaceToken"] == {"secure": "AAABAJ0x"}


def test_a_tgi_model_that_does_not_fit_is_never_told_to_span_nodes():
    """TGI cannot split a model across nodes (pipelineParallelSize is refused for it), so the fix offered must be
    one it can take; the same model on vLLM may be told to span nodes."""
    values = stack_values("prod")
    values["llm-platform:gpuPools"]["single"]["instanceTypes"] = ["g6e.xlarge"]  # a 48 GB L40S
    problems = [str(p) for p in config_problems(values) if p.key == "models.llama-70b-tgi"]
    assert problems and all("lower maxModelLen (4096 fits)" in p and "span" not in p for p in problems)
    values["llm-platform:models"]["llama-70b-tgi"]["engine"] = "vllm"
    values["llm-platform:models"]["llama-70b-tgi"]["quantization"] = "awq"
    values["llm-platform:models"]["llama-70b-tgi"]["maxModelLen"] = 32768
    problems = [str(p) for p in config_problems(values) if p.key == "models.llama-70b-tgi"]
    assert any("span 2 nodes" in p for p in problems), problems
