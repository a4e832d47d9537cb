"""`make bench`: what the replica router's policies do to prefix-cache hits, time to first token and load balance, on
real vLLM CPU servers, driven by NVIDIA AIPerf (a standard LLM load generator, its own virtualenv .venv-bench).

Two vLLM servers of one model (the ~25M-parameter generated Llama, tests/e2e/tiny_model.py --size bench: big
enough that prefilling a long prompt shows in TTFT), each on a core of its own, with the rendered arguments of a
routed model (prefix caching, --enable-scale-out). In front of them the rendered router, once per policy, and the
same workload each time: several users, each a multi-turn conversation (the history grows every turn) that starts
with a system prompt shared by all and a long context of its own. Every run starts with empty prefix caches
(vLLM's /reset_prefix_cache, on in these servers only: VLLM_SERVER_DEV_MODE). The single-replica run sends the same
workload straight to one server: its hit rate is the ceiling (nothing is ever computed twice).

Reported per run: prefix-cache hit rate from vLLM's own counters (hits / queries, in tokens, summed over servers),
TTFT p50 and p99 and request throughput from AIPerf, the mean and p90 TTFT of conversations' later turns (from
AIPerf's per-request records: the turns a cached history can speed up), and requests per server with the skew
(busiest / mean). With two replicas, random placement sends a next turn to the replica holding its history half
the time, so the p50 of all requests sits between the cached and the uncached mode and moves from run to run; the
later turns' mean and p90 do not.
Also the default policy behind two router processes (requests alternating, as their Service spreads them), and with
the router's own cache_aware defaults. Report: build/bench/report.md. Not a timed test: about 6 minutes on 2 cores.
Usage: python -m tests.bench_routing [--aiperf PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import config
from tests.conftest import ROOT
from tests.e2e.stack import server_args
from tests.replica_router_local import start_router
from tests.servers import Server, free_port, fresh_folder, start

WORK = ROOT / "build" / "bench"
MODEL_DIR = WORK / "model"
VLLM_PYTHON = ROOT / os.environ.get("LLM_PLATFORM_VLLM_PYTHON", ".venv-upstream/bin/python")
AIPERF = ROOT / ".venv-bench" / "bin" / "aiperf"
KEY = "bench"
SERVER_STARTUP_SECONDS = 300
RUN_SECONDS = 900
# The workload (AIPerf synthetic multi-turn): 16 users, 6 turns each, a 512-token system prompt shared by all and a
# 1024-token context of each user's own, 64 new tokens a turn, 8 generated; 4 requests in flight.
WORKLOAD = {"--conversation-num": 16, "--num-dataset-entries": 16, "--conversation-turn-mean": 6,
            "--conversation-turn-stddev": 0, "--shared-system-prompt-length": 512,
            "--user-context-prompt-length": 1024, "--isl": 64, "--isl-stddev": 0, "--osl": 8, "--osl-stddev": 0,
            "--concurrency": 4, "--random-seed": 1}
MAX_MODEL_LEN = 4096
SESSION_HEADER = "X-Session-ID"
"""What consistent_hash hashes (the router reads x-session-id first); AIPerf sets one per conversation."""


def stack_config() -> config.StackConfig:
    """A routed model with the platform's defaults: the catalog's 8B for the planner, the bench checkpoint served."""
    return config.parse("bench", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"gpu": {"instanceFamilies": ["g6e"], "gpuLimit": 8}},
        "models": {KEY: {"model": "llama-3.1-8b", "gpuPool": "gpu", "maxReplicas": 2, "maxModelLen": MAX_MODEL_LEN}},
        "gateway": {"ingress": {"enabled": False}},
    })


def start_server(m: config.ModelDeployment, index: int, cpu: int | None) -> Server:
    port, folder = free_port(), WORK / f"vllm-{index}"
    (fresh_folder(folder) / "tmp").mkdir()
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT), "VLLM_SERVER_DEV_MODE": "1",
           "TMPDIR": str(folder / "tmp"), "VLLM_CACHE_ROOT": str(folder / "cache"), "XDG_CACHE_HOME": str(folder / "cache")}
    if cpu is not None:
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(cpu)
    args = server_args(KEY, m, str(MODEL_DIR), port)
    (folder / "args.txt").write_text(" ".join(args) + "\n")
    return start(f"vllm-{index}", [str(VLLM_PYTHON), "-m", "tests.upstream.vllm_cpu", "serve", *args], folder, port,
                 env, cpus={cpu} if cpu is not None else None)


def counters(server: Server) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()

    def total(name: str) -> float:
        return sum(float(v) for v in re.findall(rf"^{re.escape(name)}{{[^}}]*}} (\S+)$", text, re.MULTILINE))
    return {"hits": total("vllm:prefix_cache_hits_total"), "queries": total("vllm:prefix_cache_queries_total"),
            "requests": total("vllm:request_success_total")}


def reset_caches(servers: list[Server]) -> None:
    for server in servers:
        request = urllib.request.Request(f"{server.url}/reset_prefix_cache", method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200, f"{server.name}: /reset_prefix_cache answered {answer.status}"


@dataclass
class Result:
    name: str
    hit_rate: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    later_turns_ttft_mean_ms: float
    later_turns_ttft_p90_ms: float
    requests_per_second: float
    per_server: list[int]
    errors: int

    @property
    def skew(self) -> float:
        mean = statistics.mean(self.per_server)
        return max(self.per_server) / mean if mean else float("inf")


def later_turns_ttft(out: Path) -> list[float]:
    """TTFT (ms) of every conversation's second and later turns, from AIPerf's per-request records: where a cached
    history can help. A first turn prefills its whole context whatever the policy."""
    found = []
    for line in (out / "profile_export.jsonl").read_text().splitlines():
        record = json.loads(line)
        ttft = record["metrics"].get("time_to_first_token", {}).get("value")
        if ttft is not None and record["metadata"]["turn_index"] > 0:
            found.append(ttft)
    return found


def run(name: str, urls: list[str], servers: list[Server], aiperf: Path) -> Result:
    reset_caches(servers)
    before = [counters(s) for s in servers]
    out = WORK / "runs" / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    fresh_folder(out)
    argv = [str(aiperf), "profile", "--model", KEY, *[a for url in urls for a in ("--url", url)],
            "--url-strategy", "round_robin", "--endpoint-type", "chat", "--streaming", "--tokenizer", str(MODEL_DIR),
            "--session-header", SESSION_HEADER, *[str(a) for pair in WORKLOAD.items() for a in pair],
            "--ui-type", "none", "--workers-max", "1", "--record-processor-service-count", "1",
            "--no-server-metrics", "--no-gpu-telemetry", "--artifact-dir", str(out)]
    with (out / "aiperf.log").open("w") as log:
        finished = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=RUN_SECONDS, cwd=out)
    if finished.returncode != 0:
        raise RuntimeError(f"{name}: aiperf exited {finished.returncode}; see {out / 'aiperf.log'}")
    after = [counters(s) for s in servers]
    summary = json.loads((out / "profile_export_aiperf.json").read_text())
    hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before, strict=True))
    queries = sum(a["queries"] - b["queries"] for a, b in zip(after, before, strict=True))
    ttft, later = summary["time_to_first_token"], later_turns_ttft(out)
    return Result(name, hits / queries if queries else float("nan"), ttft["p50"], ttft["p99"],
                  statistics.mean(later), statistics.quantiles(later, n=10, method="inclusive")[8],
                  summary["request_throughput"]["avg"],
                  [round(a["requests"] - b["requests"]) for a, b in zip(after, before, strict=True)],
                  sum(e.get("count", 0) for e in summary.get("error_summary") or []))


def table(results: list[Result]) -> str:
    lines = ["| run | prefix-cache hit rate | TTFT p50 (ms) | TTFT p99 (ms) | later turns: TTFT mean (ms) | "
             "later turns: TTFT p90 (ms) | requests/s | requests per server | skew (max/mean) | errors |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.hit_rate:.3f} | {r.ttft_p50_ms:.0f} | {r.ttft_p99_ms:.0f} | "
                     f"{r.later_turns_ttft_mean_ms:.0f} | {r.later_turns_ttft_p90_ms:.0f} | "
                     f"{r.requests_per_second:.2f} | {' / '.join(map(str, r.per_server))} | {r.skew:.2f} | "
                     f"{r.errors} |")
    return "\n".join(lines)


def targets(results: dict[str, Result], default: str) -> list[str]:
    """The issue's targets for the default policy against `random` (what a Service does) and the ceiling."""
    ceiling, random, chosen = results["single replica (ceiling)"], results["random"], results[default]
    gap = ceiling.hit_rate - random.hit_rate
    checks = [
        (f"hit rate {chosen.hit_rate:.3f} >= 95% of the ceiling {ceiling.hit_rate:.3f}",
         chosen.hit_rate >= 0.95 * ceiling.hit_rate),
        (f"closes {(chosen.hit_rate - random.hit_rate) / gap:.0%} of the gap between random and the ceiling "
         "(>= 90%)" if gap > 0 else "no gap between random and the ceiling", gap <= 0 or
         (chosen.hit_rate - random.hit_rate) >= 0.9 * gap),
        (f"TTFT p50 {1 - chosen.ttft_p50_ms / random.ttft_p50_ms:.0%} below random's (>= 30%)",
         chosen.ttft_p50_ms <= 0.7 * random.ttft_p50_ms),
        (f"later turns' mean TTFT {1 - chosen.later_turns_ttft_mean_ms / random.later_turns_ttft_mean_ms:.0%} "
         "below random's (>= 30%)", chosen.later_turns_ttft_mean_ms <= 0.7 * random.later_turns_ttft_mean_ms),
        (f"load skew {chosen.skew:.2f} (<= 1.5)", chosen.skew <= 1.5),
    ]
    return [f"- {'met' if ok else 'MISSED'}: {text}" for text, ok in checks]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aiperf", type=Path, default=AIPERF)
    args = parser.parse_args(argv)
    missing = [str(p) for p in (args.aiperf, VLLM_PYTHON, MODEL_DIR / "config.json") if not p.exists()]
    if missing:
        print(f"missing {missing}: `make bench` installs and generates them", file=sys.stderr)
        return 1
    cfg = stack_config()
    m = cfg.models[KEY]
    cpus = sorted(os.sched_getaffinity(0))
    servers, routers = [], []
    started = time.monotonic()
    try:
        servers = [start_server(m, i, cpus[i] if len(cpus) >= 2 else None) for i in range(2)]
        for server in servers:
            server.wait_ready("/health", SERVER_STARTUP_SECONDS)
        urls = [s.url for s in servers]
        results: dict[str, Result] = {}
        results["single replica (ceiling)"] = run("single replica (ceiling)", [urls[0]], servers, args.aiperf)

        def routed(name: str, policy: str, copies: int = 1, **flags: str) -> None:
            overrides = {"--policy": policy, **{f"--{f.replace('_', '-')}": v for f, v in flags.items()}}
            these = [start_router(f"router-{i}", WORK / f"router-{i}", KEY, m, urls, overrides=overrides)
                     for i in range(copies)]
            routers.extend(these)
            for router in these:
                router.server.wait_ready("/readiness", 60)
            results[name] = run(name, [r.url for r in these], servers, args.aiperf)
            for router in these:
                router.server.stop()

        for policy in ("random", "round_robin", "consistent_hash"):
            routed(policy, policy)
        default = f"{m.routing.policy} (the default)"
        routed(default, m.routing.policy)
        routed(f"{m.routing.policy}, two routers", m.routing.policy, copies=2)
        # Why the platform does not keep the router's own cache_aware defaults.
        routed(f"{m.routing.policy}, the router's own defaults (0.3, 64)", m.routing.policy, cache_threshold="0.3",
               balance_abs_threshold="64")
    finally:
        for router in routers:
            router.server.stop()
        for server in servers:
            server.stop()
    minutes = (time.monotonic() - started) / 60
    workload = " ".join(f"{k} {v}" for k, v in WORKLOAD.items())
    report = "\n".join([
        "# Replica routing benchmark (`make bench`)", "",
        f"Two vLLM CPU servers (one core each) of the ~25M-parameter bench model; router policies from "
        f"routing.* defaults (cache_threshold {m.routing.cache_threshold:g}, balance_abs_threshold "
        f"{m.routing.balance_abs_threshold}); AIPerf {workload}; consistent_hash keyed by {SESSION_HEADER}. "
        f"The two-router run alternates requests between two router processes, as their Service would. "
        f"{minutes:.1f} minutes.", "", table(list(results.values())), "",
        "Targets for the default policy:", *targets(results, default), ""])
    (WORK / "report.md").write_text(report)
    print(report)
    print(f"written to {WORK / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
