"""What an attacker holding a narrow client key sends the gateway, and a plain HTTP client to send it with: used
against stand-in servers (tests/test_gateway_security.py) and against the real vLLM servers (tests/e2e/)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

HELLO = [{"role": "user", "content": "hi"}]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> dict:
        try:
            return json.loads(self.text)
        except json.JSONDecodeError:
            return {}

    @property
    def error(self) -> dict:
        return self.json.get("error") or {}


def send(url: str, method: str, path: str, key: str | None = None, body=None, headers: dict | None = None,
         timeout: float = 30) -> Reply:
    """One request, bounded in time; any HTTP status is a Reply, never an exception."""
    data = (body if isinstance(body, bytes) else json.dumps(body).encode()) if body is not None else None
    request = urllib.request.Request(url + path, data=data, method=method, headers={
        "content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Reply(answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read().decode())
    except urllib.error.HTTPError as error:
        return Reply(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode())


def chat(model="fast", **extra) -> dict:
    return {"model": model, "messages": HELLO, "max_tokens": 5, **extra}


def model_forms(tier: str, model: str) -> list[tuple[str, str, dict | None, int]]:
    """Every way a request can name `tier` (or its `model`) other than a granted body model, for a key granted
    `fast` only: (method, path, body, the status the gateway must answer). LiteLLM reads the model from the query
    string and from path segments as well as the body, and prefers them; the gateway answers none of these."""
    completion = {"model": "fast", "prompt": "hi", "max_tokens": 5}
    return [
        ("POST", f"/v1/chat/completions?model={tier}", chat(), 400),
        ("POST", f"/v1/chat/completions?model=fast&model={tier}", chat(), 400),
        ("POST", f"/v1/chat/completions?model={model}", chat(), 400),
        ("POST", f"/v1/completions?model={tier}", completion, 400),
        ("POST", f"/v1/embeddings?model={tier}", {"model": "fast", "input": "hi"}, 404),
        ("POST", "/v1/embeddings", {"model": tier, "input": "hi"}, 404),
        ("POST", f"/openai/deployments/{tier}/chat/completions", chat(), 404),
        ("POST", f"/openai/deployments/{tier}/completions", completion, 404),
        ("POST", f"/openai/deployments/{tier}/embeddings", {"input": "hi"}, 404),
        ("POST", f"/engines/{tier}/chat/completions", chat(), 404),
        ("POST", f"/engines/{tier}/completions", completion, 404),
        ("POST", f"/v1beta/models/{tier}:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}, 404),
        ("POST", "/chat/completions", chat(tier), 404),
        ("POST", "/v1/responses", {"model": tier, "input": "hi"}, 404),
        ("POST", "/v1/messages", {"model": tier, "max_tokens": 5, "messages": HELLO}, 404),
        ("POST", "/v1/chat/completions", chat(tier), 403),
        ("POST", "/v1/chat/completions", chat(model), 403),
        ("POST", "/v1/chat/completions", chat("auto"), 403),
        ("POST", "/v1/chat/completions", chat(f"fast,{tier}"), 404),
        ("POST", "/v1/chat/completions", chat([tier]), 400),
        ("POST", "/v1/chat/completions", chat(fallbacks=[tier]), 400),
        ("POST", "/v1/chat/completions", chat(model_id=f"{tier}/{model}"), 400),
        ("POST", "/v1/chat/completions", chat(specific_deployment=True, model=f"{tier}/{model}"), 400),
        ("POST", "/v1/chat/completions", chat(user_config={"model_list": []}), 400),
        ("GET", f"/v1/models/{tier}", None, 404),
    ]
