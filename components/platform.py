"""Platform: the wiring diagram. Every piece of the LLM platform is created here, in dependency order."""

from __future__ import annotations

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.compute.cluster import EksCluster, EksClusterArgs
from components.compute.efa_device_plugin import EfaDevicePlugin
from components.compute.gpu_node_pool import GpuNodePool, GpuNodePoolArgs
from components.compute.karpenter import Karpenter, KarpenterArgs
from components.compute.nvidia_device_plugin import NvidiaDevicePlugin
from components.edge import network_policy
from components.edge.gateway import NAMESPACE as GATEWAY_NAMESPACE
from components.edge.gateway import GatewayArgs, GatewayService
from components.edge.ingress import Edge, EdgeArgs
from components.edge.redis_cache import RedisCache, RedisCacheArgs
from components.observability.audit_logs import AuditLogs, AuditLogsArgs
from components.observability.monitoring import NAMESPACE as MONITORING_NAMESPACE
from components.observability.monitoring import PROMETHEUS_POD_LABELS, MonitoringStack, MonitoringStackArgs
from components.serving.keda_scaler import Keda, KedaScaler, KedaScalerArgs
from components.serving.lws_controller import LwsController
from components.serving.model_registry import ModelRegistry, ModelRegistryArgs
from components.serving.model_server import NAMESPACE, TOKEN_SECRET, TOKEN_SECRET_KEY, ModelServer, ModelServerArgs
from components.serving.replica_router import ReplicaRouter, ReplicaRouterArgs
from components.serving.tgi_service import TgiService
from components.serving.vllm_service import VllmService
from components.shared.labels import PLATFORM_LABELS
from components.shared.secret import opaque_secret
from config import StackConfig


def controller_replicas(system_min_size: int) -> int:
    """Controllers (Karpenter, KEDA) run two replicas for failover, one per node: only ask for two when two system
    nodes always exist."""
    return 2 if system_min_size >= 2 else 1


class Platform(pulumi.ComponentResource):
    cluster: EksCluster
    karpenter: Karpenter
    gpu_pools: dict[str, GpuNodePool]
    registry: ModelRegistry
    model_servers: dict[str, ModelServer]
    replica_routers: dict[str, ReplicaRouter]
    monitoring: MonitoringStack
    scalers: dict[str, KedaScaler]
    redis: RedisCache
    gateway: GatewayService
    edge: Edge

    def __init__(self, name: str, cfg: StackConfig, secrets: dict[str, pulumi.Output[str] | None],
                 opts: pulumi.ResourceOptions | None = None):
        """`secrets`: the stack's secret config by key (config.SECRET_KEYS), None where unset; config.load has
        already checked that every secret this stack needs is set."""
        super().__init__("llm-platform:index:Platform", name, None, opts)
        aws_provider = aws.Provider(
            f"{name}-aws",
            region=cfg.cluster.region,
            default_tags=aws.ProviderDefaultTagsArgs(tags=cfg.aws_tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        on_aws = pulumi.ResourceOptions(parent=self, providers={"aws": aws_provider})

        self.cluster = EksCluster(f"{name}-cluster", EksClusterArgs(cfg.cluster_name, cfg.cluster), on_aws)
        on_cluster = pulumi.ResourceOptions(
            parent=self, providers={"aws": aws_provider, "kubernetes": self.cluster.provider}
        )

        self.karpenter = Karpenter(f"{name}-karpenter", KarpenterArgs(
            cluster_name=cfg.cluster_name,
            cluster_name_output=self.cluster.cluster_name,
            region=cfg.cluster.region,
            replicas=controller_replicas(cfg.cluster.system_node_group.min_size),
            system_nodes=self.cluster.system_nodes,
            depends_on=[self.cluster.addons["coredns"], self.cluster.addons["eks-pod-identity-agent"]],
        ), on_cluster)

        self.gpu_pools = {
            key: GpuNodePool(f"{name}-gpu-{key}", GpuNodePoolArgs(
                pool_key=key,
                pool=pool,
                cluster_name=cfg.cluster_name,
                node_role_name=self.karpenter.node_role.name,
                tags=cfg.aws_tags,
                depends_on=[self.karpenter.crds, self.karpenter.release],
                vpc_id=self.cluster.vpc_id,
            ), on_cluster)
            for key, pool in cfg.gpu_pools.items()
        }
        if any(pool.ami_family == "al2023" for pool in cfg.gpu_pools.values()):
            NvidiaDevicePlugin(f"{name}-nvidia-device-plugin", on_cluster)
        if any(pool.efa for pool in cfg.gpu_pools.values()):
            EfaDevicePlugin(f"{name}-efa-device-plugin", on_cluster)

        # Model serving
        namespace = k8s.core.v1.Namespace(f"{name}-inference", metadata={
            "name": NAMESPACE,
            # Model servers run as a non-root UID with only emptyDir, secret and projected volumes.
            "labels": {**PLATFORM_LABELS, "pod-security.kubernetes.io/enforce": "restricted"},
        }, opts=on_cluster)
        self.registry = ModelRegistry(f"{name}-registry", ModelRegistryArgs(
            cluster_name=cfg.cluster_name,
            cluster_name_output=self.cluster.cluster_name,
            config=cfg.model_registry,
            region=cfg.cluster.region,
            namespace=namespace,
        ), on_cluster)
        self.audit_logs = AuditLogs(f"{name}-audit", AuditLogsArgs(
            cluster_name=cfg.cluster_name, region=cfg.cluster.region, retention_days=cfg.cluster.log_retention_days,
            vpc_id=self.cluster.vpc_id, logged_buckets={"registry": self.registry.bucket},
        ), on_aws)
        server_prerequisites = [namespace, self.registry.server_service_account, *self.registry.associations,
                                *self.gpu_pools.values()]
        huggingface_token = secrets.get("huggingfaceToken")
        if huggingface_token is not None:
            server_prerequisites.append(opaque_secret(
                f"{name}-huggingface-token", name=TOKEN_SECRET, namespace=NAMESPACE,
                data={TOKEN_SECRET_KEY: huggingface_token},
                opts=pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace])),
            ))
        multi_node = sorted(key for key, m in cfg.models.items() if m.multi_node)
        group_controller = [LwsController(
            f"{name}-lws", controller_replicas(cfg.cluster.system_node_group.min_size),
            depends_on=[self.cluster.system_nodes], opts=on_cluster).release] if multi_node else []
        self.model_servers = {
            key: (TgiService if m.engine == "tgi" else VllmService)(f"{name}-model-{key}", ModelServerArgs(
                key=key,
                deployment=m,
                pool=cfg.gpu_pools[m.gpu_pool],
                region=cfg.cluster.region,
                registry_bucket=self.registry.bucket.bucket,
                token_secret=TOKEN_SECRET if huggingface_token is not None else None,
                depends_on=server_prerequisites,
                group_controller=group_controller,
            ), on_cluster)
            for key, m in cfg.models.items()
        }
        self.replica_routers = {
            key: ReplicaRouter(f"{name}-router-{key}", ReplicaRouterArgs(
                key=key,
                deployment=m,
                request_timeout_seconds=cfg.gateway.request_timeout_seconds,
                depends_on=[namespace, self.cluster.system_nodes],
            ), on_cluster)
            for key, m in cfg.models.items() if m.routed
        }
        # The gateway calls a routed model's router, any other model's Service.
        backends = {key: self.replica_routers[key].endpoint if key in self.replica_routers else server.endpoint
                    for key, server in self.model_servers.items()}

        # Monitoring and autoscaling
        self.monitoring = MonitoringStack(f"{name}-monitoring", MonitoringStackArgs(
            cfg=cfg,
            grafana_admin_password=secrets["grafanaAdminPassword"],
            receiver_secrets={key: secrets[key] for key in cfg.monitoring.alerting.secret_keys},
            depends_on=[self.cluster.system_nodes, self.cluster.storage_class],
        ), on_cluster)
        keda = Keda(f"{name}-keda", controller_replicas(cfg.cluster.system_node_group.min_size),
                    depends_on=[self.cluster.system_nodes], opts=on_cluster)
        self.scalers = {
            key: KedaScaler(f"{name}-scaler-{key}", KedaScalerArgs(
                key=key,
                deployment=m,
                prometheus_url=self.monitoring.prometheus_url,
                depends_on=[keda.release, self.model_servers[key].workload],
            ), on_cluster)
            for key, m in cfg.models.items()
        }

        # Edge: Redis, the gateway, the load balancer; and the gateway as the only way to the model servers.
        self.redis = RedisCache(f"{name}-redis", RedisCacheArgs(
            name=cfg.cluster_name,
            config=cfg.redis,
            vpc_id=self.cluster.vpc_id,
            subnet_ids=self.cluster.private_subnet_ids,
            node_security_group_id=self.cluster.cluster_security_group_id,
            auth_token=secrets["redisAuthToken"],
        ), on_aws)
        self.gateway = GatewayService(f"{name}-gateway", GatewayArgs(
            gateway=cfg.gateway,
            models=cfg.models,
            backends=backends,
            master_key=secrets["gatewayMasterKey"],
            client_keys=secrets["gatewayKeys"],
            redis_host=self.redis.endpoint,
            redis_port=self.redis.port,
            redis_auth_token=secrets["redisAuthToken"],
            depends_on=[self.cluster.system_nodes, self.monitoring.crds],
        ), on_cluster)
        self.edge = Edge(f"{name}-edge", EdgeArgs(
            cluster_name=cfg.cluster_name,
            cluster_name_output=self.cluster.cluster_name,
            region=cfg.cluster.region,
            vpc_id=self.cluster.vpc_id,
            replicas=controller_replicas(cfg.cluster.system_node_group.min_size),
            tags=cfg.aws_tags,
            ingress=cfg.gateway.ingress,
            request_timeout_seconds=cfg.gateway.request_timeout_seconds,
            depends_on=[self.cluster.system_nodes, self.cluster.addons["eks-pod-identity-agent"],
                        self.gateway.service],
        ), on_cluster)
        in_serving = pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(depends_on=[namespace]))
        prometheus = network_policy.Peer(MONITORING_NAMESPACE, PROMETHEUS_POD_LABELS)
        network_policy.create(f"{name}-serving", NAMESPACE, network_policy.serving_policies(
            prometheus, routed=sorted(self.replica_routers), multi_node=multi_node), in_serving)
        network_policy.create(f"{name}-gateway", GATEWAY_NAMESPACE,
                              network_policy.gateway_policies(cfg.cluster.vpc_cidr, prometheus),
                              pulumi.ResourceOptions.merge(on_cluster, pulumi.ResourceOptions(
                                  depends_on=[self.gateway.namespace])))

        self.register_outputs({
            "clusterName": self.cluster.cluster_name,
            "vpcId": self.cluster.vpc_id,
            "interruptionQueueUrl": self.karpenter.queue.url,
            "modelRegistryBucket": self.registry.bucket.bucket,
            "prometheusUrl": self.monitoring.prometheus_url,
            "gatewayUrl": self.edge.url or self.gateway.url,
            "redisEndpoint": self.redis.endpoint,
        })
