"""`llmctl plan`: run the real Pulumi program under recording mocks and write what it would create."""

from __future__ import annotations

import json
import runpy
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

import config
from components.gpu_node_pool import POOL_LABEL
from tests.mocks import Recording, install, plain, resolve_stack_outputs, to_manifest

PROJECT_DIR = Path(__file__).resolve().parent.parent
SECRET_PLACEHOLDER = "plan-placeholder-secret"  # stands in for `secure:` values, which only the Pulumi CLI can decrypt


@dataclass
class Plan:
    stack: str
    cfg: config.StackConfig
    recording: Recording
    placeholder_secrets: list[str]
    """Secret keys the stack file does not set; the plan renders them with a placeholder."""

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
             "provider": r.provider.split("::")[-2] if r.provider else None, "inputs": plain(r.inputs)}
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


def run(stack: str, project_dir: Path = PROJECT_DIR) -> Plan:
    """Validate the stack's config, then run __main__.py under mocks. Raises config.ConfigError on bad config."""
    import pulumi

    values = config.read_stack_file(project_dir, stack)
    # Secrets are set per stack with `pulumi config set --secret` and never committed in plain text; render as if
    # each one were set, and say so in the summary.
    missing = [key for key in config.SECRET_KEYS if f"{config.PROJECT}:{key}" not in values]
    cfg = config.load_stack_file(project_dir, stack)
    flat, secret_keys = stack_config_for_pulumi(values)
    for key in missing:
        flat[f"{config.PROJECT}:{key}"] = SECRET_PLACEHOLDER
        secret_keys.append(f"{config.PROJECT}:{key}")
    mocks = install(cfg.cluster.region, config.PROJECT, stack)
    pulumi.runtime.set_all_config(flat, secret_keys)

    @pulumi.runtime.test
    def program():
        runpy.run_path(str(project_dir / "__main__.py"), run_name="__main__")

    program()
    resolve_stack_outputs(mocks.recording)
    return Plan(stack, cfg, mocks.recording, missing)


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
    servers = [m for m in plan.manifests() if m["kind"] == "Deployment"
               and m["metadata"]["labels"].get("app.kubernetes.io/component") == "model-server"]
    if servers:
        lines += ["", "Model servers (namespace, engine, pool, GPUs per replica, replicas, start-up budget):"]
    for m in sorted(servers, key=lambda m: m["metadata"]["name"]):
        model = plan.cfg.models[m["metadata"]["name"]]
        pod = m["spec"]["template"]["spec"]
        container = pod["containers"][0]
        startup = container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"]
        lines.append(
            f"  {m['metadata']['name']:<24} {m['metadata']['namespace']}  {model.engine:<4} {model.gpu_pool:<8} "
            f"{container['resources']['limits']['nvidia.com/gpu']} GPU  {model.min_replicas}-{model.max_replicas}  "
            f"{startup // 60} min  {model.model} from {model.source}  {container['image']}")
    lines += ["", "Helm releases:"]
    lines += [f"  {r['release']:<24} {r['chart']} {r['version']}" for r in plan.releases()]
    for key in plan.placeholder_secrets:
        lines.append(f"\nnote: {key} is not set in Pulumi.{plan.stack}.yaml; rendered with a placeholder. Before "
                     f"`pulumi up`: pulumi config set --secret {config.PROJECT}:{key} <value> --stack {plan.stack}")
    for key, pool in plan.cfg.gpu_pools.items():
        if pool.ami_version == "latest":
            lines.append(f"\nnote: gpuPools.{key}.amiVersion is 'latest': every AMI release will replace its nodes; pin it for production.")
    return "\n".join(lines)
