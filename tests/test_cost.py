"""The cost model (planning/cost.py) and the cost report `llmctl plan` writes (cost.json, summary)."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace

import pytest

from catalog.instances import INSTANCE_TYPES, on_demand_price, spot_estimate
from catalog.models import MODELS
from planning import cost
from planning.capacity import SizingRequest
from tests.conftest import Rendered

REGION = "us-east-1"


@pytest.mark.parametrize("demand, per_node, nodes", [
    ([], 8, 0),
    ([("a", 1, 1)], 1, 1),
    ([("a", 1, 1), ("b", 1, 1), ("c", 1, 1)], 1, 3),
    ([("a", 4, 1), ("b", 4, 1), ("c", 1, 1)], 8, 2),  # two TP-4 servers of different models fill one node
    ([("a", 4, 2)], 8, 2),  # two of one model: the hostname spread needs two nodes
    ([("a", 4, 4)], 8, 2),  # from the third replica on, they may share
    ([("a", 4, 2), ("c", 1, 2), ("d", 1, 1), ("e", 1, 1), ("f", 1, 1)], 8, 2),
    ([("a", 8, 2)], 8, 2),
    ([("a", 2, 1), ("b", 2, 1), ("c", 2, 1), ("d", 2, 1), ("e", 1, 1)], 4, 3),
    ([("a", 1, 2**31 - 1)], 8, 268_435_456),  # an int32 of replicas: counted, not listed one by one
    ([("a", 3, 5), ("b", 2, 7)], 8, 4),
])
def test_replicas_pack_first_fit_decreasing_spread_and_never_split_across_nodes(demand, per_node, nodes):
    assert cost.nodes_needed(demand, per_node) == nodes


def _one_by_one(demand: list[tuple[str, int, int]], per_node: int) -> int:
    """The packing rule stated replica by replica (what nodes_needed computes a run of nodes at a time)."""
    nodes: list[tuple[int, set[str]]] = []
    for model, gpus in sorted(((m, g) for m, g, n in demand for _ in range(n)), key=lambda r: -r[1]):
        spread = sum(1 for _, models in nodes if model in models) >= 2
        slot = next((i for i, (free, models) in enumerate(nodes) if free >= gpus and (spread or model not in models)),
                    None)
        if slot is None:
            nodes.append((per_node - gpus, {model}))
        else:
            nodes[slot] = (nodes[slot][0] - gpus, nodes[slot][1] | {model})
    return len(nodes)


def test_packing_by_runs_equals_packing_replica_by_replica():
    rng = random.Random(25)
    for _ in range(3000):
        per_node = rng.choice([1, 2, 4, 8])
        demand = [(f"m{i}", rng.choice([g for g in (1, 2, 3, 4, 8) if g <= per_node]), rng.randint(0, 12))
                  for i in range(rng.randint(0, 5))]
        assert cost.nodes_needed(demand, per_node) == _one_by_one(demand, per_node), (demand, per_node)


def test_the_cost_model_prices_int32_replicas_in_bounded_time():
    pool = cost.PoolSpec("small", ["g6.xlarge", "g6.12xlarge", "g6.48xlarge"], spot=True)
    started = time.perf_counter()
    priced = cost.pool_cost(pool, [("a", 1, 2**31 - 1), ("b", 4, 2**31 - 1)], REGION)
    assert time.perf_counter() - started < 1
    assert priced.gpus_used == 5 * (2**31 - 1)


def test_a_pool_takes_its_cheapest_packing_and_prices_spot_only_when_it_may_use_spot():
    pool = cost.PoolSpec("large", ["p4de.24xlarge", "p5.48xlarge"], spot=True)
    replicas = [("llama-70b", 4, 2), ("tgi", 1, 1)]
    chosen = cost.pool_cost(pool, replicas, REGION)
    assert (chosen.instance_type, chosen.nodes, chosen.gpus_used, chosen.gpus_total) == ("p4de.24xlarge", 2, 9, 16)
    assert chosen.usd_per_hour.on_demand == pytest.approx(2 * on_demand_price("p4de.24xlarge", REGION))
    assert chosen.usd_per_hour.spot == pytest.approx(2 * spot_estimate("p4de.24xlarge", REGION))
    assert chosen.idle_usd_per_hour.on_demand == pytest.approx(chosen.usd_per_hour.on_demand * 7 / 16)
    on_demand_only = cost.pool_cost(replace(pool, spot=False), replicas, REGION)
    assert on_demand_only.usd_per_hour.spot == on_demand_only.usd_per_hour.on_demand


def test_small_replicas_go_on_small_nodes_and_big_ones_skip_nodes_too_small():
    pool = cost.PoolSpec("small", ["g6.xlarge", "g6.12xlarge", "g6.48xlarge"], spot=True)
    assert cost.pool_cost(pool, [("a", 1, 2)], REGION).instance_type == "g6.xlarge"
    four = cost.pool_cost(pool, [("b", 4, 1)], REGION)
    assert (four.instance_type, four.nodes) == ("g6.12xlarge", 1)  # g6.xlarge has one GPU
    assert cost.pool_cost(pool, [], REGION).nodes == 0


def request(model: str = "llama-3.1-8b", gpu: str = "L4", **kw) -> SizingRequest:
    arch, instance = MODELS[model], next(t for t in INSTANCE_TYPES.values() if t.gpu == gpu)
    return SizingRequest(arch, instance.gpu_spec.memory_gib, gpu, **kw)


def test_decode_throughput_follows_bandwidth_and_is_capped_by_the_replicas_own_limits():
    base = cost.decode_throughput(request(max_model_len=8192), 300)
    assert cost.decode_throughput(request(max_model_len=8192), 600).tokens_per_second == pytest.approx(
        2 * base.tokens_per_second)
    assert base.concurrency < cost.ASSUMED_CONCURRENCY  # an 8B on a 22 GiB L4 has KV for fewer than 32 x 2000 tokens
    assert cost.decode_throughput(request(max_model_len=8192, max_num_seqs=4), 300).concurrency == 4
    # Fewer sequences per step, fewer tokens per second.
    assert cost.decode_throughput(request(max_model_len=8192, max_num_seqs=4), 300).tokens_per_second < base.tokens_per_second


def test_decode_throughput_matches_the_roofline_by_hand():
    """Llama-3.1-8B bf16: 8.03e9 parameters x 2 bytes; KV 128 KiB per token (32 layers x 8 heads x 128 x 2 x 2)."""
    t = cost.decode_throughput(request("llama-3.1-8b", "H100-80GB", max_model_len=8192), 3350)
    assert t.concurrency == 32
    by_hand = 32 / ((8.03e9 * 2 + 32 * 2000 * 131072) / (3350e9 * 0.6))
    assert t.tokens_per_second == pytest.approx(by_hand, rel=0.02)


def test_price_per_million_tokens_is_the_hourly_price_over_an_hours_tokens():
    price = cost.per_million_tokens(cost.Both(3.60, 1.80), tokens_per_second=1000)
    assert (price.on_demand, price.spot) == (pytest.approx(1.0), pytest.approx(0.5))


FIXED = cost.FixedSpec(region=REGION, nat_gateways=3, system_instance_type="m7i.xlarge", system_nodes=3,
                       load_balancer=True, cache_node_type="cache.r7g.large", cache_engine="valkey", cache_nodes=3,
                       prometheus_gib=400)


@pytest.mark.parametrize("change, item, usd", [
    ({}, "NAT gateways", 3 * 0.045),
    ({"nat_gateways": 1}, "NAT gateways", 0.045),
    ({}, "system nodes", 3 * 0.2016),
    ({}, "Redis (valkey)", 3 * 0.219 * 0.8),
    ({"cache_engine": "redis"}, "Redis (redis)", 3 * 0.219),
    ({}, "load balancer (gateway ALB)", 0.0305),
    ({"load_balancer": False}, "load balancer (gateway ALB)", None),
    ({}, "EKS control plane", 0.10),
    ({}, "Prometheus volumes (gp3)", 400 * 0.08 / 730),
])
def test_fixed_parts_follow_the_stack(change, item, usd):
    lines, unpriced = cost.fixed_lines(replace(FIXED, **change))
    found = {line.item: line for line in lines}
    assert unpriced == []
    if usd is None:
        assert item not in found
    else:
        assert found[item].usd_per_hour == pytest.approx(usd)
        assert found[item].source.startswith("https://aws.amazon.com/") and found[item].checked == "2026-11-24"


def test_a_part_without_a_catalog_price_is_named_and_left_out_not_guessed():
    lines, unpriced = cost.fixed_lines(replace(FIXED, system_instance_type="x9z.huge", cache_node_type="cache.x9.big"))
    assert "system nodes" not in {line.item for line in lines}
    assert unpriced == ["system nodes: no catalog price for x9z.huge", "Redis: no catalog price for cache.x9.big"]
    report = cost.estimate([cost.ModelDemand("m", "p", 1, 1, 1, request())], [cost.PoolSpec("p", ["g7.xlarge"], True)],
                           replace(FIXED, region="eu-west-1"))
    assert "GPU pool p: no catalog price for g7.xlarge in eu-west-1" in report.unpriced
    assert report.gpu_usd_per_hour(1) == cost.ZERO


def test_each_models_share_plus_the_idle_share_is_the_pools_price():
    models = [cost.ModelDemand("a", "large", 4, 2, 4, request("llama-3.1-70b", "A100-80GB", tensor_parallel_size=4,
                                                             max_model_len=8192)),
              cost.ModelDemand("b", "large", 1, 1, 2, request("llama-3.1-8b", "A100-80GB", max_model_len=8192))]
    report = cost.estimate(models, [cost.PoolSpec("large", ["p4de.24xlarge"], True)], FIXED)
    for at in (0, 1):
        (pool,) = report.pools[at]
        shares = sum((m.gpu_usd_per_hour[at] for m in report.models), cost.ZERO) + pool.idle_usd_per_hour
        assert shares.on_demand == pytest.approx(pool.usd_per_hour.on_demand)
        assert shares.spot == pytest.approx(pool.usd_per_hour.spot)
    assert report.total_usd_per_hour(1).on_demand == pytest.approx(
        report.gpu_usd_per_hour(1).on_demand + sum(line.usd_per_hour for line in report.fixed))


# The rendered report ------------------------------------------------------------------------------------------------

def cost_json(stack: Rendered) -> dict:
    return json.loads((stack.out / "cost.json").read_text())


def test_cost_json_totals_add_up_and_months_are_730_hours(stack: Rendered):
    report = cost_json(stack)
    fixed = sum(line["usdPerHour"] for line in report["fixed"])
    for at in ("min", "max"):
        total, gpu = report["totals"][at], report["gpuNodes"][at]
        for kind in ("onDemand", "spot"):
            assert total["perHour"][kind] == pytest.approx(gpu["perHour"][kind] + fixed, abs=0.01)
            assert total["perMonth"][kind] == pytest.approx(total["perHour"][kind] * 730, rel=0.001)
        pools = [p for p in report["gpuPools"] if p["at"] == at]
        assert gpu["perHour"]["onDemand"] == pytest.approx(sum(p["usdPerHour"]["onDemand"] for p in pools), abs=0.01)
    assert report["totals"]["max"]["perHour"]["onDemand"] >= report["totals"]["min"]["perHour"]["onDemand"]


def test_every_price_names_its_source_and_date(stack: Rendered):
    report = cost_json(stack)
    assert all(line["source"].startswith("https://") and line["checked"] for line in report["fixed"])
    assert report["gpuPriceSources"]["onDemand"].startswith("https://aws.amazon.com/ec2/pricing")
    assert "estimate" in report["gpuPriceSources"]["spot"] and report["gpuPriceSources"]["checked"]
    assert report["unpriced"] == []
    assert any("memory-bound decode" in a and "tokens of context" in a for a in report["assumptions"])


def test_prod_report_prices_each_part_of_the_stack(prod: Rendered):
    report = cost_json(prod)
    items = {line["item"]: line for line in report["fixed"]}
    assert items["NAT gateways"]["quantity"] == "3"  # natGateways perAz, 3 AZs
    assert items["system nodes"]["quantity"] == "3 x m7i.xlarge"
    assert items["Redis (valkey)"]["quantity"] == "3 x cache.r7g.large"
    assert "load balancer (gateway ALB)" in items
    models = {m["model"]: m for m in report["models"]}
    assert models["llama-405b-fp8"]["replicas"] == {"min": 1, "max": 2}
    assert models["llama-405b-fp8"]["gpuUsdPerHour"]["min"]["onDemand"] == pytest.approx(
        on_demand_price("p5.48xlarge", REGION), abs=0.01)  # one replica fills one p5.48xlarge
    # A multi-node replica is priced as its nodes: two whole p5.48xlarge, on-demand only (its pool has no spot).
    assert models["llama-405b-bf16"]["gpusPerReplica"] == 16
    assert models["llama-405b-bf16"]["gpuUsdPerHour"]["max"]["onDemand"] == pytest.approx(
        2 * 2 * on_demand_price("p5.48xlarge", REGION), abs=0.01)
    assert models["llama-405b-bf16"]["gpuUsdPerHour"]["min"]["onDemand"] == 0  # scales to zero
    for key, m in models.items():
        assert m["assumedThroughput"]["generatedTokensPerSecondPerReplica"] > 0
        spot, on_demand = m["usdPerMillionGeneratedTokens"]["spot"], m["usdPerMillionGeneratedTokens"]["onDemand"]
        if prod.config.gpu_pools[prod.config.models[key].gpu_pool].capacity_types == ["on-demand"]:
            assert 0 < spot == on_demand, key
        else:
            assert 0 < spot < on_demand, key
    assert "total at min replicas" in prod.stdout and "per M tokens at" in prod.stdout


def test_dev_has_no_load_balancer_and_one_nat_gateway(dev: Rendered):
    items = {line["item"]: line for line in cost_json(dev)["fixed"]}
    assert "load balancer (gateway ALB)" not in items  # gateway.ingress.enabled is false in dev
    assert items["NAT gateways"]["quantity"] == "1"


# Idle GPUs ----------------------------------------------------------------------------------------------------------

def _large_pool(seventy_tp: int, tgi_pool: str = "large") -> tuple[list[cost.ModelDemand], cost.CostReport]:
    """The prod stack's `large` pool as it was: two to four TP-4 70B servers and one or two 1-GPU TGI servers on
    8-GPU p4de nodes."""
    models = [cost.ModelDemand("llama-70b", "large", seventy_tp, 2, 4,
                               request("llama-3.1-70b", "A100-80GB", tensor_parallel_size=seventy_tp,
                                       max_model_len=32768)),
              cost.ModelDemand("llama-70b-tgi", tgi_pool, 1, 1, 2,
                               request("llama-3.1-70b", "H100-80GB", quantization="bitsandbytes-nf4",
                                       max_model_len=8192))]
    pools = [cost.PoolSpec("large", ["p4de.24xlarge", "p5.48xlarge"], True), cost.PoolSpec("single", ["p5.4xlarge"], True)]
    return models, cost.estimate(models, pools, FIXED)


def test_a_pool_that_idles_more_than_its_share_is_warned_at_min_and_max_with_its_price_and_the_fix():
    models, report = _large_pool(4)
    warnings = cost.idle_warnings(report, models, {"large": 0.25, "single": 0.25})
    assert [(w.pool, w.at, w.instance_type, w.idle_gpus, w.gpus) for w in warnings] == [
        ("large", "min", "p4de.24xlarge", 7, 16), ("large", "max", "p4de.24xlarge", 14, 32)]
    node = on_demand_price("p4de.24xlarge", REGION)
    assert warnings[0].idle_usd_per_hour.on_demand == pytest.approx(2 * node * 7 / 16)  # $24.02/h: the figure
    assert warnings[1].idle_usd_per_hour.spot == pytest.approx(4 * spot_estimate("p4de.24xlarge", REGION) * 14 / 32)
    fix = warnings[0].fix
    assert "8 GPUs" in fix and "llama-70b (4 GPUs)" in fix and "llama-70b-tgi (1 GPU)" in fix
    assert "tensorParallelSize 8" in fix and "gpuPools.large.maxIdleGpuShare" in fix


@pytest.mark.parametrize("share, warned", [(0.43, True), (0.44, False), (1.0, False), (0.0, True)])
def test_the_threshold_is_the_pools_own_and_compares_the_idle_share(share, warned):
    models, report = _large_pool(4)
    at_min = [w for w in cost.idle_warnings(report, models, {"large": share, "single": 0.25}) if w.at == "min"]
    assert bool(at_min) is warned  # 7 of 16 idle is 43.75%


def test_whole_node_replicas_and_a_small_model_on_its_own_small_nodes_idle_nothing():
    models, report = _large_pool(8, tgi_pool="single")
    assert cost.idle_warnings(report, models, {"large": 0.0, "single": 0.0}) == []
    assert [(p.pool, p.gpus_used, p.gpus_total) for p in report.pools[0]] == [("large", 16, 16), ("single", 1, 1)]


def test_prod_idles_no_pool_above_its_threshold_and_dev_says_nothing_either(stack: Rendered):
    assert cost_json(stack)["idleGpuWarnings"] == []
    assert "idles" not in stack.stdout
    for pool in cost_json(stack)["gpuPools"]:
        share = stack.config.gpu_pools[pool["pool"]].max_idle_gpu_share
        assert pool["gpus"] - pool["gpusUsed"] <= share * pool["gpus"], pool


def test_plan_prints_the_warning_and_cost_json_carries_it():
    import config as config_module
    from llmctl import cost as cost_report
    from tests.conftest import raw, stack_values

    values = stack_values("prod")
    models = values["llm-platform:models"]
    models["llama-70b"]["tensorParallelSize"] = 4
    models["llama-70b-tgi"]["gpuPool"] = "large"
    cfg = config_module.parse("prod", raw(values))
    report = cost_report.report(cfg)
    lines = cost_report.idle_warning_lines(cfg, report)
    assert lines == [line for line in lines if line.startswith("warning: gpuPools.large idles ")]
    assert [line.split(" GPUs at ")[0] for line in lines] == [
        "warning: gpuPools.large idles 7 of its 16", "warning: gpuPools.large idles 14 of its 32"]
    assert "$24.02/h on-demand" in lines[0] and "maxIdleGpuShare 25%" in lines[0]
    as_json = cost_report.as_json("prod", report, cost_report.idle_warnings(cfg, report))
    assert [(w["pool"], w["at"], w["idleGpus"]) for w in as_json["idleGpuWarnings"]] == [
        ("large", "min", 7), ("large", "max", 14)]


def test_max_idle_gpu_share_outside_zero_to_one_is_refused_with_its_key():
    from tests.conftest import config_problems, stack_values
    values = stack_values("prod")
    values["llm-platform:gpuPools"]["large"]["maxIdleGpuShare"] = 1.5
    values["llm-platform:gpuPools"]["small"]["maxIdleGpuShare"] = "lots"
    problems = {p.key: str(p) for p in config_problems(values)}
    assert "got 1.5" in problems["gpuPools.large.maxIdleGpuShare"]
    assert "must be at most 1.0" in problems["gpuPools.large.maxIdleGpuShare"]
    assert "got 'lots'" in problems["gpuPools.small.maxIdleGpuShare"]
