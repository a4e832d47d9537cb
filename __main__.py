"""llm-platform: read the stack's typed config, build the Platform, export what operators need."""

import pulumi

import config
from components.platform import Platform

try:
    cfg = config.load()
except config.ConfigError as error:
    raise pulumi.RunError(str(error)) from None  # RunError prints the message without a traceback

platform = Platform("llm", cfg, secrets={key: config.secret(key) for key in config.SECRET_KEYS})

pulumi.export("clusterName", platform.cluster.cluster_name)
pulumi.export("region", cfg.cluster.region)
pulumi.export("vpcId", platform.cluster.vpc_id)
pulumi.export("privateSubnetIds", platform.cluster.private_subnet_ids)
pulumi.export("kubeconfig", platform.cluster.kubeconfig)
pulumi.export("karpenterInterruptionQueue", platform.karpenter.queue.name)
pulumi.export("gpuNodePools", {key: pool.node_pool_names for key, pool in platform.gpu_pools.items()})
pulumi.export("modelRegistryBucket", platform.registry.bucket.bucket)
pulumi.export("auditBucket", platform.audit_logs.bucket.bucket)
pulumi.export("modelEndpoints", {key: server.endpoint for key, server in platform.model_servers.items()})
pulumi.export("prometheusUrl", platform.monitoring.prometheus_url)
pulumi.export("gatewayUrl", platform.edge.url or platform.gateway.url)
pulumi.export("redisEndpoint", platform.redis.endpoint)
