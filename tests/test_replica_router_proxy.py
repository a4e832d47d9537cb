"""What a client sees through the gateway does not change when a model's replicas sit behind the replica router: the
real LiteLLM proxy as rendered, in front of the real router as rendered (tests/replica_router_local.py), in front of
stand-in servers (tests/gateway_stand_in.py). Answers, cost headers and streams pass through; a router with no
server, or whose servers went away, gives the client the gateway's 503 + retry-after; a failure is tried on a
server at most twice, and a client's bad request only once. The real vLLM behind the router is `make e2e`'s."""

from __future__ import annotations

import json
import re
import time

import pytest

import config
from components.serving import replica_router
from tests import gateway_stand_in
from tests.conftest import ROOT
from tests.litellm_proxy import start_proxy
from tests.openai_client import chat, exposition
from tests.replica_router_local import STARTUP_SECONDS, start_router
from tests.servers import StartupFailed

WORK = ROOT / "build" / "test-replica-router"
KEY = "sk-test-router-0123456789"
MASTER = "sk-test-router-master-0123456789"
PRICE = {"input": 0.1, "output": 0.2}
# routed: two live servers; empty: a router that found no server; gone: a router whose only server stopped.
MODELS = ("routed", "empty", "gone")


def stack_config() -> config.StackConfig:
    model = {"model": "llama-3.1-8b", "gpuPool": "g", "maxReplicas": 2, "costPer1kTokens": PRICE}
    return config.parse("router-test", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"g": {"instanceFamilies": ["g6e"], "gpuLimit": 8}},
        "models": {key: model for key in MODELS},
        "gateway": {"ingress": {"enabled": False}, "requestTimeoutSeconds": 10, "keys": {
            "team": {"models": ["*"], "requestsPerMinute": 1000, "tokensPerMinute": 1000000}}},
    })


@pytest.fixture(scope="module")
def stand():
    cfg = stack_config()
    stand_ins = gateway_stand_in.StandIns()
    started = []
    try:
        replicas = [stand_ins.serve(f"routed-{i}", "live") for i in range(2)]
        doomed = gateway_stand_in.StandIns()
        routers = {
            "routed": start_router("router-routed", WORK / "routed", "routed", cfg.models["routed"], replicas),
            "empty": start_router("router-empty", WORK / "empty", "empty", cfg.models["empty"], []),
            "gone": start_router("router-gone", WORK / "gone", "gone", cfg.models["gone"],
                                 [doomed.serve("gone-0", "live")]),
        }
        started += [r.server for r in routers.values()]
        for name, router in routers.items():
            router.server.wait_ready("/liveness" if name == "empty" else "/readiness", STARTUP_SECONDS)
        doomed.shutdown()  # after the router saw it healthy: a server that went away without its pod being deleted
        proxy = start_proxy("gateway", WORK / "gateway", cfg, {k: r.url for k, r in routers.items()}, MASTER,
                            {"team": KEY})
        started.append(proxy)
        proxy.wait_ready("/health/readiness", gateway_stand_in.STARTUP_SECONDS)
        yield proxy.url, stand_ins, routers
    except StartupFailed as error:
        pytest.fail(str(error))
    finally:
        stand_ins.stopping.set()
        for server in reversed(started):
            server.stop(timeout=20)
        stand_ins.shutdown()


def reached(stand_ins, mark: int) -> list[str]:
    """The servers that got a completion since `mark`; cache_aware also asks each server to tokenize the prompt
    (POST .../render, then /tokenize, which vLLM answers and the stand-ins refuse): not completions."""
    return [r.server for r in stand_ins.since(mark) if r.method == "POST" and r.path.endswith("/completions")]


def test_an_answer_and_its_cost_pass_through_the_router(stand):
    url, stand_ins, routers = stand
    mark = len(stand_ins.received)
    answer = chat(url, KEY, "routed")
    assert answer.status == 200, answer.error
    assert answer.body["choices"][0]["message"]["content"] == "ok"
    # 10 prompt tokens at 0.1/1k + 5 completion tokens at 0.2/1k, as without a router.
    assert float(answer.headers["x-litellm-response-cost"]) == pytest.approx(0.002)
    [server] = reached(stand_ins, mark)
    assert server.startswith("routed-")
    assert stand_ins.received[-1].body["model"] == "routed"
    assert "vllm_router_requests_total" in exposition(routers["routed"].metrics_url)


def test_the_router_knows_both_replicas_healthy(stand):
    """Which replica answers is the policy's choice (cache_aware needs vLLM's tokenizer, which the stand-ins lack:
    `make e2e` and `make bench` measure it on real servers); here both must be known and healthy."""
    _, _, routers = stand
    text = exposition(routers["routed"].metrics_url)
    assert re.search(r"^vllm_router_active_workers 2$", text, re.MULTILINE), text
    assert len(re.findall(r"^vllm_router_worker_health\{[^}]*\} 1$", text, re.MULTILINE)) == 2, text


def test_a_stream_passes_through_whole(stand):
    url, _, _ = stand
    answer = chat(url, KEY, "routed", stream=True)
    assert answer.status == 200 and answer.done
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in answer.chunks if c.get("choices")) == \
        "t0 t1 t2 "


def test_a_stream_cut_by_its_server_is_never_taken_for_a_whole_answer(stand):
    """The stand-in sends three chunks and drops the connection. The router forwards them as they come, so
    whether the gateway has read a first chunk when the drop arrives is timing: if it has, the client's stream
    ends with the error event and no [DONE]; if not, nothing was sent and the client gets 503 (measured here: about
    one run in five through the router). Never a 200 stream that looks complete."""
    url, _, _ = stand
    answer = chat(url, KEY, "routed", content="DIE", stream=True)
    if answer.status == 200:
        assert not answer.done
        assert answer.chunks[-1]["error"]["code"] == "stream_interrupted"
    else:
        assert answer.status == 503 and answer.body["error"]["code"] == "model_not_ready", answer.body


@pytest.mark.parametrize("model", ["empty", "gone"])
def test_no_server_behind_the_router_is_the_gateways_503_with_retry_after(stand, model):
    """`empty`: the router found no server (a model at zero replicas, in the seconds before the router's own
    readiness probe takes it out of its Service; after that the connection is refused, as without a router).
    `gone`: its only server stopped answering without its pod being deleted (a lost node)."""
    url, _, _ = stand
    start = time.monotonic()
    answer = chat(url, KEY, model)
    assert answer.status == 503, (answer.status, answer.body)
    assert answer.body["error"]["code"] == "model_not_ready"
    assert answer.headers["retry-after"] == "30"
    assert time.monotonic() - start < 10


def test_a_server_error_is_tried_twice_and_a_bad_request_once(stand):
    url, stand_ins, _ = stand
    mark = len(stand_ins.received)
    assert chat(url, KEY, "routed", content="FAIL500").status == 500
    assert len(reached(stand_ins, mark)) == replica_router.ATTEMPTS
    mark = len(stand_ins.received)
    assert chat(url, KEY, "routed", content="FAIL400").status == 400
    assert len(reached(stand_ins, mark)) == 1


ROUTER_ADMIN = [("POST", "/add_worker?url=http://127.0.0.1:9"), ("POST", "/remove_worker?url={worker}"),
                ("GET", "/list_workers"), ("POST", "/flush_cache"), ("GET", "/get_loads"), ("GET", "/workers"),
                ("GET", "/get_model_info")]
"""The router's own management routes (vllm-router 0.1.17), unauthenticated on its API port: whoever reaches them
can add a server of their choosing (and be sent every prompt) or remove real ones. Only the gateway's pods may reach
the port (NetworkPolicy), and the gateway passes clients only the OpenAI routes."""


@pytest.mark.parametrize(("method", "path"), ROUTER_ADMIN)
def test_a_client_cannot_reach_the_routers_management_routes_through_the_gateway(stand, method, path):
    from tests import gateway_probes

    url, _, routers = stand
    before = gateway_probes.send(routers["routed"].url, "GET", "/list_workers").text
    worker = json.loads(before)["urls"][0]  # a real server of the routed model, for the removal attempt
    reply = gateway_probes.send(url, method, path.format(worker=worker), KEY, {} if method == "POST" else None,
                                timeout=10)
    assert reply.status in (401, 403, 404), (reply.status, reply.text[:200])
    assert gateway_probes.send(routers["routed"].url, "GET", "/list_workers").text == before
