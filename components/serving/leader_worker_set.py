"""A model across nodes: each replica is one LeaderWorkerSet group (kubernetes-sigs/lws) of pipelineParallelSize
pods, one per node, each running the same `vllm serve` on its pipeline stage's layers with tensorParallelSize GPUs.

vLLM 0.32 joins the nodes without Ray (`--distributed-executor-backend mp` with `--nnodes`, `--node-rank`,
`--master-addr`, `--master-port`): rank 0, the leader, serves the API and the metrics; the others run `--headless`
workers. Each pod's rank and the leader's address come from LWS's own environment (LWS_WORKER_INDEX,
LWS_LEADER_ADDRESS, injected by its webhook ahead of the container's own variables, so `$(VAR)` in the arguments
expands to them). `make e2e` runs the rendered leader and worker arguments as two vLLM CPU processes.

Decisions are plain functions of the config, tested without a Pulumi runtime.
"""

from __future__ import annotations

import copy

from components.shared.disruption import surge_one_at_a_time

API_VERSION = "leaderworkerset.x-k8s.io/v1"
KIND = "LeaderWorkerSet"
# Labels LWS puts on every pod it creates (api/leaderworkerset/v1/leaderworkerset_types.go, v0.10.0).
SET_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
LEADER_ADDRESS = "$(LWS_LEADER_ADDRESS)"
WORKER_INDEX = "$(LWS_WORKER_INDEX)"
MASTER_PORT = 29501
"""torch.distributed's rendezvous on the leader (vLLM's default, set explicitly so it is documented). The other
connections between a group's pods (vLLM's message queues, gloo and NCCL) use ports the processes pick at start, so
the group's NetworkPolicy admits every TCP port between its pods (components/edge/network_policy.py)."""


def group_args(stages: int) -> list[str]:
    """What every pod of a group adds to `vllm serve`: the group's shape and where rank 0 listens. The leader is
    rank 0; `worker_container` changes the rank for the others."""
    return ["--pipeline-parallel-size", str(stages), "--distributed-executor-backend", "mp",
            "--nnodes", str(stages), "--node-rank", "0", "--master-addr", LEADER_ADDRESS,
            "--master-port", str(MASTER_PORT)]


def worker_container(leader: dict) -> dict:
    """The leader's container as a worker: its own rank, `--headless` (no API server: only the leader serves
    HTTP and metrics), and so no port and no probes. The worker's process is its health: when it exits, its pod
    restarts and LWS recreates the whole group (restartPolicy); the leader would not notice (`make e2e` measures it)."""
    worker = copy.deepcopy(leader)
    args = worker["args"]
    args[args.index("--node-rank") + 1] = WORKER_INDEX
    worker["args"] = [*args, "--headless"]
    for field in ("ports", "startupProbe", "readinessProbe", "livenessProbe", "lifecycle"):
        worker.pop(field, None)
    return worker


def endpoint_labels() -> dict[str, str]:
    """The leader of each group: the only pod with the API, so the one a Service, the replica router or a
    PodMonitor may send to (one endpoint per group)."""
    return {WORKER_INDEX_LABEL: "0"}


def same_zone_as_group(key: str) -> dict:
    """Every pod of a group in its leader's zone (NCCL across zones is slower and billed): required pod affinity
    to the pods of the same group, matched by the group's own key label (matchLabelKeys, on by default since
    Kubernetes 1.31). The first pod of a group matches no one and goes anywhere; the rest follow it."""
    return {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {SET_NAME_LABEL: key}},
        "matchLabelKeys": [GROUP_KEY_LABEL],
        "topologyKey": "topology.kubernetes.io/zone",
    }]}}


def rollout_strategy() -> dict:
    """One whole new group before an old one goes, as the single-node servers' Deployments do."""
    surge = surge_one_at_a_time()["rollingUpdate"]
    return {"type": "RollingUpdate", "rollingUpdateConfiguration": {"maxSurge": surge["maxSurge"],
                                                                    "maxUnavailable": surge["maxUnavailable"]}}


def leader_worker_set_spec(stages: int, replicas: int, leader_template: dict, worker_template: dict) -> dict:
    """`leader_template` and `worker_template` are pod templates (metadata and spec) built from one container.
    - startupPolicy LeaderCreated: the workers start with the leader, which cannot become ready without them;
    - restartPolicy RecreateGroupOnPodRestart: a failed pod takes its whole group down and LWS starts it again
      (a pipeline missing a stage serves nothing, and vLLM cannot re-admit a restarted rank);
    - replicas only at creation: KEDA owns them afterwards, through the LeaderWorkerSet's scale subresource."""
    return {
        "replicas": replicas,
        "startupPolicy": "LeaderCreated",
        "rolloutStrategy": rollout_strategy(),
        "leaderWorkerTemplate": {
            "size": stages,
            "restartPolicy": "RecreateGroupOnPodRestart",
            "leaderTemplate": leader_template,
            "workerTemplate": worker_template,
        },
    }


def never_evict(match_labels: dict[str, str]) -> dict:
    """A PodDisruptionBudget spec that refuses every voluntary eviction of a group's pods: evicting any one pod
    takes its whole group down, so a drain must not pick pods one at a time. Groups are replaced whole by a
    LeaderWorkerSet rollout, or when the NodePool's terminationGracePeriod forces the node; the pods also carry
    karpenter.sh/do-not-disrupt, so Karpenter does not start consolidating or drifting their nodes."""
    return {"maxUnavailable": 0, "selector": {"matchLabels": match_labels}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}
