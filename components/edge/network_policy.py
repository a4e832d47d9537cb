"""The gateway is the only way into the model servers: default-deny ingress in the serving namespace, then allow
the gateway (to the servers' API port) and Prometheus (the same port serves /metrics). Enforced by the VPC CNI's
network policy agent (components/compute/cluster.py turns it on). Without these, any pod in the cluster could call a
model server directly and skip the gateway's keys, limits and accounting.

An operator's own in-cluster client must go through the gateway's Service (README, Gateway), or get its own
NetworkPolicy added here.

Prometheus is named by the caller (`Peer`): it belongs to observability, which edge does not import.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.edge import gateway
from components.shared.labels import PLATFORM_LABELS

SERVER_PORT = "http"
"""Both engines name their API port `http` (vLLM 8000, TGI 8080); a named port follows either."""


@dataclass(frozen=True)
class Peer:
    """Pods admitted by a policy: those with `pod_labels` in `namespace`."""

    namespace: str
    pod_labels: dict[str, str]


def _from(peer: Peer) -> dict:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": peer.namespace}},
            "podSelector": {"matchLabels": peer.pod_labels}}


def serving_policies(prometheus: Peer) -> dict[str, dict]:
    """NetworkPolicy specs for the serving namespace, by name; `prometheus` is the scraper."""
    servers = {"matchLabels": {"app.kubernetes.io/component": "model-server"}}
    return {
        "default-deny-ingress": {"podSelector": {}, "policyTypes": ["Ingress"]},
        "allow-gateway": {"podSelector": servers, "policyTypes": ["Ingress"], "ingress": [{
            "from": [_from(Peer(gateway.NAMESPACE, gateway.selector()))],
            "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}]},
        "allow-prometheus": {"podSelector": servers, "policyTypes": ["Ingress"], "ingress": [{
            "from": [_from(prometheus)],
            "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}]},
    }


def gateway_policies(vpc_cidr: str, prometheus: Peer) -> dict[str, dict]:
    """The gateway takes its port from the load balancer (inside the VPC) and Prometheus; nothing else."""
    return {
        "default-deny-ingress": {"podSelector": {}, "policyTypes": ["Ingress"]},
        "allow-load-balancer-and-prometheus": {
            "podSelector": {"matchLabels": gateway.selector()}, "policyTypes": ["Ingress"], "ingress": [{
                "from": [{"ipBlock": {"cidr": vpc_cidr}}, _from(prometheus)],
                "ports": [{"protocol": "TCP", "port": "http"}]}]},
    }


def create(name: str, namespace: str, policies: dict[str, dict], opts: pulumi.ResourceOptions) -> list:
    return [k8s.networking.v1.NetworkPolicy(
        f"{name}-{policy}", metadata={"name": policy, "namespace": namespace, "labels": PLATFORM_LABELS},
        spec=spec, opts=opts) for policy, spec in policies.items()]
