"""The real LiteLLM proxy (the `litellm` release the image pins) loads the rendered config, runs the platform's
auth and 503 hooks, and answers as clients are told it will: 401, 403, 429 with retry-after, tier and router
headers, response cost, fallbacks, 503 with retry-after for a model with no server, and the request counter the
scale-from-zero trigger reads. Backends are stand-in servers on 127.0.0.1 (tests/gateway_stand_in.py); the end-to-end run
against a real vLLM is separate. Limits are counted in the proxy's memory here (no Redis)."""

from __future__ import annotations

import re

import pytest

from components.edge import gateway
from components.observability.signals import GATEWAY_REQUESTS
from tests import gateway_stand_in
from tests.openai_client import chat, exposition

KEYS, MASTER = gateway_stand_in.KEYS, gateway_stand_in.MASTER


@pytest.fixture(scope="module")
def proxy(gateways):
    g = gateways["default"]
    return g.url, g


def call(url: str, key: str | None, model: str) -> tuple[int, dict, dict]:
    answer = chat(url, key, model)
    return answer.status, answer.headers, answer.body


def test_no_key_or_an_unknown_key_is_401(proxy):
    url, _ = proxy
    assert call(url, None, "fast")[0] == 401
    assert call(url, "sk-nobody", "fast")[0] == 401


def test_a_model_outside_the_keys_list_is_403(proxy):
    url, _ = proxy
    status, _, body = call(url, KEYS["limited"], "balanced")
    assert status == 403 and "may not call model 'balanced'" in body["error"]["message"]


def test_a_tier_answers_with_its_group_and_the_configured_cost(proxy):
    url, _ = proxy
    status, headers, _ = call(url, KEYS["team"], "fast")
    assert status == 200, headers
    assert headers["x-litellm-model-group"] == "fast"
    # 10 prompt tokens at 0.1/1k + 5 completion tokens at 0.2/1k.
    assert float(headers["x-litellm-response-cost"]) == pytest.approx(0.002)


def test_the_router_says_which_tier_and_why(proxy):
    url, _ = proxy
    status, headers, _ = call(url, KEYS["team"], "auto")
    assert status == 200, headers
    assert headers["x-litellm-complexity-router-tier"] in ("SIMPLE", "MEDIUM", "COMPLEX", "REASONING")
    assert headers["x-litellm-complexity-router-cause"]


def test_a_tier_with_no_ready_server_falls_back_one_down(proxy):
    url, _ = proxy
    status, headers, _ = call(url, KEYS["team"], "balanced")
    assert status == 200, headers
    assert headers["x-litellm-attempted-fallbacks"] == "1" and headers["x-litellm-model-id"] == "fast/small"


def test_a_model_with_no_server_answers_503_with_retry_after_and_is_counted(proxy):
    url, _ = proxy
    status, headers, body = call(url, KEYS["team"], "asleep")
    assert status == 503 and headers["retry-after"] == "30", body
    metrics = exposition(url)
    counted = [line for line in metrics.splitlines()
               if line.startswith(GATEWAY_REQUESTS + "{") and 'requested_model="asleep"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, metrics[:2000]


def test_a_key_over_its_limit_gets_429_with_retry_after(proxy):
    url, _ = proxy
    statuses = [call(url, KEYS["limited"], "fast") for _ in range(3)]
    assert [s for s, _, _ in statuses[:2]] == [200, 200]
    status, headers, _ = statuses[2]
    assert status == 429 and int(headers["retry-after"]) > 0


def test_the_dashboards_labels_exist_in_the_real_metrics(proxy):
    url, _ = proxy
    call(url, KEYS["team"], "fast")
    metrics = exposition(url)
    requests = [line for line in metrics.splitlines() if line.startswith(GATEWAY_REQUESTS + "{")]
    assert requests and all('status_code="' in line and 'requested_model="' in line for line in requests)
    spend = [line for line in metrics.splitlines() if line.startswith("litellm_spend_metric_total{")]
    assert spend and all('api_key_alias="' in line for line in spend), metrics[:2000]
    # The labels a client chooses are left out by the proxy itself (prometheus_exclude_labels).
    for label in gateway.EXCLUDED_METRIC_LABELS:
        assert not re.search(rf'[{{,]{label}="', metrics), label


def test_a_request_refused_before_any_token_is_retried(proxy):
    """A server that got SIGTERM (a spot reclaim, a scale-down) refuses new requests with 503 while it drains; the
    gateway retries once, and the client sees only the answer."""
    url, g = proxy
    mark = len(g.stand_ins.received)
    status, _, body = call(url, KEYS["team"], "draining")
    attempts = [r for r in g.stand_ins.since(mark) if r.server == "draining"]
    assert status == 200, body
    assert len(attempts) == 2, attempts
