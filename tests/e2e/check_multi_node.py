"""`make e2e`, first: a model across two nodes. The leader and worker arguments the LeaderWorkerSet renders run as
two vLLM CPU processes on 127.0.0.1 (pipeline parallel 2, one decoder layer of the tiny checkpoint each), after a
single-process server of the same checkpoint has answered the same prompts for comparison. Each check's docstring
is its line in the report (tests/e2e/report.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest

from tests.e2e import conftest as e2e
from tests.e2e import report, stack
from tests.openai_client import chat, exposition, metric
from tests.servers import free_port

PROMPTS = ("What is 2+2?", "Name three colours.", "Write a haiku about pipelines.")
TOKENS = 12
LOST_WORKER_WAIT = 15
"""Seconds a request to a group that lost its worker is given before it counts as hanging."""


def greedy(url: str, model: str) -> list[str]:
    answers = [chat(url, None, model, prompt, max_tokens=TOKENS, temperature=0) for prompt in PROMPTS]
    assert all(a.status == 200 for a in answers), [a.status for a in answers]
    return [a.body["choices"][0]["message"]["content"] for a in answers]


@pytest.fixture(scope="module")
def group():
    """The reference server first (then stopped: two cores), then the group, each member on a core of its own."""
    cfg = stack.multi_node_config()
    m = cfg.models[stack.SPLIT]
    if not (e2e.TINY_MODEL / "config.json").exists() or not e2e.VLLM_PYTHON.exists():
        pytest.fail(f"missing {e2e.TINY_MODEL} or {e2e.VLLM_PYTHON}: `make e2e` builds them")
    started = []
    try:
        port = free_port()
        one_node = m.model_copy(update={"pipeline_parallel_size": 1})
        reference = e2e.start_vllm_with(e2e.WORK / "vllm-split-one-node",
                                        stack.server_args(stack.SPLIT, one_node, str(e2e.TINY_MODEL), port), port, 0)
        started.append(reference)
        report.STARTUP["split (one node)"] = round(reference.wait_ready("/health", e2e.VLLM_STARTUP_SECONDS), 1)
        expected = greedy(reference.url, stack.SPLIT)
        reference.stop()

        leader_container, worker_container = stack.group_containers(cfg, stack.SPLIT)
        leader_port, worker_port, rendezvous = free_port(), free_port(), free_port()
        leader = e2e.start_vllm_with(e2e.WORK / "vllm-split-leader", stack.group_member_args(
            leader_container, str(e2e.TINY_MODEL), 0, leader_port, rendezvous), leader_port, 0)
        started.append(leader)
        worker = e2e.start_vllm_with(e2e.WORK / "vllm-split-worker", stack.group_member_args(
            worker_container, str(e2e.TINY_MODEL), 1, worker_port, rendezvous), worker_port, 1)
        started.append(worker)
        report.STARTUP["split (two nodes)"] = round(leader.wait_ready("/health", e2e.VLLM_STARTUP_SECONDS), 1)
        yield {"leader": leader, "worker": worker, "worker_port": worker_port, "expected": expected,
               "worker_args": worker_container["args"], "leader_args": leader_container["args"]}
    finally:
        for server in started:
            server.stop()


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_model_across_two_nodes_answers_through_its_leader_as_one_node_would(group, record_property):
    """Multi-node: the rendered leader and worker (pipeline parallel 2, --nnodes 2) answer through the leader, greedily the same as one node"""
    answers = greedy(group["leader"].url, stack.SPLIT)
    leader_log = group["leader"].log.read_text(errors="replace")
    worker_log = group["worker"].log.read_text(errors="replace")
    assert "world_size=2" in leader_log, group["leader"].tail()
    assert re.search(r"PP rank 0\b", leader_log) and re.search(r"PP rank 1\b", worker_log), group["worker"].tail()
    assert answers == group["expected"], f"pipeline {answers} vs one node {group['expected']}"
    record_property("measured", f"{len(PROMPTS)} prompts x {TOKENS} tokens at temperature 0: the same text from the "
                                f"two-process group as from one process ({answers[0]!r}, ...); leader PP rank 0, "
                                "worker PP rank 1, world size 2")


def test_only_the_leader_serves_the_api_and_the_metrics(group, record_property):
    """Multi-node: only the leader listens for HTTP; its metrics count the group's requests under the model's name"""
    assert "--headless" in group["worker_args"] and "--headless" not in group["leader_args"]
    assert not listening(group["worker_port"]), "the headless worker opened its rendered --port"
    assert group["worker"].alive(), group["worker"].tail()
    samples = [line for line in exposition(group["leader"].url).splitlines()
               if line.startswith("vllm:request_success_total{")]
    assert samples and all(f'model_name="{stack.SPLIT}"' in line for line in samples), samples
    succeeded = metric(group["leader"].url, "vllm:request_success_total")
    assert succeeded >= len(PROMPTS), succeeded
    record_property("measured", f"worker's port {group['worker_port']} closed; leader's "
                                f"vllm:request_success_total{{model_name=\"{stack.SPLIT}\"}} = {succeeded:g}")


def test_a_lost_worker_is_invisible_to_the_leader_so_the_group_must_be_recreated_whole(group, record_property):
    """Multi-node: a killed worker leaves the leader healthy but hanging, which is why LWS recreates the whole group"""
    leader, worker = group["leader"], group["worker"]
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=30)
    time.sleep(3)
    try:
        with urllib.request.urlopen(leader.url + "/health", timeout=5) as answer:
            health = answer.status
    except OSError as e:
        health = repr(e)
    body = json.dumps({"model": stack.SPLIT, "messages": [{"role": "user", "content": PROMPTS[0]}],
                       "max_tokens": TOKENS}).encode()
    request = urllib.request.Request(f"{leader.url}/v1/chat/completions", data=body,
                                     headers={"content-type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=LOST_WORKER_WAIT) as answer:
            chat_status = answer.status
    except OSError as e:  # a timeout included
        chat_status = type(e).__name__
    waited = time.monotonic() - started
    # If vLLM ever notices a lost stage itself, this fails: then the leader's probes could restart the group too.
    assert health == 200 and leader.alive(), (health, leader.tail())
    assert chat_status != 200 and waited >= LOST_WORKER_WAIT - 1, (chat_status, waited)
    record_property("measured", f"3 s after the worker's SIGKILL the leader's /health is {health}; a request got "
                                f"{chat_status} after {waited:.0f} s (restartPolicy RecreateGroupOnPodRestart "
                                "restarts the group when the worker's pod restarts)")
