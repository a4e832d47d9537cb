"""MonitoringStack: Prometheus, Alertmanager and Grafana (kube-prometheus-stack), the NVIDIA DCGM exporter, the
monitors for every model server, replica router, Karpenter and KEDA, the platform's rules, its Alertmanager routing and its
dashboards, in the `monitoring` namespace on the system nodes.

Secrets (Grafana's admin password, the PagerDuty routing key, the Slack webhook URL) reach the cluster only as
Kubernetes Secrets built from Pulumi secret config; Helm values and custom resources name them, never contain them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from catalog import versions
from catalog.instances import INSTANCE_FAMILIES
from components.compute.cluster import SYSTEM_NODE_LABEL
from components.compute.gpu_node_pool import GPU_TAINT
from components.compute.karpenter import NAMESPACE as KARPENTER_NAMESPACE
from components.observability import dashboards, signals
from components.serving import replica_router
from components.serving.keda_scaler import NAMESPACE as KEDA_NAMESPACE
from components.serving.keda_scaler import OPERATOR as KEDA_OPERATOR
from components.serving.model_server import NAMESPACE as INFERENCE_NAMESPACE
from components.shared import helm
from components.shared.labels import PLATFORM_LABELS
from components.shared.secret import opaque_secret
from config import StackConfig
from config.schema import Alerting, Monitoring

NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"
# The chart names its objects after fullnameOverride; fixed, so the Prometheus URL below never changes.
PROMETHEUS_URL = f"http://{RELEASE}-prometheus.{NAMESPACE}.svc.cluster.local:9090"
PROMETHEUS_POD_LABELS = {"app.kubernetes.io/name": "prometheus"}
"""What the operator labels every Prometheus pod with: NetworkPolicies admit the scraper by it."""
GRAFANA_SERVICE = f"{RELEASE}-grafana"
GRAFANA_SECRET = "grafana-admin"
RECEIVERS_SECRET = "alertmanager-receivers"
PAGERDUTY_KEY = "pagerduty-routing-key"
SLACK_KEY = "slack-webhook-url"
RECEIVER_SECRET_KEYS = {"pagerdutyRoutingKey": PAGERDUTY_KEY, "slackWebhookUrl": SLACK_KEY}
"""Secret config key -> its key in the receivers Secret."""
ALERTMANAGER_CONFIG = "llm-platform"
SCRAPE_INTERVAL = "15s"
"""Also the rule evaluation interval: the autoscaler reads recorded series, so this bounds how stale they are."""
RETENTION_SHARE = 0.85
"""Prometheus stops at this share of its volume (retentionSize) so a full disk never stops ingestion."""


# Helm values -----------------------------------------------------------------------------------------------------

def _resources(cpu: str, memory: str, memory_limit: str) -> dict:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def _anti_affinity(replicas: int) -> str:
    """Replicas on different nodes when there are two or more (the config check guarantees the nodes exist)."""
    return "hard" if replicas > 1 else "soft"


def prometheus_stack_values(m: Monitoring) -> dict:
    """kube-prometheus-stack, sized for the system nodes (m7i.large in dev, m7i.xlarge in prod): Prometheus holds a
    few hundred thousand series here (kubelet/cAdvisor, node-exporter, kube-state-metrics, vLLM histograms, DCGM)."""
    # The chart's budget keeps one replica up (minAvailable 1) and lets unhealthy ones be evicted; with one
    # replica it would block every node drain, so it exists only with two or more.
    pdb = {"enabled": m.replicas > 1}
    return {
        "fullnameOverride": RELEASE,
        "crds": {"enabled": False},  # from the prometheus-operator-crds release, which upgrades them
        # EKS runs the control plane: its scheduler, controller manager and etcd cannot be scraped, and kube-proxy
        # listens on localhost. Their monitors and rules would only ever say "down".
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "defaultRules": {"rules": {"etcd": False, "kubeControllerManager": False, "kubeSchedulerAlerting": False,
                                   "kubeSchedulerRecording": False, "kubeProxy": False, "windows": False}},
        "windowsMonitoring": {"enabled": False},
        "prometheusOperator": {
            "nodeSelector": SYSTEM_NODE_LABEL,
            "resources": _resources("100m", "256Mi", "512Mi"),
            "admissionWebhooks": {"patch": {"nodeSelector": SYSTEM_NODE_LABEL},
                                  "deployment": {"nodeSelector": SYSTEM_NODE_LABEL}},
        },
        "prometheus": {
            "podDisruptionBudget": pdb,
            "prometheusSpec": {
                "replicas": m.replicas,
                "podAntiAffinity": _anti_affinity(m.replicas),
                "nodeSelector": SYSTEM_NODE_LABEL,
                "resources": _resources("500m", "2Gi", "4Gi"),
                "retention": m.retention,
                "retentionSize": f"{int(m.storage_gib * RETENTION_SHARE)}GB",
                "scrapeInterval": SCRAPE_INTERVAL,
                "evaluationInterval": SCRAPE_INTERVAL,
                # Pick up every ServiceMonitor, PodMonitor, Probe and PrometheusRule in every namespace, not only
                # the ones labelled with this Helm release.
                **{f"{kind}SelectorNilUsesHelmValues": False
                   for kind in ("rule", "serviceMonitor", "podMonitor", "probe", "scrapeConfig")},
                **{f"{kind}NamespaceSelector": {} for kind in ("rule", "serviceMonitor", "podMonitor", "probe")},
                "storageSpec": {"volumeClaimTemplate": {"spec": {
                    "storageClassName": "gp3",
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": f"{m.storage_gib}Gi"}},
                }}},
            },
        },
        "alertmanager": {
            "podDisruptionBudget": pdb,
            "alertmanagerSpec": {
                "replicas": m.replicas,
                "podAntiAffinity": _anti_affinity(m.replicas),
                "nodeSelector": SYSTEM_NODE_LABEL,
                "resources": _resources("50m", "128Mi", "256Mi"),
                # The whole routing tree comes from one AlertmanagerConfig whose receivers read their keys from a
                # Secret (see alertmanager_config_spec); the chart's own config secret is unused.
                "alertmanagerConfiguration": {"name": ALERTMANAGER_CONFIG},
                "storage": {"volumeClaimTemplate": {"spec": {
                    "storageClassName": "gp3", "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "2Gi"}},  # silences and the notification log
                }}},
            },
        },
        "grafana": {
            # Reachable only inside the cluster: `kubectl port-forward` (README).
            "service": {"type": "ClusterIP"},
            "ingress": {"enabled": False},
            "admin": {"existingSecret": GRAFANA_SECRET, "userKey": "admin-user", "passwordKey": "admin-password"},
            "nodeSelector": SYSTEM_NODE_LABEL,
            "resources": _resources("100m", "256Mi", "512Mi"),
            "sidecar": {
                "resources": _resources("50m", "64Mi", "256Mi"),
                "dashboards": {"enabled": True, "label": dashboards.LABEL, "labelValue": dashboards.LABEL_VALUE,
                               "searchNamespace": NAMESPACE,
                               "folderAnnotation": dashboards.FOLDER_ANNOTATION,
                               "provider": {"foldersFromFilesStructure": True, "allowUiUpdates": False}},
            },
        },
        "kube-state-metrics": {
            "nodeSelector": SYSTEM_NODE_LABEL,
            "resources": _resources("50m", "128Mi", "512Mi"),
            # Labels the recording rules join on: which model a pod serves, and each node's instance type,
            # capacity type and zone (for its price).
            "metricLabelsAllowlist": [
                # The worker index tells a multi-node group's leader (0) from its workers (signals.GROUP_LEADER).
                "pods=[llm-platform.io/model,llm-platform.io/tier,leaderworkerset.sigs.k8s.io/worker-index]",
                "nodes=[node.kubernetes.io/instance-type,karpenter.sh/capacity-type,topology.kubernetes.io/zone]",
            ],
        },
        # A DaemonSet on every node, GPU nodes included (the chart tolerates every NoSchedule taint).
        "prometheus-node-exporter": {"resources": _resources("50m", "64Mi", "128Mi")},
    }


# The DCGM fields the exporter collects (the chart's list replaced by ours: it comments out the ECC counters).
# Field names from github.com/NVIDIA/dcgm-exporter etc/dcp-metrics-included.csv at 4.8.2; format: field, type, help.
DCGM_COUNTERS = """\
DCGM_FI_DEV_GPU_UTIL, gauge, GPU utilization (in %).
DCGM_FI_DEV_MEM_COPY_UTIL, gauge, Memory utilization (in %).
DCGM_FI_DEV_FB_FREE, gauge, Framebuffer memory free (in MiB).
DCGM_FI_DEV_FB_USED, gauge, Framebuffer memory used (in MiB).
DCGM_FI_DEV_GPU_TEMP, gauge, GPU temperature (in C).
DCGM_FI_DEV_POWER_USAGE, gauge, Power draw (in W).
DCGM_FI_DEV_SM_CLOCK, gauge, SM clock frequency (in MHz).
DCGM_FI_DEV_XID_ERRORS, gauge, Value of the last XID error encountered.
DCGM_FI_DEV_ECC_SBE_VOL_TOTAL, counter, Total number of single-bit volatile ECC errors.
DCGM_FI_DEV_ECC_DBE_VOL_TOTAL, counter, Total number of double-bit volatile ECC errors.
DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS, counter, Number of remapped rows for uncorrectable errors.
DCGM_FI_DEV_ROW_REMAP_FAILURE, gauge, Whether remapping of rows has failed.
DCGM_FI_DEV_PCIE_REPLAY_COUNTER, counter, Total number of PCIe retries.
DCGM_FI_PROF_GR_ENGINE_ACTIVE, gauge, Ratio of time the graphics engine is active.
DCGM_FI_PROF_PIPE_TENSOR_ACTIVE, gauge, Ratio of cycles the tensor (HMMA) pipe is active.
DCGM_FI_PROF_DRAM_ACTIVE, gauge, Ratio of cycles the device memory interface is active.
"""


def dcgm_values() -> dict:
    """One exporter per NVIDIA node (GPU taint tolerated, Karpenter's GPU label selected), with DCGM's Kubernetes
    mapping: each GPU's series carries the namespace, pod and container holding it. `honorLabels` keeps those
    rather than the exporter pod's own."""
    return {
        "tolerations": [{"key": GPU_TAINT["key"], "operator": "Exists", "effect": GPU_TAINT["effect"]}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{
            "matchExpressions": [
                {"key": "karpenter.k8s.aws/instance-gpu-manufacturer", "operator": "In", "values": ["nvidia"]},
            ],
        }]}}},
        "resources": _resources("100m", "256Mi", "512Mi"),
        "serviceMonitor": {"enabled": True, "interval": SCRAPE_INTERVAL, "honorLabels": True},
        "customMetrics": DCGM_COUNTERS,
    }


# Monitors --------------------------------------------------------------------------------------------------------

def model_server_pod_monitor_spec() -> dict:
    """Every model server's /metrics, vLLM and TGI alike, with `model` and `tier` copied from the pod's labels so
    that every series names the model it belongs to (vLLM's own `model_name` is the served name, TGI has none)."""
    def copy(pod_label: str, target: str) -> dict:
        return {"action": "replace", "sourceLabels": [f"__meta_kubernetes_pod_label_{pod_label}"],
                "targetLabel": target}
    return {
        "namespaceSelector": {"matchNames": [INFERENCE_NAMESPACE]},
        "selector": {"matchLabels": {"app.kubernetes.io/component": "model-server", **PLATFORM_LABELS}},
        "podMetricsEndpoints": [{
            "port": "http",
            "path": "/metrics",
            "interval": SCRAPE_INTERVAL,
            "relabelings": [copy("llm_platform_io_model", "model"), copy("llm_platform_io_tier", "tier"),
                            copy("app_kubernetes_io_name", "engine")],
        }],
    }


def gpu_instance_regex() -> str:
    return "(" + "|".join(sorted(INSTANCE_FAMILIES)) + r")\..+"


def karpenter_service_monitor_spec() -> dict:
    """The controller's metrics. Karpenter prices and offers every instance type of the region in every zone;
    only the GPU families the platform can launch are kept (the cost rules need those, the rest is cardinality)."""
    return {
        "namespaceSelector": {"matchNames": [KARPENTER_NAMESPACE]},
        "selector": {"matchLabels": {"app.kubernetes.io/name": "karpenter", "app.kubernetes.io/instance": "karpenter"}},
        "endpoints": [{
            "port": "http-metrics",
            "interval": SCRAPE_INTERVAL,
            "metricRelabelings": [
                {"action": "replace", "sourceLabels": ["instance_type"], "regex": gpu_instance_regex(),
                 "targetLabel": "__tmp_gpu_instance", "replacement": "true"},
                {"action": "drop", "sourceLabels": ["__name__", "__tmp_gpu_instance"],
                 "regex": "karpenter_cloudprovider_instance_type_offering_.+;"},
                {"action": "labeldrop", "regex": "__tmp_gpu_instance"},
            ],
        }],
    }


def keda_pod_monitor_spec() -> dict:
    return {
        "namespaceSelector": {"matchNames": [KEDA_NAMESPACE]},
        "selector": {"matchLabels": {"app.kubernetes.io/name": KEDA_OPERATOR}},
        "podMetricsEndpoints": [{"port": "metrics", "interval": SCRAPE_INTERVAL}],
    }


# Alertmanager routing -------------------------------------------------------------------------------------------

def _match(name: str, value: str, regex: bool = False) -> dict:
    return {"name": name, "value": value, "matchType": "=~" if regex else "="}


def alertmanager_config_spec(alerting: Alerting) -> dict:
    """The whole routing tree. `critical` pages PagerDuty, `warning` (and `critical`, for the record) goes to
    Slack. Alerts about a model are grouped by model, so one notification carries everything wrong with it; a
    model's warnings are held back while a critical alert fires for the same model. Everything else (Watchdog,
    info) goes nowhere. With no receivers, everything goes nowhere and shows only in the Alertmanager UI."""
    receivers: list[dict] = [{"name": "null"}]
    by_severity: list[dict] = []
    if alerting.pagerduty:
        receivers.append({"name": "pagerduty", "pagerdutyConfigs": [{
            "routingKey": {"name": RECEIVERS_SECRET, "key": PAGERDUTY_KEY}, "sendResolved": True,
        }]})
        by_severity.append({"receiver": "pagerduty", "matchers": [_match("severity", "critical")], "continue": True})
    if alerting.slack:
        slack = {
            "apiURL": {"name": RECEIVERS_SECRET, "key": SLACK_KEY}, "sendResolved": True,
            # A model's group can hold several alerts, and then they share no alertname: say how many instead.
            "title": '[{{ .Status | toUpper }}] {{ or .CommonLabels.alertname (printf "%d alerts" (len .Alerts)) }} '
                     '{{ .CommonLabels.model }}',
            "text": "{{ range .Alerts }}*{{ .Labels.severity }}* {{ .Annotations.summary }}\n"
                    "{{ .Annotations.description }} Runbook: {{ .Annotations.runbook_url }}\n{{ end }}",
        }
        if alerting.slack_channel:
            slack["channel"] = alerting.slack_channel
        receivers.append({"name": "slack", "slackConfigs": [slack]})
        by_severity.append({"receiver": "slack", "matchers": [_match("severity", "warning|critical", regex=True)]})
    return {
        "route": {
            "receiver": "null",
            "groupBy": ["alertname", "namespace"],
            "groupWait": "30s",
            "groupInterval": "5m",
            "repeatInterval": "4h",
            "routes": [
                {"receiver": "null", "matchers": [_match("model", ".+", regex=True)], "groupBy": ["model"],
                 "routes": by_severity},
                *by_severity,
            ] if by_severity else [],
        },
        "receivers": receivers,
        "inhibitRules": [{
            "sourceMatch": [_match("severity", "critical"), _match("model", ".+", regex=True)],
            "targetMatch": [_match("severity", "warning")],
            "equal": ["model"],
        }],
    }


# Component -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonitoringStackArgs:
    cfg: StackConfig
    grafana_admin_password: pulumi.Input[str]
    receiver_secrets: dict[str, pulumi.Input[str]]
    """Secret config key -> value, for the receivers `monitoring.alerting` turns on (its `secret_keys`)."""
    depends_on: list[pulumi.Resource]
    """The system nodes and the gp3 StorageClass the volumes use."""


class MonitoringStack(pulumi.ComponentResource):
    crds: k8s.helm.v3.Release
    release: k8s.helm.v3.Release
    prometheus_url: str = PROMETHEUS_URL

    def __init__(self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:MonitoringStack", name, None, opts)
        m = args.cfg.monitoring
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(f"{name}-namespace", metadata={"name": NAMESPACE, "labels": {
            # node-exporter reads the host (hostNetwork, hostPID, hostPath) and DCGM needs SYS_ADMIN.
            **PLATFORM_LABELS, "pod-security.kubernetes.io/enforce": "privileged",
            "pod-security.kubernetes.io/warn": "baseline"}}, opts=child)
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        secrets = [opaque_secret(f"{name}-grafana-admin", name=GRAFANA_SECRET, namespace=NAMESPACE,
                                 data={"admin-user": "admin", "admin-password": args.grafana_admin_password},
                                 opts=in_namespace)]
        if m.alerting.secret_keys:
            secrets.append(opaque_secret(
                f"{name}-alertmanager-receivers", name=RECEIVERS_SECRET, namespace=NAMESPACE,
                data={RECEIVER_SECRET_KEYS[key]: args.receiver_secrets[key] for key in m.alerting.secret_keys},
                opts=in_namespace,
            ))

        self.crds = helm.release(
            f"{name}-crds", versions.PROMETHEUS_OPERATOR_CRDS, release_name="prometheus-operator-crds",
            namespace=NAMESPACE, opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *args.depends_on]),
        )
        after_crds = pulumi.ResourceOptions(parent=self, depends_on=[namespace, self.crds])
        self.release = helm.release(
            f"{name}-release", versions.KUBE_PROMETHEUS_STACK, release_name=RELEASE, namespace=NAMESPACE,
            values=prometheus_stack_values(m), skip_crds=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.crds, *secrets, *args.depends_on]),
        )
        helm.release(f"{name}-dcgm-exporter", versions.DCGM_EXPORTER, release_name="dcgm-exporter",
                     namespace=NAMESPACE, values=dcgm_values(), opts=after_crds)

        def custom(part: str, kind: str, object_name: str, spec: dict,
                   api_version: str = "monitoring.coreos.com/v1") -> k8s.apiextensions.CustomResource:
            return k8s.apiextensions.CustomResource(
                f"{name}-{part}", api_version=api_version, kind=kind,
                metadata={"name": object_name, "namespace": NAMESPACE, "labels": PLATFORM_LABELS},
                spec=spec, opts=after_crds)

        custom("model-servers", "PodMonitor", "model-servers", model_server_pod_monitor_spec())
        if any(m.routed for m in args.cfg.models.values()):
            custom("replica-routers", "PodMonitor", "replica-routers", replica_router.pod_monitor_spec())
        custom("karpenter", "ServiceMonitor", "karpenter", karpenter_service_monitor_spec())
        custom("keda", "PodMonitor", "keda-operator", keda_pod_monitor_spec())
        custom("rules", "PrometheusRule", "llm-platform", {"groups": signals.prometheus_rule_groups(args.cfg)})
        custom("alertmanager-config", "AlertmanagerConfig", ALERTMANAGER_CONFIG, alertmanager_config_spec(m.alerting),
               api_version="monitoring.coreos.com/v1alpha1")
        k8s.core.v1.ConfigMap(
            f"{name}-dashboards",
            metadata={"name": "llm-platform-dashboards", "namespace": NAMESPACE,
                      "labels": {**PLATFORM_LABELS, dashboards.LABEL: dashboards.LABEL_VALUE},
                      "annotations": {dashboards.FOLDER_ANNOTATION: dashboards.FOLDER}},
            data=dashboards.configmap_data(any(m.adapters for m in args.cfg.models.values())),
            opts=in_namespace,
        )
        self.register_outputs({
            "prometheusUrl": PROMETHEUS_URL,
            "grafanaService": f"{NAMESPACE}/{GRAFANA_SERVICE}",
            "chartVersion": versions.KUBE_PROMETHEUS_STACK.version,
        })
