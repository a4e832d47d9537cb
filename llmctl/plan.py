"""`llmctl plan`: run the real Pulumi program under recording mocks and write what it would create."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

import config
from catalog.instances import types_in_pool
from catalog.models import MODELS
from components.compute.gpu_node_pool import POOL_LABEL
from components.edge.gateway import complexity_tiers, tier_fallbacks
from components.edge.ingress import SSL_POLICY
from components.edge.redis_cache import engine_version
from components.observability import dashboards
from components.observability.signals import gateway_request_names
from components.serving import leader_worker_set as lws
from components.serving.keda_scaler import scaled_object_spec
from components.serving.model_server import (
    EFA_RESOURCE,
    REGISTRY_PREFIX,
    efa_request,
    min_servers,
    startup_budget_seconds,
)
from config.checks import GATEWAY_KEYS, kv_plans, required_secrets, sizing_request, tiers_served
from llmctl import cost, policy_check
from llmctl.mocks import Recording, install, plain, resolve_stack_outputs, to_manifest
from planning import capacity
from planning.capacity import DTYPE_BYTES, GiB, lora_bytes_per_gpu
from planning.cost import CostReport

PROJECT_DIR = Path(__file__).resolve().parent.parent
SECRET_PLACEHOLDER = "plan-placeholder-secret"  # stands in for `secure:` values, which only the Pulumi CLI can decrypt


@dataclass
class Plan:
    stack: str
    cfg: config.StackConfig
    recording: Recording
    placeholder_secrets: list[str]
    """Secret keys the stack file does not set; the plan renders them with a placeholder."""
    violations: list[policy_check.Violation]
    """What the policy pack (policy/) reports for this plan."""

    @property
    def blocked(self) -> bool:
        """True when a mandatory policy fails: `pulumi preview --policy-pack policy` would fail too."""
        return any(v.level == "mandatory" for v in self.violations)

    @cached_property
    def cost_report(self) -> CostReport:
        return cost.report(self.cfg)

    def _resources(self):
        """Registration order depends on thread timing; sort so two plans of the same config are identical."""
        return sorted(self.recording.resources, key=lambda r: (r.type, r.name))

    def manifests(self) -> list[dict[str, Any]]:
        return [to_manifest(r) for r in self._resources() if r.is_kubernetes and r.custom]

    def releases(self) -> list[dict[str, Any]]:
        releases = []
        for r in (r for r in self._resources() if r.type == "kubernetes:helm.sh/v3:Release"):
            inputs = plain(r.inputs)
            repo = (inputs.get("repositoryOpts") or {}).get("repo")
            releases.append({
                "release": inputs.get("name"), "namespace": inputs.get("namespace"), "chart": inputs.get("chart"),
                "repository": repo, "version": inputs.get("version"), "skipCrds": inputs.get("skipCrds", False),
                "values": inputs.get("values") or {},
            })
        return releases

    def inventory(self) -> list[dict[str, Any]]:
        return [
            {"type": r.type, "name": r.name, "parent": r.parent, "custom": r.custom,
             "provider": r.provider.split("::")[-2] if r.provider else None, "inputs": plain(r.inputs),
             **({"ignoreChanges": r.ignore_changes} if r.ignore_changes else {})}
            for r in self._resources()
        ]


def stack_config_for_pulumi(values: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
    """Pulumi.<stack>.yaml's `config:` map as the engine hands it to a program: strings, objects as JSON."""
    flat, secret_keys = {}, []
    for key, value in values.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            flat[key] = SECRET_PLACEHOLDER
            secret_keys.append(key)
        elif isinstance(value, str):
            flat[key] = value
        else:
            flat[key] = json.dumps(value)
    return flat, secret_keys


def run(stack: str, project_dir: Path = PROJECT_DIR, secret_values: dict[str, str] | None = None) -> Plan:
    """Validate the stack's config, then run __main__.py under mocks. Raises config.ConfigError on bad config.
    `secret_values` stands in for secrets by key (tests use it to prove no secret reaches a written file)."""
    import pulumi

    cfg = config.load_stack_file(project_dir, stack)
    values = config.read_stack_file(project_dir, stack)
    # Secrets are set per stack with `pulumi config set --secret` and never committed in plain text; render as if
    # each one were set, and say so in the summary for the ones this stack needs.
    key_values = values.get(f"{config.PROJECT}:{GATEWAY_KEYS}") or {}
    missing = [key for key in required_secrets(cfg) if f"{config.PROJECT}:{key}" not in values
               and key.removeprefix(f"{GATEWAY_KEYS}.") not in key_values]
    flat, secret_keys = stack_config_for_pulumi(values)
    overrides = secret_values or {}
    placeholders = {key: SECRET_PLACEHOLDER for key in config.SECRET_KEYS}
    # gatewayKeys is an object of secrets: one placeholder per declared key, each different.
    placeholders[GATEWAY_KEYS] = json.dumps({name: f"{SECRET_PLACEHOLDER}-{name}" for name in cfg.gateway.keys})
    for key in config.SECRET_KEYS:
        if f"{config.PROJECT}:{key}" not in values or key in overrides:
            flat[f"{config.PROJECT}:{key}"] = overrides.get(key, placeholders[key])
            secret_keys.append(f"{config.PROJECT}:{key}")
    mocks = install(cfg.cluster.region, config.PROJECT, stack)
    pulumi.runtime.set_all_config(flat, secret_keys)

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")

    try:
        program()
    except pulumi.RunError as error:
        # __main__.py turns a ConfigError from config.load() (the secrets it alone can see) into a RunError, which
        # the Pulumi CLI prints without a traceback; here it is the same error as every other config problem.
        if isinstance(error.__context__, config.ConfigError):
            raise error.__context__ from None
        raise
    resolve_stack_outputs(mocks.recording)
    return Plan(stack, cfg, mocks.recording, missing, policy_check.check(mocks.recording, stack))


def write(plan: Plan, out: Path) -> None:
    (out / "manifests").mkdir(parents=True, exist_ok=True)
    (out / "values").mkdir(parents=True, exist_ok=True)
    for stale in [*(out / "manifests").glob("*.yaml"), *(out / "values").glob("*.yaml")]:
        stale.unlink()
    for manifest in plan.manifests():
        meta = manifest["metadata"]
        stem = "-".join(filter(None, [manifest["kind"].lower(), meta.get("namespace"), meta["name"]]))
        (out / "manifests" / f"{stem}.yaml").write_text(_dump_manifest(manifest))
    for release in plan.releases():
        (out / "values" / f"{release['release']}.yaml").write_text(yaml.safe_dump(release, sort_keys=True))
    (out / "inventory.json").write_text(json.dumps(plan.inventory(), indent=2, sort_keys=True) + "\n")
    (out / "outputs.json").write_text(json.dumps(plan.recording.stack_outputs, indent=2, sort_keys=True) + "\n")
    (out / "policy.json").write_text(json.dumps([vars(v) for v in plan.violations], indent=2) + "\n")
    report = plan.cost_report
    (out / "cost.json").write_text(json.dumps(cost.as_json(plan.stack, report, cost.idle_warnings(plan.cfg, report)),
                                              indent=2) + "\n")


def _dump_manifest(manifest: dict[str, Any]) -> str:
    """apiVersion, kind and metadata first, as kubectl shows them; every other key sorted. Recorded inputs arrive
    in no fixed order, and plans are diffed in reviews."""
    head = {key: manifest[key] for key in ("apiVersion", "kind") if key in manifest}
    head_text = yaml.safe_dump(head, sort_keys=False)
    rest = {key: value for key, value in manifest.items() if key not in head}
    metadata = {"metadata": rest.pop("metadata")} if "metadata" in rest else {}
    return head_text + yaml.safe_dump(metadata, sort_keys=True) + (yaml.safe_dump(rest, sort_keys=True) if rest else "")


def summary(plan: Plan) -> str:
    counts = Counter(r.type for r in plan.recording.resources)
    lines = [f"stack {plan.stack}: {len(plan.recording.resources)} resources, cluster {plan.cfg.cluster_name} "
             f"(Kubernetes {plan.cfg.cluster.kubernetes_version}) in {plan.cfg.cluster.region}, "
             f"{plan.cfg.cluster.availability_zones} AZs", "", "resources by type:"]
    lines += [f"  {n:4d}  {t}" for t, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "GPU node pools (Karpenter NodePools, highest weight tried first):"]
    nodepools = [m for m in plan.manifests() if m["kind"] == "NodePool"]
    nodepools.sort(key=lambda m: (m["spec"]["template"]["metadata"]["labels"].get(POOL_LABEL, ""), -m["spec"]["weight"]))
    for m in nodepools:
        spec = m["spec"]
        reqs = {r["key"]: r["values"] for r in spec["template"]["spec"]["requirements"]}
        instances = reqs.get("node.kubernetes.io/instance-type") or [f"{f}.*" for f in reqs.get("karpenter.k8s.aws/instance-family", [])]
        lines.append(
            f"  {m['metadata']['name']:<24} weight {spec['weight']:>3}  {reqs['karpenter.sh/capacity-type'][0]:<9} "
            f"gpu limit {spec['limits']['nvidia.com/gpu']:>3}  {', '.join(instances)}"
        )
    servers = [m for m in plan.manifests() if m["kind"] in ("Deployment", lws.KIND)
               and m["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"]
    if servers:
        lines += ["", "Model servers (namespace, engine, pool, GPUs per replica, replicas, start-up budget):"]
    for m in sorted(servers, key=lambda m: m["metadata"]["name"]):
        model = plan.cfg.models[m["metadata"]["name"]]
        template = m["spec"]["leaderWorkerTemplate"]["leaderTemplate"] if m["kind"] == lws.KIND else m["spec"]["template"]
        container = template["spec"]["containers"][0]
        startup = container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
        gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
        shape = f"{gpus * model.nodes_per_replica} GPU ({model.nodes_per_replica} nodes x {gpus})" \
            if model.multi_node else f"{gpus} GPU"
        lines.append(
            f"  {m['metadata']['name']:<24} {m['metadata']['namespace']}  {model.engine:<4} {model.gpu_pool:<8} "
            f"{shape}  {model.min_replicas}-{model.max_replicas}  "
            f"{startup // 60} min  {model.model} from {model.source}  {container['image']}")
    lines += _multi_node_lines(plan)
    lines += _adapter_lines(plan)
    lines += _kv_capacity_lines(plan)
    lines += ["", *_autoscaling_lines(plan), "", *_gateway_lines(plan), "", *_monitoring_lines(plan)]
    lines += ["", *cost.summary_lines(plan.cost_report), *cost.idle_warning_lines(plan.cfg, plan.cost_report)]
    lines += ["", *policy_check.report_lines(plan.violations, policy_check.stack_policy_config(plan.stack))]
    lines += ["", "Helm releases:"]
    lines += [f"  {r['release']:<24} {r['chart']} {r['version']}" for r in plan.releases()]
    for key in plan.placeholder_secrets:
        path = "--path " if "." in key else ""
        lines.append(f"\nnote: {key} is not set in Pulumi.{plan.stack}.yaml; rendered with a placeholder. Before "
                     f"`pulumi up`: pulumi config set --secret {path}{config.PROJECT}:{key} <value> --stack {plan.stack}")
    for key, m in sorted(plan.cfg.models.items()):
        pool = plan.cfg.gpu_pools[m.gpu_pool]
        if m.multi_node and "spot" in pool.capacity_types:
            lines.append(f"\nnote: models.{key} spans {m.nodes_per_replica} nodes on pool '{m.gpu_pool}', which runs "
                         f"spot first: a reclaim of any node of a group takes the whole group down until it reloads "
                         f"(up to {startup_budget_seconds(m) // 60} min). Use capacityTypes [on-demand] for that pool.")
        elif m.min_replicas <= 1 and "spot" in pool.capacity_types:
            lines.append(f"\nnote: models.{key} can be down to one server on pool '{m.gpu_pool}', which runs spot first: "
                         f"a spot reclaim takes the model down until a replacement loads (up to "
                         f"{startup_budget_seconds(m) // 60} min). Set minReplicas 2, or capacityTypes [on-demand] "
                         f"for that pool.")
    for key, pool in plan.cfg.gpu_pools.items():
        if pool.ami_version == "latest":
            lines.append(f"\nnote: gpuPools.{key}.amiVersion is 'latest': every AMI release will replace its nodes; pin it for production.")
    return "\n".join(lines)


def lora_gib_per_gpu(m: config.ModelDeployment, pool: config.GpuPool) -> tuple[float, float]:
    """What LoRA takes from the KV cache on one GPU: the slots, and the CUDA graphs vLLM captures a second time (the
    most over the pool's instance types, whose GPUs set vLLM's default sequence count)."""
    with_lora = sizing_request(m)
    without = replace(with_lora, lora_slots=0, lora_rank=0)
    sizes = [tuple(capacity.size(replace(r, gpu_memory_gib=t.gpu_spec.memory_gib, gpu_name=t.gpu_spec.name))
                   for r in (with_lora, without))
             for t in types_in_pool(pool.instance_families, pool.instance_types) if t.gpus >= m.tensor_parallel_size]
    return (max(a.lora_gib_per_gpu for a, _ in sizes),
            max(a.cuda_graph_gib_per_gpu - b.cuda_graph_gib_per_gpu for a, b in sizes))


def _multi_node_lines(plan: Plan) -> list[str]:
    """Each multi-node model's group: its nodes and what each holds, the network between them, and its price."""
    models = {key: m for key, m in sorted(plan.cfg.models.items()) if m.multi_node}
    if not models:
        return []
    lines = ["", "Multi-node models (LeaderWorkerSet: each replica is a group of nodes that start, fail and scale "
                 "together; the leader serves the API and the metrics):"]
    prices = {c.key: c for c in plan.cost_report.models}
    for key, m in models.items():
        pool = plan.cfg.gpu_pools[m.gpu_pool]
        types = types_in_pool(pool.instance_families, pool.instance_types)
        sizing = min((capacity.size(replace(sizing_request(m), gpu_memory_gib=t.gpu_spec.memory_gib,
                                            gpu_name=t.gpu_spec.name)) for t in types),
                     key=lambda s: s.kv_cache_tokens)
        network = [f"EFA x{efa_request(m, pool)[EFA_RESOURCE]} per node" if pool.efa else "no EFA (TCP between nodes)",
                   "one cluster placement group" if pool.placement_group else "pods of a group in one zone"]
        per_group = prices[key].gpu_usd_per_hour[1].times(1 / max(m.max_replicas, 1))
        lines.append(f"  {key}: {m.pipeline_parallel_size} nodes x {m.tensor_parallel_size} GPUs "
                     f"({', '.join(t.name for t in types)}), layers per node {list(sizing.stage_layers)}; "
                     f"{sizing.kv_cache_tokens:,} KV tokens per group ({sizing.max_concurrency:.1f} requests of "
                     f"{sizing.max_model_len:,}; node {sizing.stage + 1} is the tightest); {'; '.join(network)}; "
                     f"${per_group.on_demand:.2f}/h per group on demand")
    return lines


def _kv_capacity_lines(plan: Plan) -> list[str]:
    """What `llmctl verify` and the LLMKVCapacityOffPlan alert compare the running servers with: each vLLM model's
    KV tokens per replica on each GPU kind of its pool, and where the planner's overheads came from."""
    lines = ["", f"KV capacity per replica (capacity planner, vLLM {capacity.VLLM_RELEASE}; `llmctl verify` and "
                 "LLMKVCapacityOffPlan compare the servers with it, within 10%):"]
    for key, m in sorted(plan.cfg.models.items()):
        if m.engine != "vllm":
            continue
        plans = kv_plans(m, plan.cfg.gpu_pools[m.gpu_pool])
        sources = sorted({s.overheads_from for s in plans.values()})
        lines.append(f"  {key:<24} " + ", ".join(f"{gpu} {s.kv_cache_tokens:,}" for gpu, s in plans.items())
                     + f" tokens; overheads from {' and '.join(sources)}")
    return lines


def _adapter_lines(plan: Plan) -> list[str]:
    """Each model's LoRA adapters: where each comes from, and the GPU memory the slots reserve on every GPU of every
    replica (counted by the capacity planner before the KV cache)."""
    models = {key: m for key, m in sorted(plan.cfg.models.items()) if m.adapters}
    if not models:
        return []
    lines = ["", "LoRA adapters (loaded at start by every replica; the slots reserve GPU memory whether used or not):"]
    for key, m in models.items():
        slots, graphs = lora_gib_per_gpu(m, plan.cfg.gpu_pools[m.gpu_pool])
        lines.append(f"  {key}: {len(m.adapters)} adapter(s), {m.lora_slots} slot(s) x rank {m.lora_rank} = "
                     f"{slots:.2f} GiB per GPU, plus {graphs:.2f} GiB of CUDA graphs captured with LoRA too; "
                     f"{m.cpu_lora_slots} kept in host memory")
        for name, a in m.adapters.items():
            where = (f"s3://<registry>/{REGISTRY_PREFIX}/{a.checkpoint}/" if a.source == "registry"
                     else f"huggingface {a.checkpoint}@{a.revision or 'main'}")
            size = lora_bytes_per_gpu(MODELS[m.model], 1, 1, a.rank, DTYPE_BYTES[m.dtype]) / GiB
            cost = a.cost_per_1k_tokens or m.cost_per_1k_tokens
            lines.append(f"    {name:<22} {where}  rank {a.rank}  at most {size:.2f} GiB in host memory  "
                         f"tier {a.tier or '-'}  ${cost.input:g}/${cost.output:g} per 1k tokens in/out")
    return lines


def _autoscaling_lines(plan: Plan) -> list[str]:
    lines = ["Autoscaling (KEDA ScaledObject per model: replicas, triggers, up / down behaviour):"]
    for key, m in sorted(plan.cfg.models.items()):
        spec = scaled_object_spec(key, m, "")
        triggers = ", ".join(f"{t['name']} {t['metadata']['threshold']}" for t in spec["triggers"])
        up, down = m.autoscaling.scale_up, m.autoscaling.scale_down
        lines.append(f"  {key:<24} {spec['minReplicaCount']}-{spec['maxReplicaCount']}  {triggers}  "
                     f"up {up.pods}/{up.period_seconds}s after {up.stabilization_seconds}s, "
                     f"down {down.pods}/{down.period_seconds}s after {down.stabilization_seconds}s")
    for key, m in sorted(plan.cfg.models.items()):
        if min_servers(m) == 0:
            lines.append(f"  {key}: scaled to zero, the first request through the gateway ({', '.join(gateway_request_names(key, m))}) "
                         f"wakes it; clients get 503 with retry-after until a server is ready "
                         f"(up to {startup_budget_seconds(m) // 60} min plus a GPU node's launch)")
    return lines


def _gateway_lines(plan: Plan) -> list[str]:
    g, cfg = plan.cfg.gateway, plan.cfg
    entry = plan.recording.stack_outputs.get("gatewayUrl")
    edge = (f"{g.ingress.scheme} ALB, HTTPS only ({SSL_POLICY}), from {', '.join(g.ingress.allowed_cidrs)}"
            f"{', sticky sessions' if g.ingress.sticky_sessions else ''}" if g.ingress.enabled else
            "no Ingress (gateway.ingress.enabled is false): in-cluster only, use kubectl port-forward")
    lines = ["Gateway (LiteLLM, namespace llm-gateway):", f"  entry point: {entry}  ({edge})",
             f"  {g.replicas}-{g.max_replicas} replicas, request timeout {g.request_timeout_seconds}s, "
             f"response cache {'on, ' + str(g.response_cache.ttl_seconds) + 's' if g.response_cache.enabled else 'off'}"]
    served = tiers_served(cfg)
    for tier, models in served.items():
        lines.append(f"  tier {tier:<9} {', '.join(models)}")
    if served:
        lines.append("  auto: " + ", ".join(f"{level} -> {tier}" for level, tier in complexity_tiers(list(served)).items())
                     + "; fallbacks: " + (", ".join(f"{k} -> {v[0]}" for f in tier_fallbacks(list(served))
                                                   for k, v in f.items()) or "none"))
    lines.append("  keys (values are secrets; the gateway holds SHA-256 hashes):")
    for name, key in sorted(g.keys.items()):
        lines.append(f"    {name:<20} {key.requests_per_minute} req/min, {key.tokens_per_minute} tokens/min: "
                     f"{', '.join(key.models)}")
    if not g.keys:
        lines.append("    none: only the master key can call the gateway")
    r = cfg.redis
    lines.append(f"  Redis: {r.engine} {engine_version(r)[0]} on {r.node_type} x{1 + r.replicas}"
                 + (", Multi-AZ with failover" if r.replicas else ", one node, no failover")
                 + f"; endpoint {plan.recording.stack_outputs.get('redisEndpoint')}")
    return lines


def _monitoring_lines(plan: Plan) -> list[str]:
    m = plan.cfg.monitoring
    rules = [r for r in plan.manifests() if r["kind"] == "PrometheusRule"]
    groups = [g for r in rules for g in r["spec"]["groups"]]
    alerts = sorted({rule["alert"] for g in groups for rule in g["rules"] if "alert" in rule})
    records = sorted({rule["record"] for g in groups for rule in g["rules"] if "record" in rule})
    monitors = sorted(f"{x['kind']} {x['metadata']['name']}" for x in plan.manifests()
                      if x["kind"] in ("PodMonitor", "ServiceMonitor"))
    boards = [x for x in plan.manifests() if x["kind"] == "ConfigMap"
                  and x["metadata"].get("labels", {}).get(dashboards.LABEL) == dashboards.LABEL_VALUE]
    lines = ["Monitoring (namespace monitoring):",
             f"  Prometheus x{m.replicas}, retention {m.retention}, {m.storage_gib} GiB gp3 each; "
             f"Alertmanager x{m.replicas}; Grafana (ClusterIP)",
             f"  {len(records)} recorded series, {len(alerts)} alerts: {', '.join(alerts)}",
             f"  monitors: {', '.join(monitors)}",
             f"  dashboards: {', '.join(name for d in boards for name in sorted(d.get('data', {})))}"]
    routes = []
    if m.alerting.pagerduty:
        routes.append("critical -> PagerDuty")
    if m.alerting.slack:
        routes.append(f"warning and critical -> Slack {m.alerting.slack_channel or '(webhook channel)'}")
    lines.append("  alert routing: " + ("; ".join(routes) + ", grouped by model" if routes else
                 "no receivers configured (monitoring.alerting): alerts show only in the Prometheus and "
                 "Alertmanager UIs"))
    return lines
