"""Cost model: what a stack costs per hour and per month at its minimum and maximum replicas. Pure functions over
plain inputs (llmctl/cost.py builds them from a stack's configuration); prices come from the catalog.

GPU nodes: per pool, the replicas of its models are packed onto nodes of one instance type, first fit decreasing
(a model's first two replicas on two nodes, as the servers' spread requires), and the pool takes the instance type that makes that cheapest, as Karpenter's cheapest-fit choice would. A pool
with spot capacity is priced both ways: all spot (the catalog's estimate) and all on-demand (the fallback when spot
is gone). Each model is charged its GPUs' share of its nodes; GPUs no replica uses are the pool's idle share.

Per model, the cost per million generated tokens assumes the throughput of a memory-bound decode step (each step
reads the weights and the batch's KV cache once) at ASSUMED_* below: a planning number, stated in the report, not a
benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from catalog import prices
from catalog.gpus import MEMORY_BANDWIDTH_GB_S
from catalog.instances import (
    INSTANCE_TYPES,
    InstanceType,
    on_demand_price,
    spot_estimate,
)
from planning.capacity import GiB, SizingRequest, size

HOURS_PER_MONTH = 730
"""AWS's convention for monthly prices (8,760 hours / 12)."""
ASSUMED_CONCURRENCY = 32
"""Sequences decoded together per replica, capped by the replica's max_num_seqs and by its KV cache."""
ASSUMED_CONTEXT_TOKENS = 2000
"""Tokens of context (prompt plus output so far) each of those sequences holds."""
ASSUMED_BANDWIDTH_EFFICIENCY = 0.6
"""Share of the GPU's memory bandwidth a decode step achieves."""
EXCLUDED = [
    "data: NAT gateway processing ($0.045/GB), load-balancer LCUs beyond one, inter-AZ and internet transfer",
    "S3: model registry storage and requests",
    "EBS: GPU nodes' root volumes and the model cache on them",
    "CloudWatch: the EKS control-plane logs and their retention",
    "KMS keys ($1 per key-month) and requests",
    "EKS extended support (a Kubernetes version past standard support costs $0.60 per cluster-hour, not $0.10)",
]


@dataclass(frozen=True)
class ModelDemand:
    key: str
    pool: str
    gpus_per_replica: int
    min_replicas: int
    max_replicas: int
    sizing: SizingRequest
    """The replica's capacity-planner request; its GPU fields are set per instance type here."""
    nodes_per_replica: int = 1
    """A multi-node replica's nodes (its pipeline stages): each holds gpus_per_replica / nodes_per_replica GPUs,
    so the replica is priced as that many nodes' share."""

    @property
    def gpus_per_node(self) -> int:
        return self.gpus_per_replica // self.nodes_per_replica


@dataclass(frozen=True)
class PoolSpec:
    key: str
    instance_types: list[str]
    spot: bool
    """True when the pool may launch spot capacity (it is then tried first)."""


@dataclass(frozen=True)
class FixedSpec:
    region: str
    nat_gateways: int
    system_instance_type: str
    system_nodes: int
    load_balancer: bool
    cache_node_type: str
    cache_engine: str
    cache_nodes: int
    prometheus_gib: int
    """Prometheus volumes in total (replicas x size)."""


@dataclass(frozen=True)
class Line:
    item: str
    quantity: str
    usd_per_hour: float
    source: str
    checked: str


@dataclass(frozen=True)
class Both:
    """A cost when every GPU node is on-demand, and when every spot-capable one is spot."""
    on_demand: float
    spot: float

    def __add__(self, other: Both) -> Both:
        return Both(self.on_demand + other.on_demand, self.spot + other.spot)

    def times(self, factor: float) -> Both:
        return Both(self.on_demand * factor, self.spot * factor)


ZERO = Both(0.0, 0.0)


@dataclass(frozen=True)
class PoolCost:
    pool: str
    instance_type: str | None
    nodes: int
    gpus_used: int
    gpus_total: int
    usd_per_hour: Both

    @property
    def idle_usd_per_hour(self) -> Both:
        """The share of the nodes' price that pays for GPUs no replica uses."""
        return self.usd_per_hour.times(1 - self.gpus_used / self.gpus_total) if self.gpus_total else ZERO


@dataclass(frozen=True)
class Throughput:
    gpu: str
    tokens_per_second: float
    concurrency: int


@dataclass(frozen=True)
class ModelCost:
    key: str
    pool: str
    gpus_per_replica: int
    replicas: tuple[int, int]
    gpu_usd_per_hour: tuple[Both, Both]
    """At min and at max replicas."""
    throughput: Throughput | None
    usd_per_million_tokens: Both | None


@dataclass(frozen=True)
class CostReport:
    region: str
    fixed: list[Line]
    pools: tuple[list[PoolCost], list[PoolCost]]
    models: list[ModelCost]
    unpriced: list[str] = field(default_factory=list)
    """Parts the catalog has no price for, left out of the totals."""

    def fixed_usd_per_hour(self) -> float:
        return sum(line.usd_per_hour for line in self.fixed)

    def gpu_usd_per_hour(self, at: int) -> Both:
        return sum((p.usd_per_hour for p in self.pools[at]), ZERO)

    def total_usd_per_hour(self, at: int) -> Both:
        fixed = self.fixed_usd_per_hour()
        return self.gpu_usd_per_hour(at) + Both(fixed, fixed)


Demand = tuple[str, int, int]
"""(model, GPUs per replica, replicas) for one model in one pool."""


def nodes_needed(demand: list[Demand], gpus_per_node: int) -> int:
    """Nodes for these replicas, first fit decreasing: a replica's GPUs share one node, and a model's first two
    replicas need two nodes (the model servers' hostname spread, minDomains 2); later ones may share. The work
    grows with the number of models, not replicas: nodes in the same state are kept as one run with a count."""
    runs: list[tuple[int, frozenset[str], int]] = []  # (free GPUs, models on each node, nodes), in opening order
    for model, gpus, replicas in sorted(demand, key=lambda d: -d[1]):
        for _ in range(min(replicas, 2)):
            _first_fit(runs, model, gpus, 1, gpus_per_node, beside_itself=False)
        if replicas > 2:
            _first_fit(runs, model, gpus, replicas - 2, gpus_per_node, beside_itself=True)
    return sum(nodes for _, _, nodes in runs)


def _first_fit(runs: list[tuple[int, frozenset[str], int]], model: str, gpus: int, replicas: int, gpus_per_node: int,
               beside_itself: bool) -> None:
    """Place `replicas` replicas one by one on the first node with room (and, unless beside_itself, without the
    model), opening nodes at the end: done a run at a time, which fills each node of a run in turn."""
    i = 0
    while replicas and i < len(runs):
        free, models, nodes = runs[i]
        if free < gpus or (not beside_itself and model in models):
            i += 1
            continue
        split = _fill(free, models, nodes, model, gpus, replicas)
        runs[i:i + 1] = split[0]
        i += len(split[0])
        replicas -= split[1]
    if replicas:
        opened = _fill(gpus_per_node, frozenset(), replicas, model, gpus, replicas)[0]
        runs.extend(run for run in opened if model in run[1])  # not the nodes it did not need


def _fill(free: int, models: frozenset[str], nodes: int, model: str, gpus: int, replicas: int):
    """A run of `nodes` nodes with `free` GPUs each, after up to `replicas` replicas fill them in order: the runs
    it becomes, and how many replicas it took."""
    each = free // gpus
    taken = min(replicas, each * nodes)
    full, rest = divmod(taken, each)
    split = [(free - each * gpus, models | {model}, full)] if full else []
    if rest:
        split.append((free - rest * gpus, models | {model}, 1))
    if nodes - full - (1 if rest else 0):
        split.append((free, models, nodes - full - (1 if rest else 0)))
    return split, taken


def node_prices(instance: InstanceType, region: str, spot: bool) -> Both | None:
    on_demand = on_demand_price(instance.name, region)
    if on_demand is None:
        return None
    return Both(on_demand, spot_estimate(instance.name, region) if spot else on_demand)


def pool_cost(pool: PoolSpec, demand: list[Demand], region: str) -> PoolCost:
    """The pool's cheapest single-type packing of these replicas (on-demand prices decide)."""
    demand = [d for d in demand if d[2] > 0]
    if not demand:
        return PoolCost(pool.key, None, 0, 0, 0, ZERO)
    used = sum(gpus * replicas for _, gpus, replicas in demand)
    best: PoolCost | None = None
    for name in sorted(pool.instance_types):
        instance = INSTANCE_TYPES.get(name)
        each = node_prices(instance, region, pool.spot) if instance else None
        if each is None or instance.gpus < max(gpus for _, gpus, _ in demand):
            continue
        nodes = nodes_needed(demand, instance.gpus)
        candidate = PoolCost(pool.key, name, nodes, used, nodes * instance.gpus, each.times(nodes))
        if best is None or candidate.usd_per_hour.on_demand < best.usd_per_hour.on_demand:
            best = candidate
    return best or PoolCost(pool.key, None, 0, used, 0, ZERO)


@dataclass(frozen=True)
class IdleWarning:
    """A pool whose replicas leave more than its allowed share of GPUs idle at min or max replicas."""
    pool: str
    at: str
    """`min` or `max` replicas."""
    instance_type: str
    idle_gpus: int
    gpus: int
    idle_usd_per_hour: Both
    fix: str


def idle_warnings(report: CostReport, models: list[ModelDemand], max_idle_share: dict[str, float]) -> list[IdleWarning]:
    """Pools (by key, with their allowed idle share) whose packing idles more than that share of their GPUs."""
    out = []
    for i, at in enumerate(("min", "max")):
        for p in report.pools[i]:
            idle = p.gpus_total - p.gpus_used
            if p.instance_type and idle > max_idle_share[p.pool] * p.gpus_total:
                out.append(IdleWarning(p.pool, at, p.instance_type, idle, p.gpus_total, p.idle_usd_per_hour,
                                       _fill_hint(p, [m for m in models if m.pool == p.pool])))
    return out


def _fill_hint(pool: PoolCost, models: list[ModelDemand]) -> str:
    """What would let the pool's replicas fill its nodes: replicas narrower than a node leave the rest of it idle
    whenever a model's first two replicas must sit on separate nodes or nothing else fits beside them."""
    node_gpus = INSTANCE_TYPES[pool.instance_type].gpus
    narrow = sorted((m for m in models if m.gpus_per_node < node_gpus), key=lambda m: m.key)
    held = ", ".join(f"{m.key} ({m.gpus_per_node} GPU{'s' if m.gpus_per_node > 1 else ''})" for m in narrow)
    return (f"its {pool.instance_type} nodes have {node_gpus} GPUs and {held} use fewer: give a model "
            f"tensorParallelSize {node_gpus} (more KV cache and speed for the same nodes), move it to a pool whose "
            f"instance types have as many GPUs as it uses, or raise gpuPools.{pool.pool}.maxIdleGpuShare"
            if narrow else f"raise gpuPools.{pool.pool}.maxIdleGpuShare")


def decode_throughput(request: SizingRequest, bandwidth_gb_s: float) -> Throughput:
    """Tokens per second one replica generates at the assumed concurrency, if decode is memory-bound. With pipeline
    parallelism the sequences are split into one micro-batch per stage, all stages busy at once (vLLM keeps
    pipeline_parallel_size batches in flight): each stage's step reads its own weights and its micro-batch's KV, and
    a micro-batch leaves the last stage every step. Network hops between stages are not counted."""
    sizing = size(request)
    stages = request.pipeline_parallel_size
    concurrency = max(1, min(ASSUMED_CONCURRENCY, sizing.max_num_seqs,
                             sizing.kv_cache_tokens // ASSUMED_CONTEXT_TOKENS))
    micro_batch = concurrency / stages
    bytes_per_step = (sizing.weights_gib_per_gpu * GiB
                      + micro_batch * ASSUMED_CONTEXT_TOKENS * sizing.kv_bytes_per_token_per_gpu)
    step_seconds = bytes_per_step / (bandwidth_gb_s * 1e9 * ASSUMED_BANDWIDTH_EFFICIENCY)
    return Throughput(request.gpu_name, micro_batch / step_seconds, concurrency)


def per_million_tokens(replica_usd_per_hour: Both, tokens_per_second: float) -> Both:
    return replica_usd_per_hour.times(1e6 / (tokens_per_second * 3600))


def fixed_lines(spec: FixedSpec) -> tuple[list[Line], list[str]]:
    lines = [Line("EKS control plane", "1 cluster", prices.EKS_CONTROL_PLANE.usd, prices.EKS_CONTROL_PLANE.source,
                  prices.EKS_CONTROL_PLANE.checked)]
    unpriced = []
    system = prices.SYSTEM_INSTANCES.get(spec.system_instance_type)
    if system:
        lines.append(Line("system nodes", f"{spec.system_nodes} x {spec.system_instance_type}",
                          system.usd * spec.system_nodes, system.source, system.checked))
    else:
        unpriced.append(f"system nodes: no catalog price for {spec.system_instance_type}")
    lines.append(Line("NAT gateways", f"{spec.nat_gateways}", prices.NAT_GATEWAY.usd * spec.nat_gateways,
                      prices.NAT_GATEWAY.source, prices.NAT_GATEWAY.checked))
    if spec.load_balancer:
        lines.append(Line("load balancer (gateway ALB)", "1, with 1 LCU", prices.ALB.usd, prices.ALB.source,
                          prices.ALB.checked))
    cache = prices.cache_node(spec.cache_node_type, spec.cache_engine)
    if cache:
        lines.append(Line(f"Redis ({spec.cache_engine})", f"{spec.cache_nodes} x {spec.cache_node_type}",
                          cache.usd * spec.cache_nodes, cache.source, cache.checked))
    else:
        unpriced.append(f"Redis: no catalog price for {spec.cache_node_type}")
    gp3 = prices.GP3_GB_MONTH
    lines.append(Line("Prometheus volumes (gp3)", f"{spec.prometheus_gib} GiB", gp3.usd * spec.prometheus_gib / HOURS_PER_MONTH,
                      gp3.source, gp3.checked))
    return lines, unpriced


def estimate(models: list[ModelDemand], pools: list[PoolSpec], fixed: FixedSpec) -> CostReport:
    lines, unpriced = fixed_lines(fixed)
    by_pool: tuple[list[PoolCost], list[PoolCost]] = ([], [])
    for at, replicas_of in enumerate((lambda m: m.min_replicas, lambda m: m.max_replicas)):
        for pool in pools:
            # A multi-node replica is packed as its stages, each a node-sized part (they fill whole nodes: config
            # checks require the pool's types to have exactly the GPUs a stage uses).
            demand = [(m.key, m.gpus_per_node, replicas_of(m) * m.nodes_per_replica) for m in models
                      if m.pool == pool.key]
            cost = pool_cost(pool, demand, fixed.region)
            if any(replicas for _, _, replicas in demand) and cost.instance_type is None:
                unpriced.append(f"GPU pool {pool.key}: no catalog price for {', '.join(pool.instance_types)} "
                                f"in {fixed.region}")
            by_pool[at].append(cost)
    specs = {pool.key: pool for pool in pools}
    model_costs = [_model_cost(m, specs[m.pool], by_pool, fixed.region) for m in models]
    return CostReport(fixed.region, lines, by_pool, model_costs, sorted(set(unpriced)))


def _model_cost(m: ModelDemand, spec: PoolSpec, pools_at: tuple[list[PoolCost], list[PoolCost]],
                region: str) -> ModelCost:
    shares = []
    for at, replicas in enumerate((m.min_replicas, m.max_replicas)):
        pool = next(p for p in pools_at[at] if p.pool == m.pool)
        per_gpu = pool.usd_per_hour.times(1 / pool.gpus_total) if pool.gpus_total else ZERO
        shares.append(per_gpu.times(replicas * m.gpus_per_replica))
    # Throughput and price per token on the instance type the pool uses at max (at min, a pool may hold no replica).
    pool_at_max = next(p for p in pools_at[1] if p.pool == m.pool)
    instance = INSTANCE_TYPES.get(pool_at_max.instance_type or "")
    throughput = per_million = None
    if instance and m.max_replicas:
        gpu = instance.gpu_spec
        request = SizingRequest(**{**m.sizing.__dict__, "gpu_memory_gib": gpu.memory_gib, "gpu_name": gpu.name})
        throughput = decode_throughput(request, MEMORY_BANDWIDTH_GB_S[gpu.name])
        replica = node_prices(instance, region, spec.spot)
        per_million = per_million_tokens(replica.times(m.gpus_per_replica / instance.gpus), throughput.tokens_per_second)
        # (a multi-node replica's GPUs fill its nodes, so that is the price of all of them)
    return ModelCost(m.key, m.pool, m.gpus_per_replica, (m.min_replicas, m.max_replicas), (shares[0], shares[1]),
                     throughput, per_million)
