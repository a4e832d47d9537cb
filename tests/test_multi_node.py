"""Models across nodes: config checks, the planner's pipeline-parallel sizing (and the published configurations it
must agree with), the LeaderWorkerSet with its leader and worker, the network between a group's pods, EFA and
placement groups, autoscaling by whole groups, and the price of a group. The real vLLM checks are in
`make test-upstream` (tests/upstream/stage_memory.py, vllm_args.py) and `make e2e` (tests/e2e/check_multi_node.py)."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

import config
from catalog.gpus import GPUS
from catalog.instances import efa_interfaces
from catalog.models import MODELS
from components.compute.efa_device_plugin import efa_plugin_values
from components.compute.gpu_node_pool import EFA_LABEL, GPU_TAINT, efa_security_group_rules, node_class_spec
from components.edge.network_policy import Peer, serving_policies
from components.serving import leader_worker_set as lws
from components.serving import model_server
from components.serving.keda_scaler import scale_target
from components.serving.replica_router import router_args
from components.serving.vllm_service import VllmService
from llmctl import size as llmctl_size
from planning import capacity
from tests import crd_schema, planner_accuracy
from tests.conftest import ROOT, Rendered, stack_values
from tests.conftest import config_problems as problems

KEYS = {key: f"llm-platform:{key}" for key in config.KEYS}
SPLIT = "llama-405b-bf16"
"""Prod's multi-node model: two p5.48xlarge, pipeline parallel 2, tensor parallel 8."""


def prod_with(change) -> dict:
    values = copy.deepcopy(stack_values("prod"))
    change(values[KEYS["models"]], values[KEYS["gpuPools"]])
    return values


def prod_model(key: str = SPLIT) -> tuple[config.ModelDeployment, config.GpuPool]:
    cfg = config.load_stack_file(ROOT, "prod")
    return cfg.models[key], cfg.gpu_pools[cfg.models[key].gpu_pool]


# Config ---------------------------------------------------------------------------------------------------------

BAD = [
    ("TGI across nodes", lambda ms, ps: ms["llama-70b-tgi"].update(pipelineParallelSize=2),
     "models.llama-70b-tgi.pipelineParallelSize", "applies only to engine: vllm"),
    ("a pool with other GPU counts", lambda ms, ps: ps["multinode"].update(instanceTypes=["p5.48xlarge", "p5.4xlarge"]),
     "models.llama-405b-bf16.pipelineParallelSize", "remove p5.4xlarge (1 GPUs)"),
    ("adapters on a multi-node model", lambda ms, ps: ms[SPLIT].update(adapters={"a": {"checkpoint": "o/a", "rank": 8}}),
     "models.llama-405b-bf16.adapters", "serves no adapters yet"),
    ("EFA on types without it", lambda ms, ps: ps["small"].update(efa=True), "gpuPools.small.efa",
     "cannot attach EFA"),
    ("more stages than the ceiling", lambda ms, ps: ms[SPLIT].update(pipelineParallelSize=9),
     "models.llama-405b-bf16.pipelineParallelSize", "8"),
    ("stages as text", lambda ms, ps: ms[SPLIT].update(pipelineParallelSize="two"),
     "models.llama-405b-bf16.pipelineParallelSize", "whole number"),
    ("groups beyond the pool's GPUs", lambda ms, ps: ms[SPLIT].update(maxReplicas=3),
     "models.llama-405b-bf16.maxReplicas", "3 replicas x tensorParallelSize 8 x pipelineParallelSize 2 need 48 GPUs"),
    ("one node cannot hold bf16 405B", lambda ms, ps: ms[SPLIT].update(pipelineParallelSize=1),
     "models.llama-405b-bf16", "span 2 nodes: tensorParallelSize 8 with pipelineParallelSize 2"),
    ("extraArgs set the group", lambda ms, ps: ms[SPLIT].update(extraArgs=["--nnodes", "4"]),
     "models.llama-405b-bf16.extraArgs", "pipelineParallelSize"),
    ("extraArgs make a worker", lambda ms, ps: ms["llama-8b"].update(extraArgs=["--headless"]),
     "models.llama-8b.extraArgs", "a multi-node replica's workers"),
]


@pytest.mark.parametrize(("change", "key", "text"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_multi_node_config_is_refused_by_key_with_what_is_allowed(change, key, text):
    found = problems(prod_with(change))
    matching = [p for p in found if p.key == key]
    assert matching, [str(p) for p in found]
    assert any(text in str(p) for p in matching), [str(p) for p in matching]


def test_multi_node_problems_are_reported_together():
    def several(models, pools):
        models["llama-70b-tgi"]["pipelineParallelSize"] = 2
        pools["small"]["efa"] = True
        models[SPLIT]["maxReplicas"] = 3
    keys = {p.key for p in problems(prod_with(several))}
    assert {"models.llama-70b-tgi.pipelineParallelSize", "gpuPools.small.efa", "models.llama-405b-bf16.maxReplicas"} <= keys


def test_a_group_is_its_stages_nodes():
    m, _ = prod_model()
    assert (m.multi_node, m.nodes_per_replica, m.gpus_per_replica) == (True, 2, 16)
    single, _ = prod_model("llama-405b-fp8")
    assert (single.multi_node, single.nodes_per_replica, single.gpus_per_replica) == (False, 1, 8)


# Planner --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("layers", "stages", "split"), [
    (126, 2, [63, 63]),
    (80, 3, [27, 27, 26]),      # the remainder goes to the stages before the last, from the second-to-last back
    (10, 4, [2, 3, 3, 2]),
    (8, 3, [3, 3, 2]),          # the bench checkpoint of tests/upstream/stage_memory.py, as vLLM measured it
    (2, 2, [1, 1]),
    (7, 1, [7]),
])
def test_layers_are_split_across_stages_as_vllm_does(layers, stages, split):
    assert capacity.stage_layers(layers, stages) == split


@pytest.mark.parametrize("model", ["llama-3.1-405b", "llama-3.1-70b", "qwen2.5-7b", "gemma-2-9b"])
@pytest.mark.parametrize("stages", [2, 3, 4])
def test_stages_hold_the_whole_model_once_with_the_embedding_first_and_the_head_last(model, stages):
    m = MODELS[model]
    split = capacity.stages(m, stages)
    whole = capacity.weights_bytes_per_gpu(m, 8, 2, "none")
    rope = m.max_position_embeddings * m.head_size * 2  # every stage keeps its own rotary cache
    vocab = capacity._parameters(m, 8)["vocab_matrix"] * 2
    extra = vocab if m.tie_word_embeddings else 0  # tied: the last stage keeps its own copy for the head
    parts = sum(capacity.weights_bytes_per_gpu(m, 8, 2, "none", s) for s in split)
    assert parts == pytest.approx(whole + (stages - 1) * rope + extra, abs=8)
    assert [s.first for s in split] == [True] + [False] * (stages - 1)
    assert [s.last for s in split] == [False] * (stages - 1) + [True]
    assert [capacity.vocab_copies(m, s) for s in split] == [1] + [0] * (stages - 2) + [1]


def test_the_replica_holds_as_many_tokens_as_its_tightest_stage():
    """Stages with the same GPUs: the last carries the head and the sampler's peak, so with an even split it has the
    least room; vLLM gives every stage that many blocks."""
    g = GPUS["H100-80GB"]
    req = capacity.SizingRequest(MODELS["llama-3.1-405b"], g.memory_gib, g.name, tensor_parallel_size=8,
                                 pipeline_parallel_size=2, max_model_len=32768)
    sized = [capacity._size_stage(req, i, s) for i, s in enumerate(capacity.stages(req.model, 2))]
    whole = capacity.size(req)
    assert whole.kv_cache_tokens == min(s.kv_cache_tokens for s in sized) < max(s.kv_cache_tokens for s in sized)
    assert (whole.stage, whole.stage_layers) == (1, (63, 63))
    assert sized[1].activation_gib_per_gpu > sized[0].activation_gib_per_gpu  # the sampler runs on the last only
    assert whole.kv_bytes_per_token_per_gpu == capacity.kv_bytes_per_token(req.model, 2, 8, 63)


def test_pipeline_parallelism_is_what_makes_bf16_405b_fit_on_80_gb_gpus():
    g = GPUS["H100-80GB"]
    req = capacity.SizingRequest(MODELS["llama-3.1-405b"], g.memory_gib, g.name, tensor_parallel_size=8,
                                 max_model_len=32768)
    assert not capacity.size(req).fits
    # Both ways out: the cheaper one first, and the one that keeps the bf16 weights.
    assert capacity.suggestion(req, 8) == ("quantize the weights (fp8), or span 2 nodes: tensorParallelSize 8 with "
                                           "pipelineParallelSize 2")
    bf16_only = capacity.SizingRequest(MODELS["llama-3.1-405b-fp8"], 40.0, "small", tensor_parallel_size=8,
                                       max_model_len=32768)
    assert capacity.suggestion(bf16_only, 8).startswith("span ")
    assert capacity.size(capacity.SizingRequest(**{**req.__dict__, "pipeline_parallel_size": 2})).fits


@pytest.mark.parametrize("stages", [0, 127])
def test_a_stage_count_outside_the_models_layers_is_refused(stages):
    req = capacity.SizingRequest(MODELS["llama-3.1-405b"], 80.0, tensor_parallel_size=8, pipeline_parallel_size=stages)
    [problem] = capacity.validate(req)
    assert problem.field == "pipeline_parallel_size" and "126 decoder layers" in problem.why


@pytest.mark.parametrize("record", planner_accuracy.MULTI_NODE, ids=[r["id"] for r in planner_accuracy.MULTI_NODE])
def test_the_planner_agrees_with_published_multi_node_configurations(record):
    assert record["source"].startswith("https://")
    sizing = capacity.size(planner_accuracy.multi_node_request(record))
    assert sizing.fits == record["runs"], sizing.reason


def test_llmctl_size_sizes_a_stage_and_recommends_groups_priced_as_their_nodes(capsys):
    parser = __import__("argparse").ArgumentParser()
    llmctl_size.add_arguments(parser)
    table = llmctl_size.run(parser.parse_args(["--model", "llama-3.1-405b", "--gpu", "H100-80GB", "--tp", "8",
                                               "--pp", "2", "--max-model-len", "32768"]))
    assert "2 stages (nodes), layers [63, 63]" in table and "fits                 yes" in table
    with pytest.raises(llmctl_size.UsageError, match="--pp 200: must be from 1 to llama-3.1-405b's 126"):
        llmctl_size.run(parser.parse_args(["--model", "llama-3.1-405b", "--gpu", "H100-80GB", "--pp", "200"]))
    options = json.loads(llmctl_size.run(parser.parse_args(["--model", "llama-3.1-405b", "--recommend",
                                                            "--max-model-len", "32768", "--json"])))
    by_type = {o["instance_type"]: o for o in options}
    p5 = by_type["p5.48xlarge"]
    assert (p5["tensor_parallel_size"], p5["pipeline_parallel_size"]) == (8, 2)
    assert p5["on_demand_usd_per_hour"] == pytest.approx(2 * 55.04)
    assert by_type["p5e.48xlarge"]["pipeline_parallel_size"] == 1  # H200 holds it on one node
    assert all(o["pipeline_parallel_size"] == 1 or efa_interfaces(o["instance_type"]) for o in options)


# Serving --------------------------------------------------------------------------------------------------------

def group(prod: Rendered) -> dict:
    [lws_manifest] = [m for m in prod.kind("LeaderWorkerSet") if m["metadata"]["name"] == SPLIT]
    return lws_manifest


def containers(manifest: dict) -> tuple[dict, dict]:
    templates = manifest["spec"]["leaderWorkerTemplate"]
    return (templates["leaderTemplate"]["spec"]["containers"][0],
            templates["workerTemplate"]["spec"]["containers"][0])


def test_the_group_validates_against_the_upstream_crd(prod: Rendered):
    manifest = group(prod)
    assert crd_schema.problems(manifest) == []
    broken = copy.deepcopy(manifest)
    broken["spec"]["leaderWorkerTemplate"]["restartPolicy"] = "RecreateGroupAlways"
    assert any("restartPolicy" in p for p in crd_schema.problems(broken))
    broken = copy.deepcopy(manifest)
    broken["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["portz"] = []
    assert crd_schema.problems(broken)


def test_the_group_starts_together_restarts_whole_and_rolls_one_new_group_first(prod: Rendered):
    spec = group(prod)["spec"]
    template = spec["leaderWorkerTemplate"]
    assert (template["size"], template["restartPolicy"], spec["startupPolicy"]) == (
        2, "RecreateGroupOnPodRestart", "LeaderCreated")
    assert spec["rolloutStrategy"]["rollingUpdateConfiguration"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert spec["replicas"] == 0  # minReplicas 0: created asleep, woken by the gateway trigger


def test_leader_and_worker_run_one_command_with_their_own_rank(prod: Rendered):
    leader, worker = containers(group(prod))
    def value(args, flag):
        return args[args.index(flag) + 1]
    for args in (leader["args"], worker["args"]):
        assert (value(args, "--pipeline-parallel-size"), value(args, "--nnodes"), value(args, "--tensor-parallel-size"),
                value(args, "--distributed-executor-backend")) == ("2", "2", "8", "mp")
        assert value(args, "--master-addr") == "$(LWS_LEADER_ADDRESS)"
        assert value(args, "--master-port") == str(lws.MASTER_PORT)
    assert value(leader["args"], "--node-rank") == "0" and "--headless" not in leader["args"]
    assert value(worker["args"], "--node-rank") == "$(LWS_WORKER_INDEX)" and worker["args"][-1] == "--headless"
    assert [a for a in leader["args"] if a not in ("0", "--headless")] == \
           [a for a in worker["args"] if a not in ("$(LWS_WORKER_INDEX)", "--headless")]
    assert leader["image"] == worker["image"] and leader["resources"] == worker["resources"]


def test_only_the_leader_serves_http_probes_and_metrics(prod: Rendered):
    manifest = group(prod)
    leader, worker = containers(manifest)
    assert leader["ports"][0]["name"] == "http" and "startupProbe" in leader and "readinessProbe" in leader
    assert not {"ports", "startupProbe", "readinessProbe", "livenessProbe"} & set(worker)
    templates = manifest["spec"]["leaderWorkerTemplate"]
    assert templates["leaderTemplate"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert "prometheus.io/scrape" not in templates["workerTemplate"]["metadata"]["annotations"]
    [service] = [s for s in prod.kind("Service") if s["metadata"]["name"] == SPLIT]
    assert service["spec"]["selector"][lws.WORKER_INDEX_LABEL] == "0"
    m, _ = prod_model()
    terms = router_args(SPLIT, m, 300)
    assert f"{lws.WORKER_INDEX_LABEL}=0" in terms[terms.index("--selector") + 1:]


def test_the_startup_budget_covers_a_second_node_launch():
    m, _ = prod_model()
    single = m.model_copy(update={"pipeline_parallel_size": 1})
    assert model_server.startup_budget_seconds(m) == (model_server.startup_budget_seconds(single)
                                                      + model_server.NODE_LAUNCH_SECONDS)


def test_no_pod_of_a_group_may_be_evicted_voluntarily(prod: Rendered):
    [pdb] = [p for p in prod.kind("PodDisruptionBudget") if p["metadata"]["name"] == SPLIT]
    assert pdb["spec"]["maxUnavailable"] == 0
    assert pdb["spec"]["selector"]["matchLabels"] == model_server.selector(SPLIT)  # leaders and workers
    for template in group(prod)["spec"]["leaderWorkerTemplate"].values():
        if isinstance(template, dict) and "metadata" in template:
            assert template["metadata"]["annotations"][model_server.DO_NOT_DISRUPT] == "true"
    [other] = [p for p in prod.kind("PodDisruptionBudget") if p["metadata"]["name"] == "llama-70b"]
    assert other["spec"]["maxUnavailable"] == 1


def test_a_groups_pods_share_its_leaders_zone_and_take_every_efa_adapter(prod: Rendered):
    manifest = group(prod)
    for name in ("leaderTemplate", "workerTemplate"):
        pod = manifest["spec"]["leaderWorkerTemplate"][name]["spec"]
        [term] = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "topology.kubernetes.io/zone"
        assert term["matchLabelKeys"] == [lws.GROUP_KEY_LABEL]
        assert term["labelSelector"]["matchLabels"] == {lws.SET_NAME_LABEL: SPLIT}
        assert "topologySpreadConstraints" not in pod
        resources = pod["containers"][0]["resources"]
        assert resources["limits"][model_server.EFA_RESOURCE] == resources["requests"][model_server.EFA_RESOURCE] == "32"
    # A single-node model on a pool without EFA asks for none.
    [fp8] = [d for d in prod.kind("Deployment") if d["metadata"]["name"] == "llama-405b-fp8"]
    assert model_server.EFA_RESOURCE not in fp8["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_the_group_scales_whole_through_its_scale_subresource(prod: Rendered):
    [scaled] = [o for o in prod.kind("ScaledObject") if o["metadata"]["name"] == SPLIT]
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": lws.API_VERSION, "kind": "LeaderWorkerSet", "name": SPLIT}
    assert crd_schema.problems(scaled) == []
    single, _ = prod_model("llama-70b")
    assert scale_target("llama-70b", single)["kind"] == "Deployment"


def test_the_lws_controller_is_pinned_and_installed_only_with_a_multi_node_model(prod: Rendered, dev: Rendered):
    release = prod.releases["lws"]
    assert (release["chart"], release["version"]) == ("oci://registry.k8s.io/lws/charts/lws", "0.10.0")
    assert release["values"]["image"]["manager"] == {"tag": "v0.10.0", "pullPolicy": "IfNotPresent"}
    assert "lws" not in dev.releases and not dev.kind("LeaderWorkerSet")


# Network between the nodes ----------------------------------------------------------------------------------------

def test_a_groups_pods_admit_each_other_on_every_tcp_port_and_nobody_else_does(prod: Rendered):
    policies = {p["metadata"]["name"]: p["spec"] for p in prod.kind("NetworkPolicy")}
    spec = policies[f"allow-group-{SPLIT}"]
    group_pods = {"matchLabels": {lws.SET_NAME_LABEL: SPLIT}}
    assert spec["podSelector"] == group_pods
    assert spec["ingress"] == [{"from": [{"podSelector": group_pods}], "ports": [{"protocol": "TCP"}]}]
    assert not any(name.startswith("allow-group-") for name in policies if name != f"allow-group-{SPLIT}")
    # No other policy opens anything but the API port to a model server.
    plain = serving_policies(Peer("monitoring", {"app": "prometheus"}), routed=[])
    assert not any(name.startswith("allow-group-") for name in plain)


def test_an_efa_pool_gets_a_self_only_security_group_a_placement_group_and_the_plugin(prod: Rendered):
    groups = prod.of_type("aws:ec2/securityGroup:SecurityGroup")
    [efa] = [g for g in groups if g["name"].endswith("-efa")]
    for direction in ("ingress", "egress"):
        assert efa["inputs"][direction] == [{"protocol": "-1", "fromPort": 0, "toPort": 0, "self": True}]
    assert efa_security_group_rules()["ingress"][0]["self"] is True
    [placement] = prod.of_type("aws:ec2/placementGroup:PlacementGroup")
    assert placement["inputs"]["strategy"] == "cluster"
    classes = {c["metadata"]["name"]: c["spec"] for c in prod.kind("EC2NodeClass")}
    assert classes["multinode"]["placementGroupSelector"] == {"name": placement["inputs"]["name"]}
    [efa_term] = classes["multinode"]["securityGroupSelectorTerms"][1:]
    assert efa_term["id"].startswith("sg-")  # the EFA group's id, beside the cluster's discovery tag
    assert "placementGroupSelector" not in classes["quality"] and len(classes["quality"]["securityGroupSelectorTerms"]) == 1
    pools = {p["metadata"]["name"]: p for p in prod.kind("NodePool")}
    assert pools["multinode-on-demand"]["spec"]["template"]["metadata"]["labels"][EFA_LABEL] == "true"
    values = prod.releases["aws-efa-k8s-device-plugin"]["values"]
    assert values["nodeSelector"] == {EFA_LABEL: "true"}
    assert {"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]} in efa_plugin_values()["tolerations"]


def test_node_class_without_efa_or_placement_is_unchanged():
    _, pool = prod_model("llama-8b")
    spec = node_class_spec(pool, cluster_name="c", node_role="r", tags={})
    assert "placementGroupSelector" not in spec and len(spec["securityGroupSelectorTerms"]) == 1


# Cost and plan --------------------------------------------------------------------------------------------------

def test_the_plan_lists_the_group_with_its_nodes_network_and_price(prod: Rendered):
    line = next(line for line in prod.stdout.splitlines() if line.startswith(f"  {SPLIT}: "))
    assert "2 nodes x 8 GPUs (p5.48xlarge), layers per node [63, 63]" in line
    assert "EFA x32 per node; one cluster placement group" in line
    assert "$110.08/h per group on demand" in line
    assert f"{SPLIT:<24} llm-inference  vllm multinode 16 GPU (2 nodes x 8)" in prod.stdout


def test_the_plan_warns_of_a_multi_node_model_on_spot(tmp_path):
    from tests.stack_files import plan, scratch_project

    values = prod_with(lambda ms, ps: ps["multinode"].update(capacityTypes=["spot", "on-demand"]))
    run = plan(scratch_project(tmp_path), yaml.safe_dump({"config": values}))
    assert run.code == 0, run.stderr
    assert (f"note: models.{SPLIT} spans 2 nodes on pool 'multinode', which runs spot first: a reclaim of any node of "
            "a group takes the whole group down") in run.stdout


def test_the_rendered_worker_args_equal_what_the_group_spec_builds():
    """The e2e run starts the same containers this builds (tests/e2e/stack.py group_containers)."""
    m, pool = prod_model()
    args = model_server.ModelServerArgs(key=SPLIT, deployment=m, pool=pool, region="us-east-1", registry_bucket="b",
                                        token_secret=None, depends_on=[])
    container, init = VllmService.pod_parts(args, "b")
    pod = model_server.pod_spec(args, container, init, 10)
    spec = model_server.group_spec(args, pod, VllmService.PORT)
    worker = spec["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]
    assert worker == lws.worker_container(spec["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0])
