"""RedisCache: the ElastiCache (Valkey or Redis OSS) replication group the gateway shares its rate-limit counters
and optional response cache through. Private subnets only, reachable only from the cluster's nodes, TLS in
transit, an AUTH token, and encryption at rest with its own KMS key."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from catalog import versions
from config.schema import Redis

PORT = 6379


def engine_version(cfg: Redis) -> tuple[str, str]:
    """(engine version, parameter group family): the configured version, or the newest checked one."""
    default_version, family = versions.CACHE_ENGINES[cfg.engine]
    version = cfg.engine_version or default_version
    return version, f"{cfg.engine}{version.split('.')[0]}"


def parameters() -> list[dict[str, str]]:
    """Counters and cached answers are disposable: when memory is full, evict the least recently used key of any
    kind (the seed's choice) rather than refusing writes, which would fail requests."""
    return [{"name": "maxmemory-policy", "value": "allkeys-lru"}]


def failover(cfg: Redis) -> dict:
    """With a replica, a primary's failure promotes the replica in another AZ; without one there is nothing to
    fail over to, and ElastiCache refuses both settings."""
    with_replica = cfg.replicas > 0
    return {"automatic_failover_enabled": with_replica, "multi_az_enabled": with_replica,
            "num_cache_clusters": 1 + cfg.replicas}


@dataclass(frozen=True)
class RedisCacheArgs:
    name: str
    """Physical name prefix (the cluster name): replication group IDs are unique per account and region."""
    config: Redis
    vpc_id: pulumi.Input[str]
    subnet_ids: list[pulumi.Input[str]]
    """The private subnets, one per AZ."""
    node_security_group_id: pulumi.Input[str]
    """The security group every node (system and Karpenter) carries: the only source admitted."""
    auth_token: pulumi.Output[str]


class RedisCache(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]
    """The primary endpoint's address (TLS, port PORT)."""
    port: int = PORT

    def __init__(self, name: str, args: RedisCacheArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("llm-platform:index:RedisCache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.config
        version, family = engine_version(cfg)
        key = aws.kms.Key(f"{name}-kms", description=f"{args.name} gateway Redis at rest", enable_key_rotation=True,
                          deletion_window_in_days=7, opts=child)
        security_group = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, description=f"{args.name} gateway Redis: cluster nodes only",
            ingress=[aws.ec2.SecurityGroupIngressArgs(protocol="tcp", from_port=PORT, to_port=PORT,
                                                      security_groups=[args.node_security_group_id],
                                                      description="Redis TLS from the cluster's nodes")],
            tags={"Name": f"{args.name}-redis"}, opts=child)
        subnets = aws.elasticache.SubnetGroup(f"{name}-subnets", subnet_ids=args.subnet_ids,
                                              description=f"{args.name} private subnets", opts=child)
        parameter_group = aws.elasticache.ParameterGroup(
            f"{name}-params", family=family, description=f"{args.name} gateway Redis",
            parameters=[aws.elasticache.ParameterGroupParameterArgs(**p) for p in parameters()], opts=child)
        self.group = aws.elasticache.ReplicationGroup(
            f"{name}-group",
            replication_group_id=f"{args.name}-gateway"[:40],
            description=f"{args.name} gateway rate limits and cache",
            engine=cfg.engine,
            engine_version=version,
            node_type=cfg.node_type,
            port=PORT,
            parameter_group_name=parameter_group.name,
            subnet_group_name=subnets.name,
            security_group_ids=[security_group.id],
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=args.auth_token,
            auth_token_update_strategy="ROTATE",
            at_rest_encryption_enabled=True,
            kms_key_id=key.arn,
            snapshot_retention_limit=cfg.snapshot_retention_days,
            apply_immediately=False,
            auto_minor_version_upgrade=True,
            **failover(cfg),
            opts=child,
        )
        self.endpoint = self.group.primary_endpoint_address
        self.register_outputs({"endpoint": self.endpoint, "port": PORT})
