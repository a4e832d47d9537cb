"""The code that runs inside the gateway (gateway_plugins/), called as the proxy calls it: every decision of the
key check, table-driven, and the hooks' reading of LiteLLM's errors. The same modules run in the real proxy in
tests/test_gateway_security.py."""

from __future__ import annotations

import asyncio

import httpx
import litellm
import pytest
from litellm.caching.redis_cache import RedisCircuitBreaker

from gateway_plugins import gateway_auth, gateway_hooks
from gateway_plugins.gateway_auth import GatewayError, KeyTable

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
POLICY = {
    "models": ["fast", "quality", "small", "big", "auto"],
    "fallbacksAcrossGrants": True,
    "replicas": 3,
    "keys": {"app": {"models": ["fast", "small"], "requestsPerMinute": 7, "tokensPerMinute": 900},
             "wide": {"models": ["*"], "requestsPerMinute": 100, "tokensPerMinute": 100000}},
}
KEYS = {"app": "sk-app-key", "wide": "sk-wide-key", "admin": "sk-master-key"}
HELLO = [{"role": "user", "content": "hi"}]


@pytest.fixture
def table() -> KeyTable:
    return KeyTable(POLICY, {name: gateway_auth.key_hash(value) for name, value in KEYS.items()})


def refused(table: KeyTable, key: str | None, method: str = "POST", route: str = CHAT, **request) -> GatewayError:
    with pytest.raises(GatewayError) as raised:
        table.authorize(key, method, route, **request)
    return raised.value


def chat(model="fast", **extra) -> dict:
    return {"model": model, "messages": HELLO, **extra}


# Keys --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", [None, "", "Bearer sk-wrong", "sk-app-ke", "sk-app-keyX", "Bearer  ", "bearer sk-app-key"])
def test_a_missing_or_unknown_key_is_401(table, key):
    error = refused(table, key, body=chat())
    assert (error.code, error.error_code) == ("401", "invalid_api_key")


def test_a_good_key_carries_its_limits_under_its_name_never_its_digest(table):
    identity = table.authorize("Bearer sk-app-key", "POST", CHAT, body=chat())
    assert identity.key_alias == identity.api_key == "app"
    assert gateway_auth.key_hash(KEYS["app"]) not in identity.model_dump_json()
    assert (identity.rpm_limit, identity.tpm_limit) == (7, 900)


def test_the_master_key_is_admin_inside_the_cluster_only(table):
    identity = table.authorize(KEYS["admin"], "POST", "/key/generate", body={})
    assert identity.user_role.value == "proxy_admin" and identity.rpm_limit is None
    for header in ("x-forwarded-for", "x-forwarded-proto"):
        error = refused(table, KEYS["admin"], "GET", "/v1/model/info", headers={header: "https"})
        assert (error.code, error.error_code) == ("403", "master_key_outside_cluster")


def test_a_hash_without_a_policy_is_refused_at_load():
    with pytest.raises(ValueError, match="without a policy"):
        KeyTable(POLICY, {"ghost": "00"})


# Routes ------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "route"), [
    ("POST", "/key/generate"), ("POST", "/user/new"), ("POST", "/model/new"), ("POST", "/cache/flushall"),
    ("GET", "/health"), ("GET", "/health/services"), ("GET", "/v1/model/info"), ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"), ("POST", "/v1/moderations"), ("POST", "/chat/completions"),
    ("POST", "/openai/deployments/{model:path}/chat/completions"), ("POST", "/engines/{model:path}/completions"),
    ("POST", "/v1beta/models/{model_name:path}:generateContent"), ("GET", CHAT), ("DELETE", "/v1/models"),
])
def test_a_client_key_may_call_only_the_client_routes_whatever_the_body(table, method, route):
    error = refused(table, KEYS["wide"], method, route, path="/the/path", body=chat())
    assert (error.code, error.error_code) == ("404", "not_found")
    assert error.message == f"Invalid URL ({method} /the/path)"


# Models --------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "query", "status", "code"), [
    (chat("quality"), [], "403", "model_not_allowed"),
    (chat("big"), [], "403", "model_not_allowed"),
    (chat("auto"), [], "403", "model_not_allowed"),  # the router may pick any tier: only keys granted `auto`
    (chat("nope"), [], "404", "model_not_found"),
    (chat("fast,quality"), [], "404", "model_not_found"),  # LiteLLM's comma-separated batch form
    ({"messages": HELLO}, [], "400", None),
    (chat(["fast"]), [], "400", None),
    (chat(7), [], "400", None),
    (chat("fast"), ["quality"], "400", None),
    (chat("fast"), ["fast", "quality"], "400", None),
    (chat("quality"), ["fast"], "400", None),
])
def test_the_model_is_read_from_every_place_litellm_reads_it(table, body, query, status, code):
    error = refused(table, KEYS["app"], body=body, query_models=query)
    assert (error.code, error.error_code) == (status, code)
    assert error.param == "model"


def test_a_long_made_up_model_name_is_not_echoed_whole(table):
    error = refused(table, KEYS["app"], body=chat("x" * 10000))
    assert error.error_code == "model_not_found" and len(error.message) < 200


@pytest.mark.parametrize("query", [["fast"], [""], ["fast", ""]])
def test_the_same_model_in_the_query_and_the_body_is_one_model(table, query):
    assert table.authorize(KEYS["app"], "POST", CHAT, body=chat(), query_models=query).key_alias == "app"


@pytest.mark.parametrize(("model", "status"), [("fast", None), ("small", None), ("quality", "404"), ("x", "404")])
def test_retrieving_a_model_shows_only_the_keys_own(table, model, status):
    request = {"path_params": {"model_id": model}}
    if status is None:
        assert table.authorize(KEYS["app"], "GET", "/v1/models/{model_id}", **request).key_alias == "app"
    else:
        assert refused(table, KEYS["app"], "GET", "/v1/models/{model_id}", **request).error_code == "model_not_found"


# Parameters and headers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("param", [
    "num_retries", "max_retries", "timeout", "request_timeout", "stream_timeout", "fallbacks",
    "context_window_fallbacks", "model_id", "specific_deployment", "mock_response", "mock_timeout", "api_base",
    "user_config", "cache", "tags", "litellm_metadata", "_private", "priority", "disable_fallbacks", "input_cost_per_token",
])
def test_litellms_own_parameters_are_the_gateways_not_the_clients(table, param):
    error = refused(table, KEYS["wide"], body=chat(**{param: 1}))
    assert (error.code, error.param) == ("400", param)


@pytest.mark.parametrize(("metadata", "ok"), [
    ({"trace": "abc"}, True),
    ({f"k{i}": "v" for i in range(17)}, False),
    ({"nested": {"a": 1}}, False),
    ({"user_api_key_alias": "admin"}, False),
    ("a string", False),
    ({"k": "v" * 513}, False),
])
def test_metadata_is_openais_string_pairs(table, metadata, ok):
    body = chat(metadata=metadata)
    if ok:
        assert table.authorize(KEYS["wide"], "POST", CHAT, body=body)
    else:
        assert refused(table, KEYS["wide"], body=body).param == "metadata"


@pytest.mark.parametrize("header", ["x-litellm-timeout", "x-litellm-num-retries", "x-litellm-tags",
                                    "x-litellm-call-id", "x-litellm-spend-logs-metadata"])
def test_litellm_control_headers_are_refused(table, header):
    error = refused(table, KEYS["wide"], body=chat(), headers={header: "1"})
    assert (error.code, error.param) == ("400", header)


def test_the_key_header_and_openai_parameters_pass(table):
    body = chat(temperature=0.2, top_p=0.9, n=2, stop=["x"], seed=1, user="u-1", tools=[], stream=True,
                stream_options={"include_usage": True}, response_format={"type": "json_object"}, logprobs=True)
    identity = table.authorize(KEYS["wide"], "POST", CHAT, body=body, headers={"x-litellm-api-key": KEYS["wide"]})
    assert identity.key_alias == "wide"


@pytest.mark.parametrize(("route", "body"), [
    (CHAT, chat(messages="x")), (CHAT, chat(messages=[])), (CHAT, chat(messages=["hi"])),
    (CHAT, chat(messages=[{"content": "no role"}])), (COMPLETIONS, {"model": "fast", "prompt": {"a": 1}}),
    (COMPLETIONS, {"model": "fast"}), (COMPLETIONS, {"model": "fast", "prompt": [[1, "x"]]}),
])
def test_a_malformed_request_is_400_naming_the_field(table, route, body):
    error = refused(table, KEYS["app"], route=route, body=body)
    assert error.code == "400" and error.param in ("messages", "prompt")


@pytest.mark.parametrize(("param", "value", "ok"), [
    ("max_tokens", 900, True), ("max_tokens", 901, False), ("max_completion_tokens", 5000, False),
    ("max_tokens", True, True),
])
def test_a_request_that_can_never_fit_the_keys_tokens_per_minute_is_400(table, param, value, ok):
    body = chat(**{param: value})
    if ok:
        assert table.authorize(KEYS["app"], "POST", CHAT, body=body)
    else:
        error = refused(table, KEYS["app"], body=body)
        assert (error.code, error.param) == ("400", param) and "900 tokens per minute" in error.message


# Limits while Redis is unreachable, and the fallback rule ----------------------------------------------------------

@pytest.mark.parametrize(("share", "rpm", "tpm"), [(1, 7, 900), (2, 4, 450), (3, 3, 300), (10, 1, 90)])
def test_a_keys_limits_are_shared_among_the_replicas_counting_alone(table, share, rpm, tpm):
    identity = table.authorize(KEYS["app"], "POST", CHAT, body=chat(), share=share)
    assert (identity.rpm_limit, identity.tpm_limit) == (rpm, tpm)


@pytest.mark.parametrize(("across", "route", "grant"), [
    (True, CHAT, []), (False, CHAT, ["fast", "small"]), (True, "/v1/models", ["fast", "small"]),
])
def test_the_fallback_rule_decides_what_litellm_may_answer_from(across, route, grant):
    table = KeyTable({**POLICY, "fallbacksAcrossGrants": across}, {"app": gateway_auth.key_hash(KEYS["app"])})
    body = chat() if route == CHAT else None
    assert table.authorize(KEYS["app"], "POST" if body else "GET", route, body=body).models == grant


def test_the_limits_degrade_exactly_while_a_litellm_redis_breaker_is_not_closed():
    breaker = RedisCircuitBreaker(failure_threshold=1, recovery_timeout=60)
    try:
        assert not gateway_auth.limits_degraded()
        breaker.record_failure()
        assert breaker.state == "open" and gateway_auth.limits_degraded()
    finally:
        breaker._set_state(RedisCircuitBreaker.CLOSED)
    assert not gateway_auth.limits_degraded()


def test_ready_replicas_come_from_the_peers_name_or_the_configured_count(monkeypatch):
    monkeypatch.setattr(gateway_auth, "_peers", None)
    monkeypatch.delenv(gateway_auth.PEERS, raising=False)
    assert asyncio.run(gateway_auth.ready_replicas(3)) == 3
    monkeypatch.setenv(gateway_auth.PEERS, "localhost")
    assert asyncio.run(gateway_auth.ready_replicas(3)) >= 1
    monkeypatch.setattr(gateway_auth, "_peers", None)
    monkeypatch.setenv(gateway_auth.PEERS, "no-such-gateway.invalid")
    assert asyncio.run(gateway_auth.ready_replicas(3)) == 3


# The hooks' reading of LiteLLM's errors ------------------------------------------------------------------------------

def _raised_from(outer: type, inner: BaseException, message: str = "x") -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer(message=message, llm_provider="openai", model="m")  # noqa: B904 - chained as LiteLLM chains
    except BaseException as error:
        return error


@pytest.mark.parametrize(("error", "ready"), [
    (_raised_from(litellm.APIConnectionError, httpx.ConnectError("refused")), True),
    (_raised_from(litellm.APIConnectionError, ConnectionRefusedError()), True),
    (_raised_from(litellm.APIConnectionError, ValueError("v"), "OpenAIException - Connection error."), True),
    (_raised_from(litellm.APIConnectionError, AttributeError("'str' object has no attribute 'get'")), False),
    (_raised_from(litellm.APIConnectionError, KeyError("messages")), False),
    (litellm.BadRequestError(message="bad", model="m", llm_provider="openai"), False),
])
def test_only_an_unreachable_server_is_no_server_ready(error, ready):
    assert gateway_hooks.no_server_ready(error) is ready


def test_the_hooks_answers_are_openai_shaped_and_reach_the_client_as_they_are():
    hook = gateway_hooks.unavailable
    refused_connection = _raised_from(litellm.APIConnectionError, httpx.ConnectError("refused"))
    answer = asyncio.run(hook.async_post_call_failure_hook({"model": "fast"}, refused_connection, None))
    assert answer.status_code == 503 and answer.headers["retry-after"] == gateway_hooks.RETRY_AFTER_SECONDS
    assert answer.to_dict() == {"message": answer.message, "type": "server_error", "param": None,
                                "code": "model_not_ready"}
    timeout = litellm.Timeout(message="t", model="m", llm_provider="openai")
    assert asyncio.run(hook.async_post_call_failure_hook({"model": "fast"}, timeout, None)).status_code == 504
    malformed = _raised_from(litellm.APIConnectionError, AttributeError("a"))
    assert asyncio.run(hook.async_post_call_failure_hook({"model": "fast"}, malformed, None)) is None


def test_each_attempt_gets_only_what_is_left_of_the_requests_time(monkeypatch):
    hook = gateway_hooks.unavailable
    monkeypatch.setenv(gateway_hooks.REQUEST_TIMEOUT, "300")
    now = 1_000_000.0
    monkeypatch.setattr(gateway_hooks.time, "time", lambda: now)
    fresh = asyncio.run(hook.async_pre_call_deployment_hook(
        {"timeout": 300.0, "proxy_server_request": {"arrival_time": now - 100}}, None))
    assert fresh["timeout"] == 199  # whole seconds, a second kept back for the answer
    with pytest.raises(litellm.Timeout):
        asyncio.run(hook.async_pre_call_deployment_hook(
            {"timeout": 300.0, "proxy_server_request": {"arrival_time": now - 300}}, None))
    assert asyncio.run(hook.async_pre_call_deployment_hook({"timeout": 300.0}, None)) is None
    monkeypatch.delenv(gateway_hooks.REQUEST_TIMEOUT)
    assert asyncio.run(hook.async_pre_call_deployment_hook(
        {"timeout": 300.0, "proxy_server_request": {"arrival_time": now - 300}}, None)) is None
