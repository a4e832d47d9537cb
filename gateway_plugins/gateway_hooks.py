"""The gateway's answers when a model server cannot give one, and what responses may not show.

Runs inside the LiteLLM container (`litellm_settings.callbacks: [gateway_hooks.unavailable]`), mounted from the
gateway's ConfigMap beside config.yaml; like gateway_auth.py it imports only LiteLLM and the standard library.

- No server ready: a model scaled to zero, or one whose servers are all starting, has a Service with no ready
  endpoints: the connection is refused. The client gets 503 with `retry-after` (after the tier's fallbacks, if any,
  also failed), not LiteLLM's 500. Meanwhile the request still counts in `litellm_proxy_total_requests_metric`,
  which wakes the model (KEDA). A server that answers 503 (it is shutting down) is the same case. Only a refused or
  reset connection counts: LiteLLM also reports its own validation failures as connection errors, and those stay
  400s. Behind a replica router the same cases arrive as the router's answers: 503 when it knows no server, and a
  plain-text 500 when the servers it tried refused or dropped the connection (ROUTER_UNREACHABLE).
- Time: a request has the gateway's request timeout in all, retries and fallbacks included. Each attempt on a
  server gets the whole seconds left of it, less ANSWER_SECONDS (LiteLLM would give every attempt the whole timeout
  again), and a request out of time gets 504 naming the bound, not LiteLLM's 408. A stream's bound is on each wait for its next bytes, so a
  generation that keeps streaming runs to its end.
- A stream whose server dies after the first bytes cannot change its status any more (it is 200): it ends with one
  OpenAI-shaped error event, `data: {"error": {"message", "type": "server_error", "param", "code":
  "stream_interrupted"}}`, and no `data: [DONE]`, so an OpenAI client raises an APIError instead of returning a
  truncated answer as complete.
- Responses never carry the backend's in-cluster URL (`x-litellm-model-api-base`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time

import litellm
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger
from litellm.proxy._types import ProxyException

RETRY_AFTER_SECONDS = os.environ.get("LLM_PLATFORM_RETRY_AFTER_SECONDS", "30")
"""How long a client should wait before retrying; a server takes minutes to start (`llmctl plan` lists each)."""
REQUEST_TIMEOUT = "LLM_PLATFORM_REQUEST_TIMEOUT_SECONDS"
"""Environment variable: a request's whole time at the gateway; unset, attempts keep LiteLLM's own timeouts."""
CONNECTION_FAILURES = ("ConnectError", "ConnectTimeout", "ConnectionRefusedError", "ConnectionResetError",
                       "RemoteProtocolError", "ClientConnectorError", "ServerDisconnectedError")
"""Exception classes (httpx, aiohttp, the standard library) that mean the server could not be reached."""
ROUTER_UNREACHABLE = "Request failed: error sending request"
"""How the replica router (vllm-router 0.1.17) begins its plain-text 500 when no server it tried could be reached:
a refused or dropped connection, which it cannot pass on as one."""
HIDDEN_HEADERS = {"x-litellm-model-api-base": ""}
"""Response headers overwritten with an empty value: LiteLLM sets them, and they name in-cluster addresses."""
ANSWER_SECONDS = 1.0
"""Kept back from every attempt for what follows its timeout: LiteLLM's router sleeps its retry back-off once more
after a last failed retry, and the proxy turns the timeout into the answer (together 0.3-0.6 s measured with the
rendered back-off), so the answer itself arrives within the request timeout."""
CHAIN_DEPTH = 12
REFUSED_BY_LITELLM = re.compile(r"^Rejected Request: (\w+) ")
"""LiteLLM's own refusal of a body parameter a client may not set (api_base, user_config, model_list, ...), raised
before the platform's key check runs; LiteLLM answers it 401 as if the key were wrong."""


class Answer(ProxyException, HTTPException):
    """An error the client receives as OpenAI writes it. LiteLLM takes a failure hook's answer only if it is an
    HTTPException, and sends a ProxyException as it is, so this is both."""

    def __init__(self, status: int, message: str, type_: str, code: str | None, headers: dict[str, str] | None = None,
                 param: str | None = None):
        ProxyException.__init__(self, message=message, type=type_, param=param, code=status, headers=headers)
        HTTPException.__init__(self, status_code=status, detail=message, headers=self.headers)
        self.error_code = code

    def to_dict(self) -> dict:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.error_code}


def causes(error: BaseException):
    """The error and what caused it, as far as Python recorded (`__cause__`, `__context__`, LiteLLM's
    `original_exception`), without looping."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < CHAIN_DEPTH:
        seen.add(id(current))
        yield current
        nxt = current.__cause__ or current.__context__ or getattr(current, "original_exception", None)
        current = nxt if isinstance(nxt, BaseException) else None


def no_server_ready(error: BaseException) -> bool:
    """The server's address refused or dropped the connection, as opposed to an answer it gave or a failure inside
    the proxy. The OpenAI client LiteLLM uses says only "Connection error." once it has wrapped the cause."""
    for cause in causes(error):
        if type(cause).__name__ in CONNECTION_FAILURES:
            return True
        if type(cause).__name__ == "APIConnectionError" and str(cause).strip().endswith("Connection error."):
            return True
        if getattr(cause, "status_code", None) == 500 and _answer_text(cause).startswith(ROUTER_UNREACHABLE):
            return True
    return False


def _answer_text(error: BaseException) -> str:
    """The body of the HTTP answer an error carries (the OpenAI client keeps it), or ''."""
    try:
        return str(getattr(getattr(error, "response", None), "text", "") or "")
    except Exception:  # a streamed body that was never read cannot be had
        return ""


class ModelUnavailable(CustomLogger):
    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict,
                                           traceback_str=None):
        model = request_data.get("model", "the model")
        refused = REFUSED_BY_LITELLM.match(str(original_exception)) if isinstance(original_exception, ValueError) \
            else None
        if refused:
            return Answer(400, f"parameter '{refused[1]}' is set by the gateway, not by clients",
                          "invalid_request_error", None, param=refused[1])
        if isinstance(original_exception, litellm.Timeout):
            bound = os.environ.get(REQUEST_TIMEOUT)
            within = f" within the gateway's request timeout of {bound} seconds" if bound else " in time"
            return Answer(504, f"the server for '{model}' did not answer{within}", "timeout_error", "timeout")
        if no_server_ready(original_exception) or isinstance(original_exception, litellm.ServiceUnavailableError):
            return Answer(503, f"no server for '{model}' is ready yet (it may be starting from zero); retry after "
                               f"{RETRY_AFTER_SECONDS} seconds", "server_error", "model_not_ready",
                          headers={"retry-after": RETRY_AFTER_SECONDS})
        return None

    async def async_pre_call_deployment_hook(self, kwargs, call_type):
        """Before each attempt on a server: give it only what is left of the request's time."""
        arrival = (kwargs.get("proxy_server_request") or {}).get("arrival_time")
        if not isinstance(arrival, int | float) or not os.environ.get(REQUEST_TIMEOUT):
            return None
        budget = float(os.environ[REQUEST_TIMEOUT])
        # Whole seconds, rounded down: LiteLLM keeps one HTTP client per timeout value, so a fresh value on every
        # request would open a new connection pool each time (measured: a third of a replica's throughput).
        left = math.floor(arrival + budget - ANSWER_SECONDS - time.time())
        if left < 1:
            raise litellm.Timeout(message=f"no time left of the gateway's {budget:g} s request timeout",
                                  model=str(kwargs.get("model")), llm_provider="openai")
        kwargs["timeout"] = float(left)
        return kwargs

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response, request_data):
        """Pass every chunk through; if the server fails mid-stream, end with one OpenAI-shaped error event."""
        try:
            async for chunk in response:
                yield chunk
        except Exception as error:  # noqa: BLE001 - any failure after the first bytes ends the stream the same way
            if isinstance(error, litellm.Timeout):
                message = "the model server stopped sending before the answer was complete (timed out)"
            else:
                message = "the model server stopped before the answer was complete"
            # LiteLLM ends an OpenAI stream with [DONE] unless this is set: a client must not read the
            # truncated answer as a complete one.
            request_data["_litellm_skip_openai_stream_done"] = True
            event = {"error": {"message": message, "type": "server_error", "param": None,
                               "code": "stream_interrupted"}}
            yield f"data: {json.dumps(event)}\n\n"

    async def async_post_call_response_headers_hook(self, data, user_api_key_dict, response, request_headers=None):
        return dict(HIDDEN_HEADERS)


unavailable = ModelUnavailable()

