"""Edge: the way into the platform. The LiteLLM gateway (`gateway`), the AWS Load Balancer Controller and its ALB
(`ingress`), the ElastiCache Redis the gateway shares its limits through (`redis_cache`), and the NetworkPolicies
that leave the gateway as the only way to the model servers (`network_policy`). Reads compute and serving;
observability only through observability.signals."""
