"""`llmctl plan`'s cost report: the stack's configuration as the cost model's inputs (planning/cost.py), and its
answer as cost.json and the summary's table."""

from __future__ import annotations

from typing import Any

import config
from catalog.instances import ON_DEMAND_SOURCE, PRICES_CHECKED, SPOT_SOURCE, types_in_pool
from components.serving.model_server import min_servers
from config.checks import sizing_request
from planning import cost

AT = ("min", "max")


def demands(cfg: config.StackConfig) -> list[cost.ModelDemand]:
    return [cost.ModelDemand(key, m.gpu_pool, m.gpus_per_replica, min_servers(m), m.max_replicas, sizing_request(m),
                             m.nodes_per_replica)
            for key, m in sorted(cfg.models.items())]


def idle_warnings(cfg: config.StackConfig, r: cost.CostReport) -> list[cost.IdleWarning]:
    return cost.idle_warnings(r, demands(cfg), {key: p.max_idle_gpu_share for key, p in cfg.gpu_pools.items()})


def idle_warning_lines(cfg: config.StackConfig, r: cost.CostReport) -> list[str]:
    return [f"warning: gpuPools.{w.pool} idles {w.idle_gpus} of its {w.gpus} GPUs at {w.at} replicas "
            f"(${w.idle_usd_per_hour.on_demand:,.2f}/h on-demand, ${w.idle_usd_per_hour.spot:,.2f}/h spot; more than "
            f"maxIdleGpuShare {cfg.gpu_pools[w.pool].max_idle_gpu_share:.0%}): {w.fix}"
            for w in idle_warnings(cfg, r)]


def report(cfg: config.StackConfig) -> cost.CostReport:
    models = demands(cfg)
    pools = [cost.PoolSpec(key, [t.name for t in types_in_pool(p.instance_families, p.instance_types)],
                           "spot" in p.capacity_types)
             for key, p in sorted(cfg.gpu_pools.items())]
    c = cfg.cluster
    fixed = cost.FixedSpec(
        region=c.region,
        nat_gateways=1 if c.nat_gateways == "single" else c.availability_zones,
        # A managed node group launches its first instance type while it is available.
        system_instance_type=c.system_node_group.instance_types[0],
        system_nodes=c.system_node_group.desired_size,
        load_balancer=cfg.gateway.ingress.enabled,
        cache_node_type=cfg.redis.node_type, cache_engine=cfg.redis.engine, cache_nodes=1 + cfg.redis.replicas,
        prometheus_gib=cfg.monitoring.replicas * cfg.monitoring.storage_gib,
    )
    return cost.estimate(models, pools, fixed)


def _both(value: cost.Both, digits: int = 4) -> dict[str, float]:
    """Hourly prices to four decimals (a NAT gateway is $0.045), monthly ones to cents."""
    return {"onDemand": round(value.on_demand, digits), "spot": round(value.spot, digits)}


def _hour_and_month(value: cost.Both) -> dict[str, Any]:
    return {"perHour": _both(value), "perMonth": _both(value.times(cost.HOURS_PER_MONTH), 2)}


def as_json(stack: str, r: cost.CostReport, warnings: list[cost.IdleWarning]) -> dict[str, Any]:
    return {
        "stack": stack,
        "region": r.region,
        "currency": "USD",
        "hoursPerMonth": cost.HOURS_PER_MONTH,
        "totals": {at: _hour_and_month(r.total_usd_per_hour(i)) for i, at in enumerate(AT)},
        "gpuNodes": {at: _hour_and_month(r.gpu_usd_per_hour(i)) for i, at in enumerate(AT)},
        "gpuPriceSources": {"onDemand": ON_DEMAND_SOURCE, "spot": SPOT_SOURCE, "checked": PRICES_CHECKED},
        "fixed": [{"item": line.item, "quantity": line.quantity, "usdPerHour": round(line.usd_per_hour, 4),
                   "usdPerMonth": round(line.usd_per_hour * cost.HOURS_PER_MONTH, 2), "source": line.source,
                   "checked": line.checked} for line in r.fixed],
        "gpuPools": [{"pool": p.pool, "at": at, "instanceType": p.instance_type, "nodes": p.nodes,
                      "gpusUsed": p.gpus_used, "gpus": p.gpus_total, "usdPerHour": _both(p.usd_per_hour),
                      "idleUsdPerHour": _both(p.idle_usd_per_hour)}
                     for i, at in enumerate(AT) for p in r.pools[i]],
        "models": [{
            "model": m.key, "pool": m.pool, "gpusPerReplica": m.gpus_per_replica,
            "replicas": dict(zip(AT, m.replicas, strict=True)),
            "gpuUsdPerHour": {at: _both(m.gpu_usd_per_hour[i]) for i, at in enumerate(AT)},
            "assumedThroughput": None if m.throughput is None else {
                "gpu": m.throughput.gpu, "concurrentSequences": m.throughput.concurrency,
                "generatedTokensPerSecondPerReplica": round(m.throughput.tokens_per_second, 1)},
            "usdPerMillionGeneratedTokens": None if m.usd_per_million_tokens is None else _both(m.usd_per_million_tokens),
        } for m in r.models],
        "assumptions": assumptions(),
        "excluded": cost.EXCLUDED,
        "unpriced": r.unpriced,
        "idleGpuWarnings": [{"pool": w.pool, "at": w.at, "instanceType": w.instance_type, "idleGpus": w.idle_gpus,
                             "gpus": w.gpus, "idleUsdPerHour": _both(w.idle_usd_per_hour), "fix": w.fix}
                            for w in warnings],
    }


def assumptions() -> list[str]:
    return [
        "GPU nodes: each pool's replicas packed first-fit-decreasing onto its cheapest instance type; 'spot' prices "
        "every spot-capable pool at the catalog's spot estimate, 'onDemand' is the fallback when no spot is left",
        f"throughput: memory-bound decode, {cost.ASSUMED_CONCURRENCY} concurrent sequences (fewer if the replica's "
        f"max_num_seqs or KV cache holds fewer) of {cost.ASSUMED_CONTEXT_TOKENS:,} tokens of context each, at "
        f"{cost.ASSUMED_BANDWIDTH_EFFICIENCY:.0%} of the GPU's memory bandwidth; prefill and idle time excluded, "
        f"so the cost per token is a floor for a fully used replica",
        "system nodes: the node group's desired size of its first instance type, on-demand",
        f"a month is {cost.HOURS_PER_MONTH} hours",
    ]


def summary_lines(r: cost.CostReport) -> list[str]:
    lines = [f"Cost (USD; cost.json has every line's price source and date; GPU prices checked {PRICES_CHECKED}):",
             f"  {'':<24}{'per hour':>22}{'per month':>26}",
             f"  {'':<24}{'on-demand':>11}{'spot':>11}{'on-demand':>13}{'spot':>13}"]

    def row(label: str, value: cost.Both) -> str:
        month = value.times(cost.HOURS_PER_MONTH)
        return (f"  {label:<24}{value.on_demand:>11,.2f}{value.spot:>11,.2f}{month.on_demand:>13,.0f}"
                f"{month.spot:>13,.0f}")

    fixed = r.fixed_usd_per_hour()
    for i, at in enumerate(AT):
        lines.append(row(f"total at {at} replicas", r.total_usd_per_hour(i)))
    lines.append(row("  fixed parts", cost.Both(fixed, fixed)))
    for line in r.fixed:
        lines.append(f"    {line.item:<28} {line.quantity:<22} {line.usd_per_hour:>9.4f}/h")
    for i, at in enumerate(AT):
        lines.append(row(f"  GPU nodes at {at}", r.gpu_usd_per_hour(i)))
        for p in r.pools[i]:
            if p.nodes:
                lines.append(f"    {p.pool:<10} {p.nodes} x {p.instance_type:<16} {p.gpus_used:>3}/{p.gpus_total:<3} GPUs "
                             f"used {p.usd_per_hour.on_demand:>9.2f} on-demand {p.usd_per_hour.spot:>9.2f} spot "
                             f"(idle share {p.idle_usd_per_hour.on_demand:.2f})")
    lines.append("  per model: GPU cost per hour at min / max replicas (on-demand), and per million generated "
                 "tokens (on-demand / spot)")
    for m in r.models:
        per_token = (f"{m.usd_per_million_tokens.on_demand:.2f} / {m.usd_per_million_tokens.spot:.2f} per M tokens at "
                     f"{m.throughput.tokens_per_second:,.0f} tok/s ({m.throughput.concurrency} seqs on {m.throughput.gpu})"
                     if m.usd_per_million_tokens else "no estimate (no replicas or no price)")
        lines.append(f"    {m.key:<22} {m.replicas[0]}-{m.replicas[1]} x {m.gpus_per_replica} GPU  "
                     f"{m.gpu_usd_per_hour[0].on_demand:>8.2f} / {m.gpu_usd_per_hour[1].on_demand:>8.2f}/h   {per_token}")
    lines += [f"  assumption: {a}" for a in assumptions()]
    lines.append(f"  not included: {'; '.join(cost.EXCLUDED)}")
    lines += [f"  unpriced (left out of the totals): {u}" for u in r.unpriced]
    return lines
