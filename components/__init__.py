"""The platform's Pulumi components, grouped by the plane they belong to; `platform.Platform` wires them together.

- `compute/`: the cluster and its capacity: VPC and EKS, Karpenter, the GPU node pools, the NVIDIA device plugin.
- `serving/`: the model servers (vLLM, TGI), the model registry, and the KEDA scalers that size them.
- `edge/`: the way in: the LiteLLM gateway, the load balancer, Redis for shared limits, and NetworkPolicies that make
  the gateway the only way to the servers.
- `observability/`: what the platform records: the monitoring stack, the PromQL it publishes (`signals`), dashboards,
  and the audit logs.
- `shared/`: helpers several planes use: labels, Helm releases, Secrets, IAM documents, private buckets.

Imports point down the list compute <- serving <- edge, with observability watching compute and serving, and the
others reading observability only through `observability.signals` (tests/test_layout.py holds this). The code that
runs inside the gateway's container is not here: see gateway_plugins/.
"""
