"""An OpenAI-style client for the tests that call a real gateway or model server: plain HTTP, every request bounded
in time, streaming read chunk by chunk, and a small load generator for the end-to-end run's performance section."""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

REQUEST_TIMEOUT = 120


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: dict
    seconds: float
    chunks: list[dict] = field(default_factory=list)
    done: bool = False
    """A stream ended with `data: [DONE]`."""

    @property
    def usage(self) -> dict:
        return self.body.get("usage") or {}

    @property
    def error(self) -> str:
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return (error.get("message") if isinstance(error, dict) else str(error or self.body))[:300]


def chat(url: str, key: str | None, model: str, content: str = "What is 2+2?", max_tokens: int = 16,
         stream: bool = False, system: str | None = None, on_chunk=None, **extra) -> Answer:
    """One chat completion. `on_chunk` is called with each streamed chunk as it arrives."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": stream, **extra}
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(), headers=headers)
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as answer:
            found = {k.lower(): v for k, v in answer.headers.items()}
            if not stream:
                return Answer(answer.status, found, json.loads(answer.read()), time.monotonic() - start)
            chunks, done = [], False
            for raw in answer:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    done = True
                elif line.startswith("data: "):
                    chunks.append(json.loads(line[6:]))
                    if on_chunk:
                        on_chunk(chunks[-1])
            usage = next((c["usage"] for c in reversed(chunks) if c.get("usage")), None)
            return Answer(answer.status, found, {"usage": usage}, time.monotonic() - start, chunks, done)
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            parsed = json.loads(text or b"{}")
        except json.JSONDecodeError:
            parsed = {"error": text.decode(errors="replace")}
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, parsed,
                      time.monotonic() - start)


def finish_reason(answer: Answer) -> str | None:
    if answer.chunks:
        return next((c["choices"][0].get("finish_reason") for c in reversed(answer.chunks)
                     if c.get("choices") and c["choices"][0].get("finish_reason")), None)
    return answer.body["choices"][0]["finish_reason"] if answer.body.get("choices") else None


def exposition(url: str) -> str:
    """One server's /metrics text (the gateway's redirect to /metrics/ is followed)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        return answer.read().decode()


def metric(url: str, name: str) -> float:
    """The sum of a metric's samples on one server's /metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition(url).splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@dataclass
class Load:
    path: str
    concurrency: int
    requests: int
    seconds: float
    latencies: list[float]
    failures: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1]

    def row(self) -> dict:
        return {"path": self.path, "concurrency": self.concurrency, "requests": self.requests, "rps": self.rps,
                "p50_ms": 1000 * self.percentile(50), "p99_ms": 1000 * self.percentile(99)}


def load(path: str, url: str, key: str | None, model: str, concurrency: int, requests: int,
         max_tokens: int) -> Load:
    def one(_):
        return chat(url, key, model, max_tokens=max_tokens)

    start = time.monotonic()
    with ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(one, range(requests)))
    seconds = time.monotonic() - start
    return Load(path, concurrency, requests, seconds, [a.seconds for a in answers if a.status == 200],
                sum(a.status != 200 for a in answers))
