"""`make bench-gateway`: what one gateway replica (one LiteLLM worker, as rendered) can take, and what it adds.

The real proxy with the rendered config on one core of its own; a stand-in model server that answers every chat
completion after a fixed 50 ms and a load generator on the other core. Two measurements:

- closed loop: 1, 8 and 32 clients each sending its next request when the last one is answered (a fixed number of
  requests each): requests per second, and p50/p99 latency minus the server's 50 ms (what the gateway adds);
- open loop: requests arriving at a fixed rate whether or not earlier ones are answered, for a few seconds per
  rate: the added p50/p99 at each rate, which is what sizing a replica's share of the traffic needs.

The report is printed and written to build/bench-gateway/report.md. Numbers are this machine's (2 shared cores):
compare runs with each other, and size with the README's figures, which were measured the same way.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

import aiohttp

import config
from tests.conftest import ROOT
from tests.gateway_stand_in import PACED_SECONDS, StandIns
from tests.litellm_proxy import start_proxy

WORK = ROOT / "build" / "bench-gateway"
SERVER_SECONDS = PACED_SECONDS
CLIENTS = (1, 8, 32)
REQUESTS_PER_CLIENT = {1: 100, 8: 40, 32: 15}
RATES = (10, 20, 30, 40, 50, 60, 70)
SECONDS_PER_RATE = 6
KEY = "sk-bench-0123456789abcdef"


def stack() -> config.StackConfig:
    return config.parse("bench", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"g": {"instanceFamilies": ["g6e"], "gpuLimit": 8}},
        "models": {"small": {"model": "llama-3.1-8b", "gpuPool": "g", "tier": "fast"}},
        "gateway": {"ingress": {"enabled": False}, "keys": {
            "bench": {"models": ["fast"], "requestsPerMinute": 1000000, "tokensPerMinute": 100000000}}},
    })


BODY = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


async def one(session: aiohttp.ClientSession, url: str, key: str | None) -> tuple[bool, float]:
    start = time.monotonic()
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        async with session.post(f"{url}/v1/chat/completions", json=BODY, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=30)) as answer:
            await answer.read()
            return answer.status == 200, time.monotonic() - start
    except (TimeoutError, aiohttp.ClientError):
        return False, time.monotonic() - start


def cpu_seconds(pid: int | None) -> float:
    """User plus system CPU time of a process (its threads included), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def summary(results: list[tuple[bool, float]], seconds: float, cpu: float) -> dict:
    latencies = [s - SERVER_SECONDS for ok, s in results if ok]
    quantiles = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {"requests": len(results), "failed": sum(not ok for ok, _ in results), "rps": len(results) / seconds,
            "added_p50_ms": 1000 * quantiles[49], "added_p99_ms": 1000 * quantiles[98], "cpu": cpu / seconds}


async def closed_loop(url: str, key: str | None, clients: int, pid: int | None = None) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def client():
            return [await one(session, url, key) for _ in range(REQUESTS_PER_CLIENT[clients])]

        start, cpu = time.monotonic(), cpu_seconds(pid)
        runs = await asyncio.gather(*(client() for _ in range(clients)))
        return summary([r for run in runs for r in run], time.monotonic() - start, cpu_seconds(pid) - cpu)


async def open_loop(url: str, key: str | None, rate: int, pid: int | None = None) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start, cpu, tasks = time.monotonic(), cpu_seconds(pid), []
        for i in range(rate * SECONDS_PER_RATE):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.ensure_future(one(session, url, key)))
        results = await asyncio.gather(*tasks)
        return summary(results, time.monotonic() - start, cpu_seconds(pid) - cpu)


def table(title: str, rows: list[tuple[str, dict]]) -> str:
    lines = [f"### {title}", "", "| run | requests | failed | req/s | added p50 (ms) | added p99 (ms) | gateway CPU |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {r['requests']} | {r['failed']} | {r['rps']:.1f} | {r['added_p50_ms']:.1f} | "
              f"{r['added_p99_ms']:.1f} | {r['cpu']:.2f} |" for name, r in rows]
    return "\n".join(lines) + "\n\n"


def main() -> int:
    cores = sorted(os.sched_getaffinity(0))
    proxy_core, other = {cores[0]}, set(cores[1:] or cores)
    os.sched_setaffinity(0, other)  # this process (load and stand-in) off the proxy's core
    stand_ins = StandIns()
    backend = stand_ins.serve("small", "paced")
    proxy = start_proxy("gateway", WORK / "gateway", stack(), {"small": backend}, "sk-bench-master-0123456789",
                        {"bench": KEY})
    os.sched_setaffinity(proxy.process.pid, proxy_core)
    try:
        proxy.wait_ready("/health/readiness", 90)
        asyncio.run(closed_loop(proxy.url, KEY, 8))  # warm-up
        direct = [(f"direct, {c} client(s)", asyncio.run(closed_loop(backend, None, c))) for c in (1, 8)]
        pid = proxy.process.pid
        closed = [(f"{c} client(s)", asyncio.run(closed_loop(proxy.url, KEY, c, pid))) for c in CLIENTS]
        opened = [(f"{rate} req/s offered", asyncio.run(open_loop(proxy.url, KEY, rate, pid))) for rate in RATES]
    finally:
        proxy.stop()
        stand_ins.shutdown()
    report = ("## Gateway capacity: one replica, one worker, one core\n\n"
              f"Stand-in server answers in {SERVER_SECONDS * 1000:.0f} ms; latency shown is what the gateway adds.\n\n"
              + table("Stand-in alone (the load generator's own overhead)", direct)
              + table("Closed loop through the gateway", closed)
              + table("Open loop through the gateway", opened))
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "report.md").write_text(report)
    print(report)
    failed = sum(r["failed"] for _, r in (*closed, *opened))
    if failed:
        print(f"bench-gateway: {failed} requests failed (see {proxy.log})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
