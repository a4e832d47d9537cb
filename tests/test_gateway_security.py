"""The gateway as an attacker holding a narrow client key would try it: the real LiteLLM proxy with the rendered
config and the platform's plugins, in front of stand-in model servers that record every request reaching them
(tests/gateway_stand_in.py). Every probe asserts the safe answer, that no model server saw what it must not, and
that nothing internal leaks (backend addresses, key digests, tracebacks).

Classes (issue #23): a model named outside the body; one key's failures cooling a tier down for every key;
management and health routes; internals in headers and bodies; client-chosen metric labels; errors a client can
act on; fallbacks against grants; a request's total time; a stream whose server dies.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid

import openai
import pytest
import yaml

from components.edge import gateway
from components.observability.signals import GATEWAY_REQUESTS
from gateway_plugins import gateway_auth
from tests.gateway_probes import HELLO, Reply, chat, model_forms, send
from tests.gateway_stand_in import KEYS, MASTER, REQUEST_TIMEOUT
from tests.openai_client import exposition, metric
from tests.prometheus import OPERATOR_RELABELINGS, Api, pod_target, relabel
from tests.servers import free_port
from tests.tools import stop, tool

# Key digests as the hashes Secret holds them: never in an answer.
DIGESTS = {gateway_auth.key_hash(value) for value in (*KEYS.values(), MASTER)}


@pytest.fixture(scope="module")
def gw(gateways):
    return gateways["default"]


def clean(reply: Reply, backends: dict[str, str]) -> Reply:
    """No backend address, key digest or traceback anywhere in the answer; errors OpenAI-shaped."""
    everything = reply.text + json.dumps(reply.headers)
    for base in backends.values():
        address = base.removeprefix("http://")
        assert address not in everything, f"backend {address} leaked: {everything[:600]}"
    assert not any(digest in everything for digest in DIGESTS), everything[:600]
    assert "Traceback" not in everything and 'File "/' not in everything, everything[:600]
    if reply.status >= 400 and reply.json and reply.json != {"detail": "Not Found"}:  # FastAPI's: no such route
        assert set(reply.error) >= {"message", "type", "param", "code"}, reply.text
    return reply


def probe(gw, method: str, path: str, key: str | None, body=None, headers: dict | None = None):
    """The reply, checked clean, and what reached the model servers meanwhile."""
    mark = len(gw.stand_ins.received)
    reply = clean(send(gw.url, method, path, key, body, headers), gw.backends)
    return reply, gw.stand_ins.since(mark)


QUALITY_FORMS = model_forms("quality", "big")


@pytest.mark.parametrize(("method", "path", "body", "status"), QUALITY_FORMS,
                         ids=[f"{m} {p} {json.dumps(b)[:40] if b else ''}" for m, p, b, _ in QUALITY_FORMS])
def test_a_fast_only_key_reaches_no_other_model_by_any_route_form(gw, method, path, body, status):
    reply, reached = probe(gw, method, path, KEYS["narrow"], body)
    assert reply.status == status, reply.text
    assert not [r for r in reached if r.server != "small"], reached
    if status != 403:
        assert not reached, reached


def test_a_fast_only_key_lists_and_calls_only_fast(gw):
    listed, _ = probe(gw, "GET", "/v1/models", KEYS["narrow"])
    assert {m["id"] for m in listed.json["data"]} == {"fast", "small"}
    reply, reached = probe(gw, "POST", "/v1/chat/completions?model=fast", KEYS["narrow"], chat())
    assert reply.status == 200 and [r.server for r in reached] == ["small"]


# 2. One key's failures never take a tier away from another key ------------------------------------------------------

@pytest.mark.parametrize("status", [400, 404, 429, 500])
def test_one_keys_failing_requests_leave_another_keys_answers_untouched(gw, status):
    """Each failure is tried once (a retry would double what a malformed input costs the servers), and none puts
    the tier's only deployment into LiteLLM's cooldown for the next key."""
    mark = len(gw.stand_ins.received)
    failures = [probe(gw, "POST", "/v1/chat/completions", KEYS["narrow"],
                      {"model": "fast", "messages": [{"role": "user", "content": f"FAIL{status}"}]})[0].status
                for _ in range(4)]
    assert all(s == status for s in failures), failures
    assert len(gw.stand_ins.since(mark)) == len(failures)
    reply, reached = probe(gw, "POST", "/v1/chat/completions", KEYS["other"], chat())
    assert reply.status == 200, reply.text
    assert [r.server for r in reached] == ["small"]


# 3. Management routes need the master key, and the master key works only inside the cluster ------------------------

MANAGEMENT = ["/key/generate", "/user/new", "/team/new", "/model/new", "/model/update", "/model/delete",
              "/credentials", "/config/pass_through_endpoint", "/cache/flushall", "/v1/mcp/server",
              "/coordination_redis/settings/test", "/config/update"]


@pytest.mark.parametrize("path", MANAGEMENT)
def test_a_client_key_never_reaches_a_management_route_whatever_the_body_holds(gw, path):
    reply, reached = probe(gw, "POST", path, KEYS["ops"], {"model": "fast", "key_alias": "x", "models": ["*"]})
    assert reply.status == 404, reply.text
    assert not reached


def test_a_malformed_host_header_does_not_turn_a_route_into_another(gw):
    reply, reached = probe(gw, "POST", "/key/generate", KEYS["ops"], {"model": "fast"},
                           headers={"host": "x/health?a="})
    assert reply.status == 404 and not reached


def test_the_master_key_is_refused_on_a_request_that_came_through_the_load_balancer(gw):
    inside = send(gw.url, "GET", "/v1/model/info", MASTER)  # the admin's, backend URLs and all
    assert inside.status == 200 and gw.backends["small"] in inside.text
    for header in ({"x-forwarded-for": "203.0.113.7"}, {"x-forwarded-proto": "https"}):
        outside, _ = probe(gw, "GET", "/v1/model/info", MASTER, headers=header)
        assert (outside.status, outside.error.get("code")) == (403, "master_key_outside_cluster")


# 4. Health routes -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/health", None), ("GET", "/health/services?service=prometheus", None), ("GET", "/health/latest", None),
    ("GET", "/health/history", None),
    # LiteLLM's connection test calls whatever api_base it is given: a server-side request for any key.
    ("POST", "/health/test_connection", {"litellm_params": {"model": "openai/x", "api_base": "http://127.0.0.1:9"}}),
])
def test_a_client_key_runs_no_health_check(gw, method, path, body):
    before = metric(gw.url, GATEWAY_REQUESTS)
    reply, reached = probe(gw, method, path, KEYS["ops"], body)
    assert reply.status == 404 and not reached
    assert metric(gw.url, GATEWAY_REQUESTS) - before <= 1  # the refusal itself, never a made-up request


@pytest.mark.parametrize("path", gateway.HEALTH_PATHS)
def test_the_probes_health_routes_need_no_key_and_call_no_model(gw, path):
    reply, reached = probe(gw, "GET", path, None)
    assert reply.status == 200 and not reached


# 5. Nothing internal in answers ----------------------------------------------------------------------------------

def test_an_answer_names_no_backend_address(gw):
    reply, _ = probe(gw, "POST", "/v1/chat/completions", KEYS["narrow"], chat())
    assert reply.status == 200 and reply.headers.get("x-litellm-model-api-base", "") == ""


def test_model_info_with_its_backend_urls_is_the_admins_only(gw):
    reply, _ = probe(gw, "GET", "/v1/model/info", KEYS["ops"])
    assert reply.status == 404


def test_a_refusal_for_a_limit_shows_the_keys_name_not_its_digest(gw):
    replies = [probe(gw, "POST", "/v1/chat/completions", KEYS["capped"], chat())[0] for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429]
    assert int(replies[2].headers["retry-after"]) > 0 and "capped" in replies[2].error["message"]


def test_a_model_without_a_server_answers_without_its_address(gw):
    reply, _ = probe(gw, "POST", "/v1/chat/completions", KEYS["team"], chat("asleep"))
    assert (reply.status, reply.error["code"]) == (503, "model_not_ready") and reply.headers["retry-after"]


# 6. Metrics: bounded labels --------------------------------------------------------------------------------------

def test_requests_to_made_up_paths_add_no_label_values(gw):
    invented = [uuid.uuid4().hex for _ in range(5)]
    for token in invented:
        send(gw.url, "POST", f"/openai/deployments/{token}/chat/completions", None, chat(token))
        send(gw.url, "POST", f"/engines/{token}/completions", KEYS["narrow"], {"model": token, "prompt": "x"})
    text = exposition(gw.url)
    assert not any(token in text for token in invented)
    for label in gateway.EXCLUDED_METRIC_LABELS:
        assert not re.search(rf'[{{,]{label}="', text), label


def test_prometheus_holds_exactly_what_the_proxy_counted(gw, tmp_path):
    """Scraped with the rendered ServiceMonitor by a real Prometheus, every series the proxy exposes arrives and
    the request counter sums to the proxy's own count (a label dropped at the scrape would collide series)."""
    for i in range(3):
        send(gw.url, "POST", "/v1/chat/completions", KEYS[("narrow", "other", "team")[i]], chat())
    [endpoint] = gateway.service_monitor_spec()["endpoints"]
    port, data = free_port(), tmp_path / "data"
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": "gateway", "relabel_configs": OPERATOR_RELABELINGS,
                            "metric_relabel_configs": relabel(endpoint.get("metricRelabelings", [])),
                            "static_configs": [pod_target(gw.url.removeprefix("http://"), endpoint["path"],
                                                          gateway.NAMESPACE, "llm-gateway-0")]}]}))
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(tool("prometheus")), f"--config.file={tmp_path / 'prometheus.yaml'}",
                                 f"--storage.tsdb.path={data}", f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        api = Api(f"http://127.0.0.1:{port}", log)
        name = "litellm_proxy_total_requests_metric_total"
        api.wait_for(name, proc, 60)
        exposed = [line for line in exposition(gw.url).splitlines() if line.startswith(name + "{")]
        [total] = api.query(f"sum({name})")
        assert float(total["value"][1]) == pytest.approx(sum(float(line.rsplit(" ", 1)[1]) for line in exposed))
        assert len(api.query(name)) == len(exposed)
    finally:
        stop(proc, 10)


# 7. Errors a client can act on -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "body", "status", "param"), [
    ("narrow", chat(messages="x"), 400, "messages"),
    ("narrow", {"model": "fast"}, 400, "messages"),
    ("narrow", chat("no-such-model"), 404, "model"),
    ("tiny", chat(max_tokens=5000), 400, "max_tokens"),
    ("narrow", b"{not json", 400, None),
    (None, chat(), 401, None),
])
def test_an_error_says_what_is_wrong(gw, key, body, status, param):
    reply, reached = probe(gw, "POST", "/v1/chat/completions", KEYS.get(key), body)
    assert reply.status == status, reply.text
    if param:
        assert reply.error["param"] == param
    assert not reached


@pytest.mark.parametrize("body", [b"[1, 2]", b'"a string"', b"7"])
def test_a_body_that_is_not_a_json_object_reaches_no_server(gw, body):
    """LiteLLM reads the body before the gateway's check and fails on anything but an object: it answers 500
    {"error": {"message": "Internal server error", ...}} (its own fault; its body lacks `param` and `code`, so this
    probe does not ask for the full shape), shows no traceback, and nothing reaches a model server."""
    mark = len(gw.stand_ins.received)
    reply = send(gw.url, "POST", "/v1/chat/completions", KEYS["narrow"], body)
    assert reply.status >= 400 and reply.error.get("message"), reply.text
    assert "Traceback" not in reply.text and not gw.stand_ins.since(mark)


@pytest.mark.parametrize("header", ["x-litellm-timeout", "x-litellm-num-retries", "x-litellm-tags"])
def test_litellm_control_headers_are_refused(gw, header):
    reply, reached = probe(gw, "POST", "/v1/chat/completions", KEYS["narrow"], chat(), headers={header: "99"})
    assert (reply.status, reply.error["param"]) == (400, header) and not reached


# 8. Fallbacks and grants ----------------------------------------------------------------------------------------

def test_a_tiers_fallback_answers_a_key_not_granted_it_by_default_and_says_so(gw):
    reply, reached = probe(gw, "POST", "/v1/chat/completions", KEYS["balanced-only"], chat("balanced"))
    assert reply.status == 200, reply.text
    assert reply.headers["x-litellm-model-id"] == "fast/small" and int(reply.headers["x-litellm-attempted-fallbacks"])
    assert [r.server for r in reached] == ["small"]


def test_with_fallbacks_within_grants_only_a_key_gets_503_rather_than_another_tier(gateways):
    strict = gateways["strict"]
    reply, reached = probe(strict, "POST", "/v1/chat/completions", KEYS["balanced-only"], chat("balanced"))
    assert (reply.status, reply.error["code"]) == (503, "model_not_ready"), reply.text
    assert not reached


# 10. A request's total time ----------------------------------------------------------------------------------------

def test_a_hung_server_gives_504_at_the_request_timeout_and_is_tried_once(gw):
    began = time.monotonic()
    reply, reached = probe(gw, "POST", "/v1/chat/completions", KEYS["ops"], chat("stuck"))
    took = time.monotonic() - began
    assert (reply.status, reply.error["code"]) == (504, "timeout"), reply.text
    # Never past the request timeout; each attempt gets the whole seconds left of it, less one for the answer.
    assert REQUEST_TIMEOUT - 2.5 <= took <= REQUEST_TIMEOUT, took
    assert [r.server for r in reached] == ["stuck"]


def test_a_retry_gets_only_what_is_left_of_the_requests_time(gw):
    """A server that refuses (503, as when draining) after more than half the timeout is retried once; the retry
    has only the rest of the request's time, so the client has its answer within the timeout, not after two."""
    began = time.monotonic()
    reply, reached = probe(gw, "POST", "/v1/chat/completions", KEYS["ops"], chat("slow"))
    took = time.monotonic() - began
    assert (reply.status, reply.error["code"]) == (504, "timeout"), reply.text
    assert took <= REQUEST_TIMEOUT, took
    assert [r.server for r in reached] == ["slow", "slow"]


# 11. A stream whose server dies ---------------------------------------------------------------------------------

def test_a_stream_cut_off_ends_with_an_openai_error_event_and_no_done(gw):
    body = {"model": "fast", "stream": True, "messages": [{"role": "user", "content": "DIE"}]}
    reply, _ = probe(gw, "POST", "/v1/chat/completions", KEYS["narrow"], body)
    events = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert reply.status == 200 and events and events[-1] != "[DONE]", events
    assert json.loads(events[-1]) == {"error": {"message": "the model server stopped before the answer was complete",
                                                "type": "server_error", "param": None, "code": "stream_interrupted"}}
    assert sum("delta" in event for event in events) >= 3


def test_an_openai_client_raises_rather_than_returning_a_truncated_answer(gw):
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=KEYS["narrow"], max_retries=0, timeout=30)
    stream = client.chat.completions.create(model="fast", stream=True,
                                            messages=[{"role": "user", "content": "DIE"}])
    with pytest.raises(openai.APIError, match="stopped before the answer was complete"):
        for _ in stream:
            pass
    complete = list(client.chat.completions.create(model="fast", stream=True, messages=HELLO))
    assert complete[-1].choices[0].finish_reason == "stop"
