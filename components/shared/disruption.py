"""How the platform's Deployments change and drain: one pod at a time, never below what is running."""

from __future__ import annotations


def surge_one_at_a_time() -> dict:
    """A rollout starts one new pod before it stops an old one: capacity never dips (a model server takes minutes
    to load, and the gateway and routers carry every request)."""
    return {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def evict_one_at_a_time(match_labels: dict[str, str]) -> dict:
    """A PodDisruptionBudget spec: one pod at a time may be evicted, so drains proceed even with one replica and
    never take all of them; unready (still starting) pods can always be evicted, so they never block a drain."""
    return {"maxUnavailable": 1, "selector": {"matchLabels": match_labels}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}
