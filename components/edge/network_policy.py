"""The gateway is the only way into the model servers: default-deny ingress in the serving namespace, then allow
the gateway (to the API port of the servers of unrouted models, and of the replica routers), each model's router (to
its own model's servers only) and Prometheus (the servers' API port also serves /metrics; a router's metrics have a
port of their own). Enforced by the VPC CNI's
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
from components.serving import leader_worker_set, model_server, replica_router
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


def serving_policies(prometheus: Peer, routed: list[str], multi_node: list[str] = ()) -> dict[str, dict]:
    """NetworkPolicy specs for the serving namespace, by name; `prometheus` is the scraper, `routed` the models whose
    replicas sit behind a replica router (their servers admit only that router, never the gateway), `multi_node`
    the models whose replicas are groups of pods across nodes."""
    servers = {"matchLabels": {"app.kubernetes.io/component": "model-server"}}
    unrouted_servers = {**servers, "matchExpressions": [
        {"key": "app.kubernetes.io/instance", "operator": "NotIn", "values": routed}]} if routed else servers
    routers = {"matchLabels": {"app.kubernetes.io/component": replica_router.COMPONENT}}
    from_gateway = [_from(Peer(gateway.NAMESPACE, gateway.selector()))]
    policies = {
        "default-deny-ingress": {"podSelector": {}, "policyTypes": ["Ingress"]},
        "allow-gateway": {"podSelector": unrouted_servers, "policyTypes": ["Ingress"], "ingress": [{
            "from": from_gateway, "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}]},
        "allow-prometheus": {"podSelector": servers, "policyTypes": ["Ingress"], "ingress": [{
            "from": [_from(prometheus)],
            "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}]},
    }
    if routed:
        policies |= {
            "allow-gateway-to-routers": {"podSelector": routers, "policyTypes": ["Ingress"], "ingress": [{
                "from": from_gateway, "ports": [{"protocol": "TCP", "port": "http"}]}]},
            "allow-prometheus-to-routers": {"podSelector": routers, "policyTypes": ["Ingress"], "ingress": [{
                "from": [_from(prometheus)], "ports": [{"protocol": "TCP", "port": "metrics"}]}]},
        }
    for key in multi_node:
        # The pods of a group talk on the rendezvous port and on ports vLLM's message queues, gloo and NCCL pick at
        # start (components/serving/leader_worker_set.py MASTER_PORT), so every TCP port is open between them. The
        # peers are the pods of the model's LeaderWorkerSet: a policy is static, and groups come and go with
        # scaling, so one group cannot be told from another here. EFA's traffic is not IP and is governed by the
        # pool's security group instead (components/compute/gpu_node_pool.py).
        group = {"matchLabels": {leader_worker_set.SET_NAME_LABEL: key}}
        policies[f"allow-group-{key}"] = {"podSelector": group, "policyTypes": ["Ingress"], "ingress": [{
            "from": [{"podSelector": group}], "ports": [{"protocol": "TCP"}]}]}
    for key in routed:
        policies[f"allow-router-{key}"] = {
            "podSelector": {"matchLabels": model_server.selector(key)}, "policyTypes": ["Ingress"], "ingress": [{
                "from": [_from(Peer(model_server.NAMESPACE, replica_router.selector(key)))],
                "ports": [{"protocol": "TCP", "port": SERVER_PORT}]}]}
    return policies


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
