"""The real LiteLLM proxy in front of stand-in model servers, for the gateway's proxy and security tests.

Each model has a server of its own on 127.0.0.1 that records every request reaching it, so a test can assert both
what the client got and what the backend saw. A server answers the OpenAI chat and completions routes (404
otherwise) with fixed usage (10 prompt, 5 completion tokens), and behaves as told by markers in the prompt:
`FAIL400`/`FAIL404`/`FAIL429`/`FAIL500` answer that status, `DIE` streams three chunks and drops the connection.
Server kinds: `live`, `draining` (503 on every other request, as a server that got SIGTERM), `hung` (never answers
within the test's bounds), `slow-draining` (503 after SLOW_SECONDS, every time), `paced` (answers after
PACED_SECONDS, for the capacity bench); a model without a server gets a free port nobody listens on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import config
from tests.litellm_proxy import start_proxy
from tests.local_http import StandInServer, serve
from tests.servers import Server, free_port

HUNG_SECONDS = 30
"""A hung server holds a request this long at most, then answers: no test waits on it that long."""
SLOW_SECONDS = 6
"""More than half the request timeout: a retry given the whole timeout again would end past it."""
PACED_SECONDS = 0.05
"""A server's own time for a short answer, which `make bench-gateway` subtracts from what it measures."""
MARKERS = (400, 404, 429, 500)
DIE_AFTER_SECONDS = 0.2
"""How long a `DIE` stream waits after its last chunk before dropping the connection."""


@dataclass(frozen=True)
class Received:
    server: str
    method: str
    path: str
    body: dict


@dataclass
class StandIns:
    received: list[Received] = field(default_factory=list)
    servers: list[StandInServer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def serve(self, name: str, kind: str) -> str:
        handler = type(f"StandIn_{name}", (_StandIn,), {"name": name, "kind": kind, "log": self})
        server = serve(handler, free_port())
        self.servers.append(server)
        return server.url

    def since(self, mark: int) -> list[Received]:
        return self.received[mark:]

    def shutdown(self) -> None:
        self.stopping.set()
        for server in self.servers:
            server.stop()


class _StandIn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the body until the client's
        # delayed ACK (40 ms), which would be measured as latency.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    name: str
    kind: str
    log: StandIns
    attempts = 0

    def log_message(self, *args):
        pass

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/health":  # a replica router's health check: not a request, not recorded
            return self._json(200, {})
        self.log.received.append(Received(self.name, "GET", self.path, {}))
        self._json(404, {"error": {"message": "not found"}})

    def do_POST(self):  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            body = {"unparsed": raw[:200].decode(errors="replace")}
        self.log.received.append(Received(self.name, "POST", self.path, body))
        text = json.dumps(body.get("messages") or body.get("prompt") or "")
        if not self.path.endswith(("/chat/completions", "/completions")):
            return self._json(404, {"error": {"message": f"{self.path} is not served here"}})
        if self.kind == "hung":
            self.log.stopping.wait(HUNG_SECONDS)
        if self.kind == "paced":
            time.sleep(PACED_SECONDS)
        if self.kind == "slow-draining":
            self.log.stopping.wait(SLOW_SECONDS)
            return self._json(503, {"error": {"message": "server is shutting down"}})
        if self.kind == "draining":
            type(self).attempts += 1
            if type(self).attempts % 2 == 1:
                return self._json(503, {"error": {"message": "server is shutting down"}})
        for status in MARKERS:
            if f"FAIL{status}" in text:
                return self._json(status, {"error": {"message": f"stand-in answers {status}", "code": status}})
        if body.get("stream"):
            return self._stream(body, dies="DIE" in text)
        if self.path.endswith("/chat/completions"):
            choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
            kind = "chat.completion"
        else:
            choice, kind = {"index": 0, "finish_reason": "stop", "text": "ok"}, "text_completion"
        self._json(200, {"id": "c1", "object": kind, "created": int(time.time()), "model": body.get("model"),
                         "choices": [choice], "usage": {"prompt_tokens": 10, "completion_tokens": 5,
                                                        "total_tokens": 15}})

    def _stream(self, body: dict, dies: bool) -> None:
        """Chunked server-sent events, as vLLM streams; `dies` drops the connection mid-body (no final chunk)."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(payload: str) -> None:
            data = payload.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for i in range(3):
            delta = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": body.get("model"),
                     "choices": [{"index": 0, "delta": {"content": f"t{i} "}, "finish_reason": None}]}
            chunk(f"data: {json.dumps(delta)}\n\n")
        if dies:
            # The chunks reach the client before the connection drops: a FIN that arrives in the same read as the
            # last chunk can make the client's HTTP parser fail before it hands that chunk on (seen: 2 of 3
            # delivered, once in a CI run), which would test the client's parser rather than the gateway.
            time.sleep(DIE_AFTER_SECONDS)
            self.close_connection = True
            self.connection.shutdown(2)
            return
        end = {"id": "s", "object": "chat.completion.chunk", "created": 1, "model": body.get("model"),
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        chunk(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")


REQUEST_TIMEOUT = 10
"""The schema's lowest request timeout: a hung server costs a test this long."""
SERVERS = {"small": "live", "big": "live", "draining": "draining", "stuck": "hung", "slow": "slow-draining"}
"""Model key -> server kind; `mid` (balanced) and `asleep` have none."""


def stack_config(fallbacks_across_grants: bool = True) -> config.StackConfig:
    model = {"model": "llama-3.1-8b", "gpuPool": "g"}
    return config.parse("gateway-test", {
        "cluster": {"region": "us-west-2"},
        "gpuPools": {"g": {"instanceFamilies": ["g6e"], "gpuLimit": 8}},
        "models": {
            "small": {**model, "tier": "fast", "costPer1kTokens": {"input": 0.1, "output": 0.2}},
            # balanced has no ready server: its requests fall back to fast.
            "mid": {**model, "tier": "balanced"},
            "big": {**model, "tier": "quality"},
            "asleep": {**model, "minReplicas": 0},
            "draining": model,
            "stuck": model,
            "slow": model,
        },
        "gateway": {"ingress": {"enabled": False}, "requestTimeoutSeconds": REQUEST_TIMEOUT,
                    "fallbacksAcrossGrants": fallbacks_across_grants, "keys": {
                        "team": {"models": ["fast", "balanced", "auto", "asleep", "draining"],
                                 "requestsPerMinute": 100, "tokensPerMinute": 100000},
                        "limited": {"models": ["fast"], "requestsPerMinute": 2, "tokensPerMinute": 100000},
                        "capped": {"models": ["fast"], "requestsPerMinute": 2, "tokensPerMinute": 100000},
                        "narrow": {"models": ["fast"], "requestsPerMinute": 1000, "tokensPerMinute": 1000000},
                        "other": {"models": ["fast"], "requestsPerMinute": 1000, "tokensPerMinute": 1000000},
                        "balanced-only": {"models": ["balanced"], "requestsPerMinute": 1000,
                                          "tokensPerMinute": 1000000},
                        "tiny": {"models": ["fast"], "requestsPerMinute": 1000, "tokensPerMinute": 100},
                        "ops": {"models": ["*"], "requestsPerMinute": 1000, "tokensPerMinute": 1000000},
                    }},
    })


KEYS = {name: f"sk-test-{name}-0123456789" for name in stack_config().gateway.keys}
MASTER = "sk-test-master-0123456789"
STARTUP_SECONDS = 90


@dataclass
class Gateway:
    proxy: Server
    stand_ins: StandIns
    backends: dict[str, str]

    @property
    def url(self) -> str:
        return self.proxy.url


def start_gateways(work: Path, configs: dict[str, config.StackConfig]) -> dict[str, Gateway]:
    """One proxy per config (each with stand-ins of its own), started side by side. Stop with `stop_gateways`."""
    started = {}
    for name, cfg in configs.items():
        stand_ins = StandIns()
        backends = {key: stand_ins.serve(key, SERVERS[key]) if key in SERVERS
                    else f"http://127.0.0.1:{free_port()}" for key in cfg.models}
        started[name] = Gateway(start_proxy(name, work / name, cfg, backends, MASTER, KEYS), stand_ins, backends)
    with ThreadPoolExecutor(len(started)) as pool:
        list(pool.map(lambda g: g.proxy.wait_ready("/health/readiness", STARTUP_SECONDS), started.values()))
    return started


def stop_gateways(gateways: dict[str, Gateway]) -> None:
    for g in gateways.values():
        g.stand_ins.stopping.set()
        g.proxy.stop(timeout=20)
        g.stand_ins.shutdown()
