"""The real LiteLLM proxy (the `litellm` release the image pins) loads the rendered config, runs the platform's
auth and 503 hooks, and answers as clients are told it will: 401, 403, 429 with retry-after, tier and router
headers, response cost, fallbacks, 503 with retry-after for a model with no server, and the request counter the
scale-from-zero trigger reads. Backends are a stand-in OpenAI-compatible server on 127.0.0.1; the end-to-end run
against a real vLLM is separate. Limits are counted in the proxy's memory here (no Redis)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import config
from components.observability.signals import GATEWAY_REQUESTS
from tests.conftest import ROOT
from tests.litellm_proxy import start_proxy
from tests.openai_client import chat
from tests.servers import StartupFailed, free_port

STARTUP_SECONDS = 90
KEYS = {"team": "sk-test-team-1", "limited": "sk-test-limited-2"}
MASTER = "sk-test-master"


class Backend(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint with fixed usage: 10 prompt and 5 completion tokens. The model `draining`
    refuses every other request with 503, as a server that received SIGTERM refuses new work."""

    attempts: dict[str, int] = {}

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        model = str(body.get("model"))
        Backend.attempts[model] = Backend.attempts.get(model, 0) + 1
        if model.endswith("draining") and Backend.attempts[model] % 2 == 1:
            self.send_error(503, "server is shutting down")
            return
        reply = json.dumps({"id": "c1", "object": "chat.completion", "created": int(time.time()),
                            "model": body.get("model"), "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ok"}}],
                            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def stack_config() -> config.StackConfig:
    return config.parse("proxy-test", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"g": {"instanceFamilies": ["g6e"], "gpuLimit": 4}},
        "models": {
            "small": {"model": "llama-3.1-8b", "gpuPool": "g", "tier": "fast",
                      "costPer1kTokens": {"input": 0.1, "output": 0.2}},
            # balanced has no ready server: its requests fall back to fast.
            "mid": {"model": "llama-3.1-8b", "gpuPool": "g", "tier": "balanced"},
            "asleep": {"model": "llama-3.1-8b", "gpuPool": "g", "minReplicas": 0},
            "draining": {"model": "llama-3.1-8b", "gpuPool": "g"},
        },
        "gateway": {"ingress": {"enabled": False}, "keys": {
            "team": {"models": ["fast", "balanced", "auto", "asleep", "draining"], "requestsPerMinute": 100,
                     "tokensPerMinute": 100000},
            "limited": {"models": ["fast"], "requestsPerMinute": 2, "tokensPerMinute": 100000}}},
    })


@pytest.fixture(scope="module")
def proxy():
    backend = ThreadingHTTPServer(("127.0.0.1", free_port()), Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    live, dead = f"http://127.0.0.1:{backend.server_port}", f"http://127.0.0.1:{free_port()}"
    work = ROOT / "build" / "test-gateway-proxy"
    server = start_proxy("litellm", work, stack_config(), {"small": live, "mid": dead, "asleep": dead, "draining": live}, MASTER, KEYS)
    try:
        server.wait_ready("/health/readiness", STARTUP_SECONDS)
        yield server.url, work
    except StartupFailed as error:
        pytest.fail(str(error))
    finally:
        server.stop(timeout=20)
        backend.shutdown()


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
    metrics = urllib.request.urlopen(f"{url}/metrics/", timeout=10).read().decode()
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
    metrics = urllib.request.urlopen(f"{url}/metrics/", timeout=10).read().decode()
    requests = [line for line in metrics.splitlines() if line.startswith(GATEWAY_REQUESTS + "{")]
    assert requests and all('status_code="' in line and 'requested_model="' in line for line in requests)
    spend = [line for line in metrics.splitlines() if line.startswith("litellm_spend_metric_total{")]
    assert spend and all('api_key_alias="' in line for line in spend), metrics[:2000]
    # The labels the ServiceMonitor drops are really there (so dropping them matters).
    assert 'client_ip="' in requests[0] and 'hashed_api_key="' in requests[0]


def test_a_request_refused_before_any_token_is_retried(proxy):
    """A server that got SIGTERM (a spot reclaim, a scale-down) refuses new requests with 503 while it drains; the
    gateway retries once, and the client sees only the answer."""
    url, _ = proxy
    before = {k: v for k, v in Backend.attempts.items() if k.endswith("draining")}
    status, _, body = call(url, KEYS["team"], "draining")
    after = {k: v for k, v in Backend.attempts.items() if k.endswith("draining")}
    assert status == 200, body
    assert sum(after.values()) - sum(before.values()) == 2, (before, after)
