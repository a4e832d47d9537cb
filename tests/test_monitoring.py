"""MonitoringStack as `llmctl plan` renders it: charts and their values, monitors and relabelling, Alertmanager
routing with secrets by reference, dashboards, and no secret in any file the plan writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from catalog import versions
from components.observability.monitoring import alertmanager_config_spec, gpu_instance_regex
from config.schema import Alerting
from tests import metric_names
from tests.conftest import ROOT, Rendered

SYSTEM = {"llm-platform.io/node-role": "system"}


def named(stack: Rendered, kind: str, name: str) -> dict:
    [found] = [m for m in stack.kind(kind) if m["metadata"]["name"] == name]
    return found


# Charts ---------------------------------------------------------------------------------------------------------

def test_monitoring_charts_are_pinned_and_crds_upgrade_with_their_own_chart(stack: Rendered):
    kps, crds = stack.releases["kube-prometheus-stack"], stack.releases["prometheus-operator-crds"]
    assert (kps["version"], crds["version"]) == (versions.KUBE_PROMETHEUS_STACK.version,
                                                 versions.PROMETHEUS_OPERATOR_CRDS.version)
    assert kps["version"].startswith("88.")
    # The CRDs come from prometheus-operator-crds (templates, so `helm upgrade` upgrades them), never twice.
    assert kps["skipCrds"] is True and kps["values"]["crds"] == {"enabled": False}
    assert stack.releases["keda"]["version"] == versions.KEDA.version
    assert stack.releases["keda"]["values"]["crds"]["install"] is True
    assert stack.releases["dcgm-exporter"]["version"] == versions.DCGM_EXPORTER.version
    for release in ("kube-prometheus-stack", "prometheus-operator-crds", "dcgm-exporter"):
        assert stack.releases[release]["namespace"] == "monitoring"


def test_prometheus_follows_the_stack_config(dev: Rendered, prod: Rendered):
    for stack, replicas, retention, storage in ((dev, 1, "3d", "20Gi"), (prod, 2, "30d", "200Gi")):
        spec = stack.releases["kube-prometheus-stack"]["values"]["prometheus"]["prometheusSpec"]
        assert spec["replicas"] == replicas and spec["retention"] == retention
        volume = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
        assert volume["storageClassName"] == "gp3" and volume["resources"]["requests"]["storage"] == storage
        # Ingestion stops at 85% of the volume, before the disk fills.
        assert int(spec["retentionSize"].removesuffix("GB")) < int(storage.removesuffix("Gi"))
    prod_values = prod.releases["kube-prometheus-stack"]["values"]
    assert prod_values["prometheus"]["prometheusSpec"]["podAntiAffinity"] == "hard"
    assert prod_values["prometheus"]["podDisruptionBudget"]["enabled"] is True
    assert prod_values["alertmanager"]["alertmanagerSpec"]["replicas"] == 2
    # One replica must not get a PDB that blocks every node drain.
    assert dev.releases["kube-prometheus-stack"]["values"]["prometheus"]["podDisruptionBudget"]["enabled"] is False


def test_prometheus_selects_every_monitor_and_rule_in_every_namespace(stack: Rendered):
    spec = stack.releases["kube-prometheus-stack"]["values"]["prometheus"]["prometheusSpec"]
    for kind in ("rule", "serviceMonitor", "podMonitor"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False, kind
        assert spec[f"{kind}NamespaceSelector"] == {}, kind


def test_every_monitoring_workload_runs_on_system_nodes_with_requests(stack: Rendered):
    values = stack.releases["kube-prometheus-stack"]["values"]
    placed = {
        "prometheus": values["prometheus"]["prometheusSpec"],
        "alertmanager": values["alertmanager"]["alertmanagerSpec"],
        "grafana": values["grafana"],
        "operator": values["prometheusOperator"],
        "kube-state-metrics": values["kube-state-metrics"],
    }
    for name, part in placed.items():
        assert part["nodeSelector"] == SYSTEM, name
        assert {"cpu", "memory"} <= set(part["resources"]["requests"]), name
        assert "memory" in part["resources"]["limits"], name
    keda = stack.releases["keda"]["values"]
    assert keda["nodeSelector"] == SYSTEM
    assert all("requests" in r for r in keda["resources"].values())


def test_eks_control_plane_components_are_not_scraped(stack: Rendered):
    """EKS hides the scheduler, controller manager and etcd; monitoring them would only ever alert 'down'."""
    values = stack.releases["kube-prometheus-stack"]["values"]
    for part in ("kubeControllerManager", "kubeScheduler", "kubeEtcd", "kubeProxy"):
        assert values[part] == {"enabled": False}, part
    assert values["defaultRules"]["rules"]["etcd"] is False


def test_grafana_takes_its_password_from_a_secret_and_stays_inside_the_cluster(stack: Rendered):
    grafana = stack.releases["kube-prometheus-stack"]["values"]["grafana"]
    assert "adminPassword" not in json.dumps(grafana)
    secret = named(stack, "Secret", grafana["admin"]["existingSecret"])
    assert secret["metadata"]["namespace"] == "monitoring"
    assert secret["stringData"][grafana["admin"]["passwordKey"]] == "[secret]"
    assert grafana["service"]["type"] == "ClusterIP" and grafana["ingress"]["enabled"] is False
    # The sidecar loads the dashboards ConfigMap by its label.
    board = named(stack, "ConfigMap", "llm-platform-dashboards")
    sidecar = grafana["sidecar"]["dashboards"]
    assert board["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert board["metadata"]["namespace"] == sidecar["searchNamespace"]


def test_kube_state_metrics_exports_the_labels_the_rules_join_on(stack: Rendered):
    allow = stack.releases["kube-prometheus-stack"]["values"]["kube-state-metrics"]["metricLabelsAllowlist"]
    [rule] = stack.kind("PrometheusRule")
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    # A label is label_<sanitised name> in kube_pod_labels / kube_node_labels only if allow-listed.
    for resource, label in (("pods", "llm-platform.io/model"), ("pods", "llm-platform.io/tier"),
                            ("nodes", "node.kubernetes.io/instance-type"), ("nodes", "karpenter.sh/capacity-type"),
                            ("nodes", "topology.kubernetes.io/zone")):
        sanitised = "label_" + label.replace(".", "_").replace("/", "_").replace("-", "_")
        assert sanitised in exprs, sanitised
        assert any(entry.startswith(f"{resource}=[") and label in entry for entry in allow), label


# DCGM -----------------------------------------------------------------------------------------------------------

def test_dcgm_exporter_runs_on_gpu_nodes_only_and_maps_gpus_to_pods(stack: Rendered):
    values = stack.releases["dcgm-exporter"]["values"]
    taint = stack.kind("NodePool")[0]["spec"]["template"]["spec"]["taints"][0]
    assert {"key": taint["key"], "operator": "Exists", "effect": taint["effect"]} in values["tolerations"]
    [term] = values["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert {"key": "karpenter.k8s.aws/instance-gpu-manufacturer", "operator": "In",
            "values": ["nvidia"]} in term["matchExpressions"]
    # The pod's namespace and name on each GPU's series win over the exporter pod's own.
    assert values["serviceMonitor"] == {"enabled": True, "interval": "15s", "honorLabels": True}


def test_dcgm_collects_every_field_the_rules_read(stack: Rendered):
    collected = {line.split(",")[0] for line in stack.releases["dcgm-exporter"]["values"]["customMetrics"].splitlines()}
    [rule] = stack.kind("PrometheusRule")
    read = {name for g in rule["spec"]["groups"] for r in g["rules"]
            for name in metric_names.metric_names(r["expr"]) if name.startswith("DCGM_")}
    assert read and read <= collected, read - collected
    assert all(metric_names.exists(name) for name in collected), collected


# Monitors -------------------------------------------------------------------------------------------------------

def test_model_server_monitor_labels_every_series_with_model_and_tier(stack: Rendered):
    spec = named(stack, "PodMonitor", "model-servers")["spec"]
    [endpoint] = spec["podMetricsEndpoints"]
    servers = [d for d in stack.kind("Deployment") if d["metadata"]["labels"].get("app.kubernetes.io/component")
               == "model-server"]
    assert servers
    for deployment in servers:
        pod = deployment["spec"]["template"]
        # The monitor selects every server (vLLM and TGI), on the port its container names.
        assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert endpoint["port"] in {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
        assert deployment["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
    targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
    assert targets["model"] == ["__meta_kubernetes_pod_label_llm_platform_io_model"]
    assert targets["tier"] == ["__meta_kubernetes_pod_label_llm_platform_io_tier"]
    # The labels it copies are the ones every server carries.
    for deployment in servers:
        assert deployment["spec"]["template"]["metadata"]["labels"]["llm-platform.io/model"] == \
            deployment["metadata"]["name"]


def test_karpenter_and_keda_are_scraped(stack: Rendered):
    karpenter = named(stack, "ServiceMonitor", "karpenter")["spec"]
    assert karpenter["namespaceSelector"]["matchNames"] == [stack.releases["karpenter"]["namespace"]]
    assert karpenter["selector"]["matchLabels"]["app.kubernetes.io/instance"] == stack.releases["karpenter"]["release"]
    assert karpenter["endpoints"][0]["port"] == "http-metrics"  # the chart's Service port
    keda = named(stack, "PodMonitor", "keda-operator")["spec"]
    assert keda["namespaceSelector"]["matchNames"] == [stack.releases["keda"]["namespace"]]
    assert stack.releases["keda"]["values"]["prometheus"]["operator"]["enabled"] is True


def test_karpenter_price_series_are_kept_for_gpu_instances_only():
    import re

    pattern = re.compile(gpu_instance_regex())
    for kept in ("g6e.xlarge", "p5.48xlarge", "p4de.24xlarge", "g5.12xlarge"):
        assert pattern.fullmatch(kept), kept
    for dropped in ("m7i.large", "c7g.xlarge", "p3.2xlarge", "g4dn.xlarge", "g6e"):
        assert not pattern.fullmatch(dropped), dropped


# Alertmanager ---------------------------------------------------------------------------------------------------

def _routes(spec: dict) -> list[dict]:
    """Every route of the tree, depth first."""
    found, todo = [], [spec["route"]]
    while todo:
        route = todo.pop()
        found.append(route)
        todo += route.get("routes", [])
    return found


def test_alerts_about_a_model_are_grouped_by_model(prod: Rendered):
    """Routing itself is checked by Alertmanager's amtool in test_alertmanager.py."""
    spec = named(prod, "AlertmanagerConfig", "llm-platform")["spec"]
    [model_route] = [r for r in spec["route"]["routes"] if r.get("matchers", [{}])[0].get("name") == "model"]
    assert model_route["groupBy"] == ["model"]
    assert {r["receiver"] for r in model_route["routes"]} == {"pagerduty", "slack"}


def test_a_models_warnings_wait_while_it_has_a_critical_alert(prod: Rendered):
    [rule] = named(prod, "AlertmanagerConfig", "llm-platform")["spec"]["inhibitRules"]
    assert {"name": "severity", "value": "critical", "matchType": "="} in rule["sourceMatch"]
    assert rule["targetMatch"] == [{"name": "severity", "value": "warning", "matchType": "="}]
    assert rule["equal"] == ["model"]
    # Only a critical alert that names a model inhibits: a node's XID must not silence every platform warning.
    assert {"name": "model", "value": ".+", "matchType": "=~"} in rule["sourceMatch"]


def test_receivers_read_their_keys_from_a_secret(prod: Rendered):
    spec = named(prod, "AlertmanagerConfig", "llm-platform")["spec"]
    receivers = {r["name"]: r for r in spec["receivers"]}
    pagerduty = receivers["pagerduty"]["pagerdutyConfigs"][0]["routingKey"]
    slack = receivers["slack"]["slackConfigs"][0]
    secret = named(prod, "Secret", pagerduty["name"])
    assert set(secret["stringData"]) == {pagerduty["key"], slack["apiURL"]["key"]}
    assert set(secret["stringData"].values()) == {"[secret]"}
    assert slack["channel"] == "#llm-platform-alerts"
    # The chart's values point Alertmanager at this object and hold no receiver of their own.
    values = prod.releases["kube-prometheus-stack"]["values"]["alertmanager"]
    assert values["alertmanagerSpec"]["alertmanagerConfiguration"] == {"name": "llm-platform"}
    assert "config" not in values


def test_a_stack_without_receivers_is_valid_and_says_so(dev: Rendered):
    spec = named(dev, "AlertmanagerConfig", "llm-platform")["spec"]
    assert [r["name"] for r in spec["receivers"]] == ["null"]
    assert spec["route"]["routes"] == []
    assert not [s for s in dev.kind("Secret") if s["metadata"]["name"] == "alertmanager-receivers"]
    assert "alert routing: no receivers configured" in dev.stdout


@pytest.mark.parametrize(("alerting", "receivers"), [
    (Alerting(pagerduty=True), {"null", "pagerduty"}),
    (Alerting(slack=True), {"null", "slack"}),
])
def test_each_receiver_is_configured_alone(alerting, receivers):
    spec = alertmanager_config_spec(alerting)
    assert {r["name"] for r in spec["receivers"]} == receivers
    assert {r["receiver"] for r in _routes(spec)} <= receivers


# Secrets --------------------------------------------------------------------------------------------------------

CANARIES = {
    "huggingfaceToken": "hf_CANARYtoken0000000000000000000",
    "grafanaAdminPassword": "canary-grafana-password-4f1c9",
    "pagerdutyRoutingKey": "canaryPagerDutyRoutingKey0a1b2c3d",
    "slackWebhookUrl": "https://hooks.slack.com/services/TCANARY/BCANARY/canarycanarycanary",
    "gatewayMasterKey": "sk-canary-master-7d2e1",
    "redisAuthToken": "canaryRedisAuthToken9b8c7d6e",
    "gatewayKeys": '{"search-app": "sk-canary-search-31f0", "support-desk": "sk-canary-support-5e6f", '
                   '"research": "sk-canary-research-88aa"}',
}
# Each client key's value on its own: the gatewayKeys object above is JSON, and a file could hold one key alone.
CLIENT_KEY_CANARIES = {"gatewayKeys.search-app": "sk-canary-search-31f0", "gatewayKeys.support-desk": "sk-canary-support-5e6f",
                       "gatewayKeys.research": "sk-canary-research-88aa"}


def test_no_secret_reaches_any_file_the_plan_writes(tmp_path: Path):
    """Render prod with a distinctive value for every secret, then read every byte `llmctl plan` writes and prints.
    The canaries must be in the program's memory (the Secrets' inputs) and in no file."""
    script = (
        "import json\n"
        "from pathlib import Path\n"
        "from llmctl import plan\n"
        "from llmctl.mocks import plain\n"
        f"canaries = {CANARIES!r}\n"
        "result = plan.run('prod', secret_values=canaries)\n"
        f"plan.write(result, Path({str(tmp_path)!r}))\n"
        "print(plan.summary(result))\n"
        "revealed = json.dumps([plain(r.inputs, reveal_secrets=True) for r in result.recording.resources])\n"
        "print('canaries in memory:', sorted(k for k, v in canaries.items() if v in revealed))\n"
        "import hashlib\n"
        "keys = json.loads(canaries['gatewayKeys'])\n"
        "print('key hashes in memory:', sorted(n for n, v in keys.items() if hashlib.sha256(v.encode()).hexdigest() in revealed))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    # Client keys never reach a resource, not even as a Secret's input: only their SHA-256 does.
    assert f"canaries in memory: {sorted(set(CANARIES) - {'gatewayKeys'})}" in proc.stdout
    assert "key hashes in memory: ['research', 'search-app', 'support-desk']" in proc.stdout
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"inventory.json", "outputs.json", "kube-prometheus-stack.yaml", "secret-monitoring-grafana-admin.yaml",
            "secret-monitoring-alertmanager-receivers.yaml", "alertmanagerconfig-monitoring-llm-platform.yaml",
            "secret-llm-inference-huggingface-token.yaml", "secret-llm-gateway-llm-gateway-keys.yaml",
            "secret-llm-gateway-redis-connection.yaml", "configmap-llm-gateway-llm-gateway.yaml"} <= {p.name for p in written}
    canaries = {**CANARIES, **CLIENT_KEY_CANARIES}
    for path in written:
        text = path.read_text()
        for key, value in canaries.items():
            assert value not in text, f"{key} appears in {path.relative_to(tmp_path)}"
    for key, value in canaries.items():
        assert value not in proc.stdout.replace("canaries in memory", "") and value not in proc.stderr, key


# Sizing ---------------------------------------------------------------------------------------------------------

# vCPUs and GiB of the system node types the stacks use. Source: aws.amazon.com/ec2/instance-types/m7i and /m6i,
# checked 2026-11-24.
SYSTEM_NODE_TYPES = {"m7i.large": (2, 8), "m6i.large": (2, 8), "m7i.xlarge": (4, 16), "m6i.xlarge": (4, 16)}
# Left for the kubelet's reservation, the add-ons (CoreDNS, EBS CSI controller) and the DaemonSets.
SYSTEM_SHARE = 0.75


def _cpu(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _gib(quantity: str) -> float:
    units = {"Mi": 1 / 1024, "Gi": 1}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_controllers_and_monitoring_fit_the_system_nodes(stack: Rendered):
    """What the platform's charts request on the system nodes, at the node group's minimum size, against the
    smallest of its instance types."""
    [group] = stack.of_type("aws:eks/nodeGroup:NodeGroup")
    nodes = group["inputs"]["scalingConfig"]["minSize"]
    cpus, gib = min(SYSTEM_NODE_TYPES[t] for t in group["inputs"]["instanceTypes"])
    kps = stack.releases["kube-prometheus-stack"]["values"]
    keda = stack.releases["keda"]["values"]
    karpenter = stack.releases["karpenter"]["values"]
    sidecar = kps["grafana"]["sidecar"]["resources"]["requests"]
    pods = [
        *[kps["prometheus"]["prometheusSpec"]["resources"]["requests"]] * kps["prometheus"]["prometheusSpec"]["replicas"],
        *[kps["alertmanager"]["alertmanagerSpec"]["resources"]["requests"]]
        * kps["alertmanager"]["alertmanagerSpec"]["replicas"],
        kps["grafana"]["resources"]["requests"], sidecar, sidecar,  # dashboards and datasources sidecars
        kps["prometheusOperator"]["resources"]["requests"], kps["kube-state-metrics"]["resources"]["requests"],
        *[kps["prometheus-node-exporter"]["resources"]["requests"]] * nodes,
        *[keda["resources"]["operator"]["requests"]] * keda["operator"]["replicaCount"],
        *[keda["resources"]["metricServer"]["requests"]] * keda["metricsServer"]["replicaCount"],
        keda["resources"]["webhooks"]["requests"],
        *[karpenter["controller"]["resources"]["requests"]] * karpenter["replicas"],
    ]
    cpu, memory = sum(_cpu(p["cpu"]) for p in pods), sum(_gib(p["memory"]) for p in pods)
    assert cpu <= SYSTEM_SHARE * nodes * cpus, (cpu, nodes * cpus)
    assert memory <= SYSTEM_SHARE * nodes * gib, (memory, nodes * gib)
