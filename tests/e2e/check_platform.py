"""`make e2e`: what a user relies on, checked against the platform's real programs on 127.0.0.1 (tests/e2e/conftest.py).

The checks run in this file's order: traffic first, then metrics and alerts over that traffic, and the checks that
stop a server last. Each check's docstring is its line in the report (tests/e2e/report.py), with what it measured.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import pytest

from components.edge import gateway
from components.observability import dashboards, signals
from tests import gateway_probes
from tests.e2e import conftest as e2e
from tests.e2e import stack
from tests.metric_names import metric_names
from tests.openai_client import chat, exposition, finish_reason, load, metric

pytestmark = pytest.mark.usefixtures("platform")

GREETING = "Hi there!"
REASONING = ("Think step by step and explain your reasoning: deduce the closed form of the sum of the first n odd "
             "numbers, prove by induction that it holds for every n, evaluate it for n = 10, and conclude whether "
             "the same argument works for the even numbers.")
# Longer than several of vLLM's CPU KV blocks (128 tokens) with the tiny tokenizer, so a repeat can hit the cache.
SYSTEM_PROMPT = " ".join(f"Rule {i}: answer politely, precisely and briefly, citing the policy section {i}."
                         for i in range(12))
CLUSTER_ONLY = ("DCGM_", "karpenter_", "kube_node_", "kube_pod_container_resource_requests",
                "kube_pod_status_unschedulable", "kube_pod_container_status_", "keda_")
"""Metric families only a cluster has (GPUs, Karpenter, nodes, KEDA's operator, scheduling and container status);
not checked here. Pod readiness is: the kube-state-metrics stand-in reports it from the real servers."""
DEADLINE = 90
REQUEST_BOUND = 150
"""Longest a client thread may still take once told to stop (the client's own request timeout is 120 s)."""


def served_by(answer) -> str | None:
    return answer.headers.get("x-litellm-model-id")


def wait_until(predicate, seconds: float, interval: float = 0.5):
    """The predicate's first truthy value within `seconds`, else None. A server too busy to answer one poll
    (OSError, timeouts included) is asked again at the next."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(interval)
    return None


def in_engine(url: str) -> float:
    """Requests a vLLM server holds: running and waiting."""
    return metric(url, "vllm:num_requests_running") + metric(url, "vllm:num_requests_waiting")


# 1. Keys and limits -----------------------------------------------------------------------------------------------

def test_keys_are_checked_on_every_gateway(platform, record_property):
    """1. 401 without a key or with an unknown one; 403 outside the key's models"""
    a, b = (g.url for g in platform.gateways)
    answers = {"no key": chat(a, None, "fast"), "unknown key": chat(b, "sk-e2e-nobody", "fast"),
               "fast-only key asking for quality": chat(a, platform.keys["fast-only"], "quality"),
               "fast-only key asking for fast": chat(b, platform.keys["fast-only"], "fast")}
    statuses = {name: answer.status for name, answer in answers.items()}
    assert statuses == {"no key": 401, "unknown key": 401, "fast-only key asking for quality": 403,
                        "fast-only key asking for fast": 200}, platform.explain(
        f"{statuses}; errors: { {n: a.error for n, a in answers.items()} }", "gateway-a", "gateway-b")
    assert "quality" in answers["fast-only key asking for quality"].error
    record_property("measured", ", ".join(f"{n}: {s}" for n, s in statuses.items()))


def test_a_requests_per_minute_limit_holds_across_both_gateways(platform, record_property):
    """1. A requests/minute limit holds across both gateways (Redis)"""
    key, urls = platform.keys["limited"], [g.url for g in platform.gateways]
    answers = [chat(urls[i % 2], key, "fast", max_tokens=4) for i in range(stack.RPM_LIMIT + 1)]
    statuses = [a.status for a in answers]
    assert statuses == [200] * stack.RPM_LIMIT + [429], platform.explain(
        f"requests alternating between the gateways got {statuses}; a limit counted in each gateway's memory "
        f"would allow {2 * stack.RPM_LIMIT}", "gateway-a", "gateway-b", "redis")
    assert int(answers[-1].headers.get("retry-after", "0")) > 0, answers[-1].headers
    record_property("measured", f"limit {stack.RPM_LIMIT}/min, alternating A/B: {statuses}, "
                    f"retry-after {answers[-1].headers['retry-after']} s")


def test_a_tokens_per_minute_limit_holds_across_both_gateways(platform, record_property):
    """1. A tokens/minute limit holds across both gateways (Redis)"""
    key, urls = platform.keys["metered"], [g.url for g in platform.gateways]
    spent, statuses = [], []
    for i in range(20):
        answer = chat(urls[i % 2], key, "fast", max_tokens=40)
        statuses.append(answer.status)
        if answer.status != 200:
            break
        spent.append(answer.usage["total_tokens"])
    assert statuses[-1] == 429, platform.explain(f"no 429 after {sum(spent)} tokens ({statuses})",
                                                 "gateway-a", "gateway-b")
    # Refused only once the tokens spent through both gateways together reached the limit, and no later than the
    # first request after that: each gateway alone saw about half of them.
    assert sum(spent) >= stack.TPM_LIMIT > sum(spent[:-1]), platform.explain(
        f"429 after {len(spent)} requests and {sum(spent)} tokens ({spent}); limit {stack.TPM_LIMIT}",
        "gateway-a", "gateway-b")
    record_property("measured", f"limit {stack.TPM_LIMIT}/min, alternating A/B: 429 after {len(spent)} "
                    f"requests and {sum(spent)} tokens")


# 10. A narrow key against every route form; one key's failures and another key's answers ---------------------------

def requests_seen(*servers) -> int:
    """Requests that reached these vLLM servers, from their own access logs (one line per request, any route or
    status), except the probes' and Prometheus's (/health, /metrics) and the replica router's tokenization of a
    prompt before it chooses a server (.../render, /tokenize)."""
    return sum(len(re.findall(r'"(?:GET|POST|PUT|DELETE|PATCH) /(?!health |metrics |v1/chat/completions/render |'
                              r'v1/completions/render |tokenize )', server.log.read_text(errors="replace")))
               for server in servers)


def test_a_fast_only_key_reaches_the_quality_model_by_no_route_form(platform, record_property):
    """10. A fast-only key reaches quality by no route form (query, path, body), through either gateway"""
    quality, key = platform.vllm[stack.QUALITY], platform.keys["fast-only"]
    before, statuses, wrong = requests_seen(quality), Counter(), []
    for g in platform.gateways:
        for method, path, body, status in gateway_probes.model_forms("quality", stack.QUALITY):
            reply = gateway_probes.send(g.url, method, path, key, body)
            statuses[reply.status] += 1
            if reply.status != status:
                wrong.append((g.name, method, path, reply.status, reply.text[:200]))
    assert not wrong, platform.explain(f"unexpected answers: {wrong}", "gateway-a", "gateway-b")
    seen = requests_seen(quality) - before
    assert seen == 0, platform.explain(f"the quality server saw {seen} requests", f"vllm-{stack.QUALITY}")
    record_property("measured", f"{sum(statuses.values())} requests over both gateways "
                    f"({', '.join(f'{n}x {s}' for s, n in sorted(statuses.items()))}); quality server saw 0")


def test_one_keys_failing_requests_leave_another_keys_answers_untouched(platform, record_property):
    """11. One key's requests that vLLM refuses change nothing for another key (no cooldown)"""
    fast, bad_key, good_key = platform.replicas, platform.keys["fast-only"], platform.keys["team"]
    # What vLLM itself refuses: more tokens than the context, a value of the wrong type, an impossible choice.
    refused = [{"max_tokens": 100 * stack.MAX_MODEL_LEN}, {"temperature": "hot"}, {"top_p": 7}]
    before, failures = requests_seen(*fast), []
    for g in platform.gateways:
        for extra in refused * 2:
            failures.append(gateway_probes.send(g.url, "POST", "/v1/chat/completions", bad_key,
                                                gateway_probes.chat("fast", **extra)).status)
    assert failures and all(400 <= s < 500 for s in failures), failures
    reached = requests_seen(*fast) - before
    answers = [chat(g.url, good_key, "fast", max_tokens=4) for g in platform.gateways for _ in range(2)]
    assert all(a.status == 200 for a in answers), platform.explain(
        f"after {len(failures)} refused requests of another key: {[(a.status, a.error) for a in answers]}",
        "gateway-a", "gateway-b")
    cooled = [metric(g.url, "litellm_deployment_cooled_down_total") for g in platform.gateways]
    assert cooled == [0, 0], cooled
    record_property("measured", f"{len(failures)} refused ({', '.join(map(str, sorted(set(failures))))}; "
                    f"{reached} reached vLLM, each once); then {len(answers)}/{len(answers)} of another key's "
                    "answered 200; no deployment cooled down")


# 2. Routing and cost ----------------------------------------------------------------------------------------------

def test_the_router_sends_a_greeting_to_fast_and_reasoning_to_quality(platform, record_property):
    """2. auto: a greeting goes to fast, multi-step reasoning to quality"""
    url, key = platform.gateways[0].url, platform.keys["team"]
    greeting, reasoning = chat(url, key, gateway.AUTO, GREETING), chat(url, key, gateway.AUTO, REASONING)
    routed = {}
    for name, answer in (("greeting", greeting), ("reasoning", reasoning)):
        assert answer.status == 200, platform.explain(f"{name}: {answer.status} {answer.error}", "gateway-a")
        # The router's verdict, and the deployment that answered (model_info.id: "<tier>/<model key>").
        routed[name] = (answer.headers.get("x-litellm-complexity-router-tier"), served_by(answer))
    assert routed["greeting"] == ("SIMPLE", f"fast/{stack.FAST}"), routed
    assert routed["reasoning"][0] in ("COMPLEX", "REASONING"), routed
    assert routed["reasoning"][1] == f"quality/{stack.QUALITY}", routed
    record_property("measured", "; ".join(f"{name}: {tier} -> {deployment}"
                                          for name, (tier, deployment) in routed.items()))


def priced(answer, name: str) -> tuple[float, float]:
    """The answer's cost header and what the configured prices of `name` make of its tokens; they must agree."""
    usage, price = answer.usage, stack.PRICES[name]
    expected = usage["prompt_tokens"] * price["input"] / 1000 + usage["completion_tokens"] * price["output"] / 1000
    cost = float(answer.headers["x-litellm-response-cost"])
    assert cost == pytest.approx(expected, rel=1e-6), (cost, expected, usage)
    return cost, expected


def test_a_tier_by_name_answers_from_its_model_at_the_configured_price(platform, record_property):
    """2. A tier by name; the cost header is tokens x configured prices"""
    url, key = platform.gateways[1].url, platform.keys["team"]
    answer = chat(url, key, "quality", max_tokens=24)
    assert answer.status == 200, platform.explain(f"{answer.status} {answer.error}", "gateway-b")
    assert answer.headers.get("x-litellm-model-group") == "quality", answer.headers
    assert served_by(answer) == f"quality/{stack.QUALITY}", answer.headers
    usage, (cost, expected) = answer.usage, priced(answer, stack.QUALITY)
    record_property("measured", f"quality -> {served_by(answer)}; {usage['prompt_tokens']} in + "
                    f"{usage['completion_tokens']} out = ${cost:.6f} (expected ${expected:.6f})")


def _text(answer) -> str:
    return answer.body["choices"][0]["message"]["content"]


def test_a_lora_adapter_answers_its_own_key_differently_from_its_base_at_its_own_price(platform, record_property):
    """2. A LoRA adapter: its key gets 200 from it and 403 from the base model; its answer differs; its own price"""
    url = platform.gateways[0].url
    only, team = platform.keys["adapter-only"], platform.keys["team"]
    same = {"content": "Hello, how are you today?", "max_tokens": 12, "temperature": 0, "seed": 7}
    answers = {"adapter-only key, adapter": chat(url, only, stack.ADAPTER, **same),
               "adapter-only key, base model": chat(url, only, stack.FAST, **same),
               "adapter-only key, base tier": chat(url, only, "fast", **same),
               "team key, base model": chat(url, team, stack.FAST, **same)}
    statuses = {name: a.status for name, a in answers.items()}
    assert statuses == {"adapter-only key, adapter": 200, "adapter-only key, base model": 403,
                        "adapter-only key, base tier": 403, "team key, base model": 200}, platform.explain(
        f"{statuses}; errors: { {n: a.error for n, a in answers.items()} }", "gateway-a", f"vllm-{stack.FAST}")
    adapter, base = answers["adapter-only key, adapter"], answers["team key, base model"]
    assert served_by(adapter) == stack.ADAPTER, adapter.headers
    assert _text(adapter) != _text(base), (_text(adapter), _text(base))
    cost, expected = priced(adapter, stack.ADAPTER)
    record_property("measured", f"{statuses}; same prompt, temperature 0: adapter {_text(adapter)!r} vs base "
                    f"{_text(base)!r}; cost ${cost:.6f} at the adapter's prices (expected ${expected:.6f})")


def test_every_replica_of_the_model_holds_the_adapter_and_applies_it_alike(platform, record_property):
    """2. Every replica lists the adapter and gives the same greedy answer with it; the router passes it through"""
    same = {"content": "The quick brown fox", "max_tokens": 12, "temperature": 0}
    listed, direct = {}, {}
    for server in platform.replicas:
        with urllib.request.urlopen(f"{server.url}/v1/models", timeout=10) as answer:
            cards = {card["id"]: card for card in json.loads(answer.read())["data"]}
        listed[server.name] = cards.get(stack.ADAPTER, {}).get("parent")
        reply = chat(server.url, None, stack.ADAPTER, **same)
        assert reply.status == 200, platform.explain(f"{server.name}: {reply.status} {reply.error}", server.name)
        direct[server.name] = _text(reply)
    assert set(listed.values()) == {stack.FAST}, listed
    assert len(set(direct.values())) == 1, direct
    routed = [chat(platform.router.server.url, None, stack.ADAPTER, **same) for _ in range(4)]
    assert [r.status for r in routed] == [200] * 4, platform.explain(
        f"router: {[(r.status, r.error) for r in routed]}", platform.router.server.name)
    assert {_text(r) for r in routed} == set(direct.values()), ([_text(r) for r in routed], direct)
    record_property("measured", f"{len(listed)} replicas list {stack.ADAPTER} (parent {stack.FAST}); the same "
                    f"answer from each and from 4 requests through the router: {next(iter(direct.values()))!r}")


# 3. Streaming -----------------------------------------------------------------------------------------------------

def test_a_stream_arrives_in_chunks_and_ends_properly(platform, record_property):
    """3. A stream through the gateway arrives in chunks and ends properly"""
    answer = chat(platform.gateways[0].url, platform.keys["team"], "fast", max_tokens=32, stream=True)
    assert answer.status == 200, platform.explain(f"{answer.status} {answer.error}", "gateway-a")
    content = [c for c in answer.chunks if c.get("choices") and c["choices"][0].get("delta", {}).get("content")]
    assert len(content) >= 2 and answer.done and finish_reason(answer) in ("stop", "length"), (
        len(content), answer.done, finish_reason(answer))
    record_property("measured", f"{len(content)} content chunks, finish_reason {finish_reason(answer)}, "
                    "[DONE] received")


# 9. Prefix caching ------------------------------------------------------------------------------------------------

def test_a_repeated_system_prompt_hits_the_prefix_cache(platform, record_property):
    """9. Through the replica router, a repeated system prompt hits the prefix cache of whichever replica answers"""
    servers, router = platform.replicas, platform.router

    def counted(name: str) -> list[float]:
        return [metric(s.url, name) for s in servers]

    def tokenized() -> tuple[float, float]:
        """The router's requests to the servers to tokenize a prompt: done, and refused (a 403 without
        --enable-scale-out; also a 400 for a request vLLM itself finds invalid, which earlier checks send)."""
        text = exposition(router.metrics_url)
        return tuple(sum(float(v) for v in re.findall(
            rf'vllm_router_kv_routing_inputs_total{{[^}}]*result="{result}"[^}}]*}} (\S+)', text))
            for result in ("render", "preparation_rejected"))

    hits_before, done_before = counted("vllm:prefix_cache_hits_total"), counted("vllm:request_success_total")
    rendered_before, rejected_before = tokenized()
    for question in ("What is the first rule?", "What is the last rule?", "What is rule seven?"):
        answer = chat(platform.gateways[0].url, platform.keys["team"], stack.FAST, question, system=SYSTEM_PROMPT)
        assert answer.status == 200, platform.explain(f"{answer.status} {answer.error}", "gateway-a")
    prompt_tokens = answer.usage["prompt_tokens"]
    hits = [a - b for a, b in zip(counted("vllm:prefix_cache_hits_total"), hits_before, strict=True)]
    answered = [a - b for a, b in zip(counted("vllm:request_success_total"), done_before, strict=True)]
    # The router kept the three on one replica (the one holding the prompt), and the repeats found it cached there.
    assert sorted(answered) == [0, 3] and sum(hits) >= 2 * 128, platform.explain(
        f"answered per replica {answered}, cached tokens per replica {hits} for a {prompt_tokens}-token prompt",
        *(s.name for s in servers), router.server.name)
    # cache_aware asks the servers to tokenize each prompt; without --enable-scale-out they refuse (403) and the
    # router silently routes by load alone.
    rendered, rejected = (a - b for a, b in zip(tokenized(), (rendered_before, rejected_before), strict=True))
    assert rendered >= 3 and rejected == 0, platform.explain(
        f"router tokenization of 3 prompts: {rendered} done, {rejected} refused", router.server.name)
    record_property("measured", f"3 of 3 on one replica ({answered}); +{sum(hits):.0f} cached tokens on the "
                    f"repeats of a {prompt_tokens}-token prompt; {rendered:.0f} prompts tokenized by the servers, "
                    "none refused")


# Performance ------------------------------------------------------------------------------------------------------

def test_performance_direct_and_through_the_gateway(platform, record_property):
    """Performance, direct and through the gateway (section below)"""
    # The fast model's two replicas, straight through their router and through the gateway in front of it: the
    # difference is the gateway's. (The router's own policies are `make bench`'s.)
    fast, url, key = platform.router.url, platform.gateways[0].url, platform.keys["team"]
    runs = []
    for concurrency, requests in ((1, 30), (16, 96)):
        runs.append(load("router direct", fast, None, stack.FAST, concurrency, requests, max_tokens=16))
        runs.append(load("through gateway", url, key, stack.FAST, concurrency, requests, max_tokens=16))
    failures = {f"{r.path} c={r.concurrency}": r.failures for r in runs if r.failures}
    assert not failures, platform.explain(f"failed requests: {failures}", "gateway-a", platform.router.server.name)
    record_property("performance", [r.row() for r in runs])
    record_property("measured", f"{sum(r.requests for r in runs)} requests in {len(runs)} runs, none failed")


# 6. Metrics -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def traffic(platform):
    """Every name a client can ask for (each model, adapter, tier and `auto`) through both gateways, then until Prometheus
    holds it: the metric checks below see a series per gateway and per name, so a query that KEDA would find
    ambiguous (several series) shows up, whichever checks ran before."""
    names = gateway.served_names(platform.cfg.models)
    for g in platform.gateways:
        for name in names:
            chat(g.url, platform.keys["team"], name, max_tokens=4)
    per_gateway = f'count(count by (pod) ({signals.GATEWAY_REQUESTS}{{requested_model="{stack.ASLEEP}"}}))'
    seen = wait_until(lambda: [r for r in platform.prometheus.query(per_gateway) if float(r["value"][1]) >= 2], 30)
    assert seen, platform.explain(f"{per_gateway}: no series from both gateways", "prometheus")
    return names


def _platform_expressions(cfg) -> dict[str, str]:
    found = {}
    for group in stack.rule_groups(cfg, e2e.TINY_MODEL):
        for rule in group["rules"]:
            found[f"rule {rule.get('record') or rule.get('alert')}"] = rule["expr"]
    for board in dashboards.dashboards(with_adapters=True).values():
        for panel in board["panels"]:
            for target in panel["targets"]:
                found[f"dashboard {board['title']} / {panel['title']}"] = target["expr"]
    for key, m in cfg.models.items():
        for q in signals.scaler_queries(key, m):
            found[f"KEDA {key}/{q.name}"] = q.query
    return found


def test_every_engine_and_gateway_metric_the_platform_reads_has_series(platform, traffic, record_property):
    """6. Every vLLM and gateway metric a rule, dashboard or trigger reads has series"""
    used = {}
    for where, expr in _platform_expressions(platform.cfg).items():
        for name in metric_names(expr):
            if name.startswith(("vllm:", "litellm_", "vllm_router_")):
                used.setdefault(name, where)
    missing = {name: where for name, where in used.items() if not platform.prometheus.query(f"count({name})")}
    assert not missing, platform.explain(f"no series in Prometheus for {missing}", "prometheus")
    assert all(any(n.startswith(p) for n in used) for p in ("vllm:", "litellm_", "vllm_router_")), used
    record_property("measured", f"{len(used)} names: {sum(n.startswith('vllm:') for n in used)} vLLM, "
          f"{sum(n.startswith('litellm_') for n in used)} gateway, "
          f"{sum(n.startswith('vllm_router_') for n in used)} replica router")


def _cluster_only(rules: list[dict]) -> set[str]:
    """Recording rules that read, directly or through another recording, a metric only a cluster has."""
    found: set[str] = set()
    for rule in rules:
        names = metric_names(rule["expr"])
        if any(n.startswith(CLUSTER_ONLY) or n in found for n in names):
            found.add(rule["record"])
    return found


def test_every_recording_rule_returns_data(platform, traffic, record_property):
    """6. Every recording rule returns data"""
    rules = [r for g in stack.rule_groups(platform.cfg, e2e.TINY_MODEL) for r in g["rules"] if "record" in r]
    skipped = _cluster_only(rules)
    empty = sorted({r["record"] for r in rules if r["record"] not in skipped
                    and not platform.prometheus.query(r["record"])})
    assert not empty, platform.explain(f"recording rules without data: {empty}", "prometheus")
    broken = {r["name"]: r.get("lastError") for g in platform.prometheus.get("/api/v1/rules")["data"]["groups"]
              for r in g["rules"] if r["health"] != "ok"}
    assert not broken, broken
    checked = len({r["record"] for r in rules}) - len(skipped)
    record_property("measured", f"{checked} recorded series with data; not checked (GPU, Karpenter, nodes): "
                    f"{', '.join(sorted(skipped))}")


def test_the_servers_kv_capacity_is_the_plan_and_llmctl_verify_and_calibrate_read_it(platform, traffic,
                                                                                      record_property):
    """6. KV capacity against the plan: llmctl verify passes through Prometheus, fails a wrong plan; calibrate reads the servers' logs"""
    from llmctl import verify
    from planning import calibration

    api, servers = platform.prometheus, [platform.vllm[stack.QUALITY], *platform.replicas]
    answer = api.get("/api/v1/query", query=verify.QUERY)
    (e2e.WORK / "cache-config-info.json").write_text(json.dumps(answer, indent=1))  # kept: a real saved input
    configs = [a for key in stack.SERVED for a in ("--model-config", f"{key}={e2e.TINY_MODEL / 'config.json'}")]
    logs = [a for s in servers for a in ("--log", f"{next(k for k in stack.SERVED if s.name.startswith(f'vllm-{k}'))}"
                                                  f"={s.log}")]
    planned = verify.compare(platform.cfg, verify.arguments(
        "e2e", "--prometheus", platform.prometheus_server.url, "--cpu-kv-space-gib", str(stack.KV_CACHE_SPACE_GIB),
        *configs, *logs))
    assert planned.ok, planned.text
    from_prometheus = [r for r in planned.rows if not r.server.startswith("log ")]
    assert len(from_prometheus) == len(servers) and all(r.error == 0 for r in planned.rows), planned.text
    wrong = verify.compare(platform.cfg, verify.arguments(
        "e2e", "--prometheus", platform.prometheus_server.url, "--cpu-kv-space-gib", str(2 * stack.KV_CACHE_SPACE_GIB),
        *configs))
    assert not wrong.ok and all(r.problem == "off plan by more than 10%" for r in wrong.rows), wrong.text
    off_plan = {r["metric"]["model"]: float(r["value"][1]) for r in api.query(signals.KV_OFF_PLAN)}
    assert off_plan == {stack.FAST: 0, stack.QUALITY: 0, stack.ASLEEP: 0}, off_plan
    assert not api.alerts("LLMKVCapacityOffPlan")
    # A CPU server's log has the engine line and the KV size, but no memory profile to calibrate from.
    reading = calibration.read_log(servers[0].log.read_text(errors="replace"), servers[0].name)
    assert (reading.device, reading.kv_tokens) == ("cpu", from_prometheus[0].actual), reading
    with pytest.raises(calibration.CalibrationError, match="it ran on cpu, not a GPU"):
        calibration.record(reading, "L40S", calibration.catalog_model("meta-llama/Llama-3.1-8B-Instruct"), id="x",
                           source="e2e", checked="today")
    record_property("measured", f"{len(from_prometheus)} servers report {from_prometheus[0].actual:,} KV tokens, "
                    f"planned {from_prometheus[0].planned:,} (CPU case, {stack.KV_CACHE_SPACE_GIB} GiB): verify passes; "
                    f"planned for {2 * stack.KV_CACHE_SPACE_GIB} GiB it fails all {len(wrong.rows)}; off-plan count 0 "
                    f"for {len(off_plan)} models; the servers' logs read (vLLM {reading.vllm} on {reading.device})")


def test_adapter_requests_are_recorded_per_adapter_and_counted_within_their_model(platform, traffic,
                                                                                  record_property):
    """6. Adapter requests: rate, latency and spend under the adapter's name; vLLM counts them under the base model"""
    # A gateway series starts at its first request, which rate() cannot see: a few more once Prometheus holds the
    # series from both gateways (requests within one scrape would all land in its first sample).
    answered = (f'count(count by (pod) ({signals.GATEWAY_LATENCY}_count{{model_id="{stack.ADAPTER}", '
                f'api_key_alias="team"}}))')
    for g in platform.gateways:
        chat(g.url, platform.keys["team"], stack.ADAPTER, max_tokens=4)
    seen = wait_until(lambda: [r for r in platform.prometheus.query(answered) if float(r["value"][1]) >= 2], 30)
    assert seen, platform.explain(f"{answered}: not from both gateways", "prometheus")
    for g in platform.gateways:
        for _ in range(3):
            chat(g.url, platform.keys["team"], stack.ADAPTER, max_tokens=4)
    selector = f'{{adapter="{stack.ADAPTER}", model="{stack.FAST}"}}'

    def recorded(name: str) -> list[float]:
        return [float(r["value"][1]) for r in platform.prometheus.query(name + selector) if float(r["value"][1]) > 0]

    rate = wait_until(lambda: recorded(signals.ADAPTER_REQUESTS), 30)
    p99 = wait_until(lambda: recorded(signals.ADAPTER_LATENCY[99]), 30)
    assert rate and p99, platform.explain(f"rate {rate}, p99 {p99}", "prometheus", "gateway-a")
    text = exposition(platform.replicas[0].url)
    counted_as = set(re.findall(r'^vllm:request_success_total\{[^}]*model_name="([^"]+)"', text, re.M))
    assert counted_as == {stack.FAST}, counted_as
    spend = platform.prometheus.query(f'sum(litellm_spend_metric_total{{model_id="{stack.ADAPTER}"}})')
    assert spend and float(spend[0]["value"][1]) > 0, platform.explain(f"adapter spend {spend}", "prometheus")
    info = [line for line in text.splitlines() if line.startswith("vllm:lora_requests_info{")]
    assert info and all('max_lora="1"' in line for line in info), info
    record_property("measured", f"{signals.ADAPTER_REQUESTS} {rate[0]:.3f}/s, p99 {p99[0]:.2f} s, spend "
                    f"${float(spend[0]['value'][1]):.4f}; "
                    f"vLLM labels the adapter's requests model_name={sorted(counted_as)}; "
                    f"{len(info)} vllm:lora_requests_info series")


def test_every_keda_query_returns_one_series_per_model(platform, traffic, record_property):
    """6. Every KEDA trigger query returns exactly one series per model"""
    counts = {f"{key}/{q.name}": len(platform.prometheus.query(q.query))
              for key, m in platform.cfg.models.items() for q in signals.scaler_queries(key, m)}
    assert counts and all(n == 1 for n in counts.values()), platform.explain(
        f"series per KEDA query (KEDA fails on anything but 1): {counts}", "prometheus")
    record_property("measured", f"{len(counts)} queries over {len(platform.cfg.models)} models, 1 series each")


# 8. Scale from zero -----------------------------------------------------------------------------------------------

def test_requests_for_a_model_at_zero_raise_its_activation_query(platform, record_property):
    """8. Requests for a model at zero raise its activation query above the threshold"""
    m = platform.cfg.models[stack.ASLEEP]
    [trigger] = [q for q in signals.scaler_queries(stack.ASLEEP, m) if q.activation_threshold is not None]
    answers = [chat(g.url, platform.keys["team"], stack.ASLEEP) for g in platform.gateways]
    assert all(a.status == 503 and a.headers.get("retry-after") for a in answers), [
        (a.status, a.headers.get("retry-after"), a.error) for a in answers]

    def value():
        result = platform.prometheus.query(trigger.query)
        return float(result[0]["value"][1]) if result and float(result[0]["value"][1]) > trigger.activation_threshold \
            else None

    seen = wait_until(value, 30)
    assert seen, platform.explain(f"{trigger.query} stayed at or below {trigger.activation_threshold}", "prometheus")
    record_property("measured", f"{len(answers)} requests answered 503 + retry-after; "
                    f"query = {seen:g} > {trigger.activation_threshold:g}")


# 7. Alerts --------------------------------------------------------------------------------------------------------

def test_a_burst_fires_the_queue_alert_which_resolves_after_it(platform, record_property):
    """7. A burst fires LLMQueueDepthHigh, it resolves, Alertmanager tells Slack both"""
    server, api, alert = platform.vllm[stack.QUALITY], platform.prometheus, "LLMQueueDepthHigh"
    burst, answers = 32, []
    threads = [threading.Thread(target=lambda: answers.append(chat(
        server.url, None, stack.QUALITY, max_tokens=1000, ignore_eos=True))) for _ in range(burst)]
    began = time.time()
    for thread in threads:
        thread.start()
    try:
        # Prometheus answers slowly while the burst takes both cores; its own ALERTS series is the record below.
        wait_until(lambda: [a for a in api.alerts(alert) if a["state"] == "firing"], DEADLINE)
    finally:  # never leave the burst running into the next check
        for thread in threads:
            thread.join(timeout=DEADLINE)
    burst_seconds = time.time() - began
    assert len(answers) == burst and all(a.status == 200 for a in answers), [a.status for a in answers]
    resolved = wait_until(lambda: not api.alerts(alert), DEADLINE)
    assert resolved, f"still active {DEADLINE} s after the burst: {api.alerts(alert)}"
    resolved_after = time.time() - began - burst_seconds
    window = f"{int(time.time() - began) + 10}s"
    history = api.query(f'ALERTS{{alertname="{alert}", alertstate="firing", model="{stack.QUALITY}"}}[{window}]')
    seen = {expr: api.query(f"max_over_time(({expr})[{window}:1s])") for expr in (
        f'{signals.WAITING}{{model="{stack.QUALITY}"}}', f'{signals.READY}{{model="{stack.QUALITY}"}}',
        f'{signals.WAITING}{{model="{stack.QUALITY}"}} / {signals.READY}{{model="{stack.QUALITY}"}}',
        f'scrape_duration_seconds{{pod="{stack.QUALITY}-0"}}', f'1 - up{{pod="{stack.QUALITY}-0"}}')}
    assert history, platform.explain(f"{alert} never fired for {stack.QUALITY} during the burst; highest values "
                                     f"in Prometheus: {seen}", "prometheus", f"vllm-{stack.QUALITY}")
    fired_after = float(history[0]["values"][0][0]) - began

    def posted(status: str):
        """Messages about the model's group in that state that list this alert (by its runbook anchor)."""
        return [m for m in platform.slack for a in m.get("attachments", [])
                if a.get("title", "").startswith(f"[{status}]") and a["title"].endswith(f" {stack.QUALITY}")
                and f"#{alert.lower()}" in a.get("text", "")]

    notified = wait_until(lambda: posted("FIRING") and posted("RESOLVED"), 30)
    assert notified, platform.explain(f"Slack was not told both FIRING and RESOLVED for {alert}: {platform.slack}",
                                      "alertmanager")
    titles = [f'{a["title"]} ({", ".join(re.findall(r"#([a-z]+)", a["text"]))})'
              for m in (*posted("FIRING"), *posted("RESOLVED")) for a in m["attachments"]]
    record_property("measured", f"{burst} requests: firing {fired_after:.0f} s in (for: {stack.ALERT_FOR_IN_TEST}), "
                    f"burst over at {burst_seconds:.0f} s, resolved {resolved_after:.0f} s later; Slack: {titles}")


# 4. Shutdown drain (stops the quality server) ---------------------------------------------------------------------

def test_sigterm_drains_every_in_flight_stream_then_exits(platform, record_property):
    """4. SIGTERM drains every in-flight stream (--shutdown-timeout), then the server exits"""
    server = platform.vllm[stack.QUALITY]
    streams, tokens, answers, delivered = 4, 1500, [], []
    assert wait_until(lambda: in_engine(server.url) == 0, DEADLINE), "the server is still busy with earlier requests"
    threads = [threading.Thread(target=lambda: answers.append(chat(
        server.url, None, stack.QUALITY, max_tokens=tokens, stream=True, ignore_eos=True, on_chunk=delivered.append)))
        for _ in range(streams)]
    for thread in threads:
        thread.start()
    # SIGTERM once the engine holds every stream (two generating, two queued behind them: maxNumSeqs 2).
    accepted = wait_until(lambda: in_engine(server.url) >= streams, 30, 0.1)
    assert accepted, platform.explain("the streams never reached the engine", f"vllm-{stack.QUALITY}")
    server.terminate()
    terminated, at_sigterm = time.monotonic(), len(delivered)
    for thread in threads:
        thread.join(timeout=DEADLINE)
    complete = [a for a in answers if a.status == 200 and a.done and finish_reason(a) == "length"
                and a.usage.get("completion_tokens") == tokens]
    assert len(complete) == streams, platform.explain(
        f"{len(complete)}/{streams} in-flight streams completed after SIGTERM: "
        f"{[(a.status, a.done, finish_reason(a), a.usage) for a in answers]}", f"vllm-{stack.QUALITY}")
    try:
        code = server.process.wait(timeout=stack.DRAIN_SECONDS + 30)
    except subprocess.TimeoutExpired:
        code = None
    assert code is not None, platform.explain("still running after the drain", f"vllm-{stack.QUALITY}")
    record_property("measured", f"SIGTERM with {at_sigterm} of {streams * tokens} tokens sent; "
                    f"{len(complete)}/{streams} streams completed; exited {code} "
                    f"{time.monotonic() - terminated:.0f} s after SIGTERM")


# 5. Failover (the quality server is gone) -------------------------------------------------------------------------

def test_a_tier_without_a_server_falls_back_and_a_model_without_one_gets_503(platform, record_property):
    """5. A tier without a server falls back; a model without one gets 503 + retry-after"""
    assert not platform.vllm[stack.QUALITY].alive()
    key = platform.keys["team"]
    fallback = [chat(g.url, key, "quality") for g in platform.gateways]
    asleep = [chat(g.url, key, stack.ASLEEP) for g in platform.gateways]
    fallbacks = [a.headers.get("x-litellm-attempted-fallbacks") for a in fallback]
    assert all(a.status == 200 and served_by(a) == f"fast/{stack.FAST}" for a in fallback) and all(fallbacks), (
        platform.explain(f"quality with its server down: {[(a.status, a.error) for a in fallback]}, "
                         f"fallbacks {fallbacks}", "gateway-a", "gateway-b"))
    assert all(a.status == 503 and int(a.headers.get("retry-after", 0)) > 0 for a in asleep), [
        (a.status, a.error) for a in asleep]
    assert not any("Traceback" in str(a.body) for a in (*fallback, *asleep))
    slowest = max(a.seconds for a in (*fallback, *asleep))
    assert slowest < 30, f"a request took {slowest:.1f} s"
    record_property("measured", f"quality answered by {served_by(fallback[0])} (fallbacks {fallbacks[0]}); "
                    f"asleep 503, retry-after {asleep[0].headers['retry-after']} s; slowest {slowest:.1f} s")


def test_the_model_down_alert_fires_for_the_stopped_server(platform, record_property):
    """7. LLMModelDown fires for the stopped server only"""
    def firing():
        return [a for a in platform.prometheus.alerts("LLMModelDown")
                if a["state"] == "firing" and a["labels"]["model"] == stack.QUALITY]

    start = time.monotonic()
    fired = wait_until(firing, DEADLINE)
    assert fired, platform.explain(f"LLMModelDown did not fire for {stack.QUALITY}", "prometheus")
    others = {a["labels"]["model"] for a in platform.prometheus.alerts("LLMModelDown")} - {stack.QUALITY}
    assert not others, f"LLMModelDown also for {others} (a model at zero replicas is not down)"
    record_property("measured", f"firing {time.monotonic() - start:.0f} s after this check began; "
                    f"not for {stack.ASLEEP} (min 0)")


# 12. Redis fails under the gateways (last: it restarts Redis) -------------------------------------------------------

def breakers(platform) -> list[set[str]]:
    """Each gateway's Redis circuit-breaker states with a breaker in them."""
    found = []
    for g in platform.gateways:
        text = exposition(g.url)
        found.append({m[0] for m in re.findall(r'litellm_redis_circuit_breaker_state\{state="(\w+)"\} ([1-9])',
                                                   text)})
    return found


def test_limits_hold_while_redis_is_down_and_are_shared_again_seconds_after_it_returns(platform, record_property):
    """12. Redis killed, paused and restarted under traffic: limits hold, stalls are bounded, recovery in seconds"""
    key, limit, urls = platform.keys["shared"], stack.SHARED_RPM_LIMIT, [g.url for g in platform.gateways]

    def burst(n: int) -> list[int]:
        return [chat(urls[i % 2], key, "fast", max_tokens=2).status for i in range(n)]

    def shared_again() -> bool:
        """Traffic of another key touches Redis (a breaker closes on a call that succeeds)."""
        for url in urls:
            chat(url, platform.keys["team"], "fast", max_tokens=2)
        return breakers(platform) == [{"closed"}, {"closed"}]

    # Paused (a hung Redis): requests go on, each slowed at most by the client's socket timeout.
    platform.redis.process.send_signal(signal.SIGSTOP)
    try:
        paused = [chat(urls[i % 2], platform.keys["team"], "fast", max_tokens=2) for i in range(6)]
    finally:
        platform.redis.process.send_signal(signal.SIGCONT)
    slowest = max(a.seconds for a in paused)
    assert all(a.status == 200 for a in paused) and slowest < 3, [(a.status, round(a.seconds, 2)) for a in paused]
    assert wait_until(shared_again, 30, 0.2), breakers(platform)

    # Killed: each gateway counts in its own memory, at half the limit (two ready replicas).
    platform.redis.process.kill()
    platform.redis.process.wait(timeout=10)
    down = burst(3 * limit)
    allowed = down.count(200)
    assert 1 <= allowed <= limit + len(urls) and down[-1] == 429, platform.explain(
        f"with Redis down, {allowed} of {len(down)} allowed against a limit of {limit}: {down}", "gateway-a")
    fired = wait_until(lambda: [a for a in platform.prometheus.alerts("LLMGatewayLimitsDegraded")
                                if a["state"] == "firing"], DEADLINE)
    assert fired, platform.explain("LLMGatewayLimitsDegraded did not fire", "prometheus")

    # Back, empty: limits are shared again within seconds, and the key gets its limit once more, never more.
    platform.redis = e2e.restart_redis(platform.redis, platform.redis_password)
    began = time.monotonic()
    recovered = wait_until(shared_again, 30, 0.2)
    recovery = time.monotonic() - began
    assert recovered, platform.explain(f"breakers still {breakers(platform)}", "gateway-a", "gateway-b")
    after = burst(limit + 4)
    assert after.count(200) <= limit and after[-1] == 429, platform.explain(
        f"after Redis returned: {after}", "gateway-a", "gateway-b")
    record_property("measured", f"paused: 6/6 answered, slowest {slowest:.2f} s; down: {allowed}/{len(down)} "
                    f"allowed (limit {limit}, two gateways), LLMGatewayLimitsDegraded firing; back: shared again "
                    f"after {recovery:.1f} s, then {after.count(200)}/{len(after)} allowed")


# 13. A replica of a routed model drains (last: it stops the second fast server) --------------------------------------

def test_draining_one_routed_replica_loses_no_request(platform, record_property):
    """13. SIGTERM to one of the routed model's replicas under steady load: every request still answers 200"""
    leaving, staying = platform.replicas[1], platform.replicas[0]
    key, url = platform.keys["team"], platform.gateways[0].url
    served_before = requests_seen(leaving)
    answers, stop = [], threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set() and i < 40:  # bounded: at most 40 requests per client
            # Distinct prompts, so cache_aware spreads them over both replicas rather than following one prefix.
            answers.append(chat(url, key, stack.FAST, f"client {n} question {i}: " + "word " * (20 + i),
                                max_tokens=8))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: requests_seen(leaving) > served_before and len(answers) >= 8, DEADLINE, 0.2), \
        platform.explain("the second replica got no request under load", leaving.name, platform.router.server.name)
    # Kubernetes' order: the pod is marked for deletion, which the router's pod watch sees at once and takes the pod
    # out; the kubelet runs the 15 s preStop pause, then sends SIGTERM. There is no Kubernetes here, so the router
    # is told what its watch would tell it (its own /remove_worker, what discovery calls), and the pause is shorter.
    removed = gateway_probes.send(platform.router.url, "POST", f"/remove_worker?url={leaving.url}", None, None)
    assert removed.status == 200, (removed.status, removed.text)
    time.sleep(2)
    terminated = time.monotonic()
    leaving.terminate()
    code = wait_until(lambda: leaving.process.poll() is not None and leaving.process.returncode is not None,
                      stack.DRAIN_SECONDS + 30)
    gone_after = time.monotonic() - terminated
    time.sleep(3)  # requests keep coming after it exited: the router must send them to the other replica
    stop.set()
    for thread in threads:
        thread.join(timeout=REQUEST_BOUND)
    failed = [(a.status, a.error) for a in answers if a.status != 200]
    assert code is not None, platform.explain("the replica did not exit after its drain", leaving.name)
    assert answers and not failed, platform.explain(f"{len(failed)} of {len(answers)} failed: {failed[:5]}",
                                                    leaving.name, platform.router.server.name, "gateway-a")
    assert staying.alive()
    record_property("measured", f"{len(answers)} requests from 4 clients, all 200; the replica exited "
                    f"{gone_after:.1f} s after SIGTERM, {requests_seen(leaving) - served_before} requests had "
                    "reached it under this load")
