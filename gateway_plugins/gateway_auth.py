"""The gateway's front door: LiteLLM's `general_settings.custom_auth`, mounted into the proxy from a ConfigMap.

This file runs inside the LiteLLM container, not in the Pulumi program: it may import only the standard library,
LiteLLM and what LiteLLM depends on. It never sees a key in plain text at rest: the Secret it reads holds the
SHA-256 of each key, and a request's key is hashed and looked up.

What a client key may do is an allowlist, checked before LiteLLM does anything with the request:

- routes: only CLIENT_ROUTES, matched on the route FastAPI dispatched to (not the URL, which a malformed Host
  header can rewrite); anything else is 404, whatever the body holds. The master key may call every route, but only
  from inside the cluster: a request that came through the load balancer carries its X-Forwarded-* headers.
- models: the model is read from every place LiteLLM reads it (the body, and the `model` query parameter that
  LiteLLM prefers); several different names are a 400, a name nobody serves a 404 `model_not_found`, a name outside
  the key's list a 403.
- parameters: LiteLLM's own request parameters (retries, timeouts, fallbacks, deployment choice, callbacks, mock
  answers, ...) and `x-litellm-*` headers change how the gateway treats a request, so a client may not send them.
- limits: the key's requests and tokens per minute go back to LiteLLM, whose rate limiter counts them in the
  coordination Redis across all replicas and answers 429 with `retry-after`. A `max_tokens` above the key's whole
  tokens-per-minute limit can never succeed: 400. While Redis is unreachable (LiteLLM's Redis circuit breaker is not
  closed) each replica counts in its own memory, so the limits handed to LiteLLM are divided by the number of ready
  gateway replicas: the key keeps roughly its limit across the gateway, not that limit on every replica.

Errors are OpenAI-shaped: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import socket
import time
from pathlib import Path

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyException, UserAPIKeyAuth
from litellm.types.utils import all_litellm_params

POLICY_FILE = "LLM_PLATFORM_KEY_POLICY"
"""Environment variable: path of the JSON policy (see `KeyTable`)."""
HASHES_FILE = "LLM_PLATFORM_KEY_HASHES"
"""Environment variable: path of the JSON map of key name -> SHA-256 hex digest of the key."""
PEERS = "LLM_PLATFORM_GATEWAY_PEERS"
"""Environment variable: a DNS name with one address per ready gateway replica (a headless Service), or unset."""
ADMIN = "admin"
"""The name the master key's hash has in the hashes file; no client key may use it (client names are checked)."""

CLIENT_ROUTES = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"),
}
"""(method, FastAPI route template) a client key may call. The load balancer forwards the same paths."""
MODEL_IN_BODY = {"/v1/chat/completions", "/v1/completions"}
"""Routes whose body names the model to run."""
FORWARDED_HEADERS = ("x-forwarded-for", "x-forwarded-proto")
"""Set by the load balancer on every request it forwards (the ALB always sets X-Forwarded-Proto)."""
KEY_HEADER = "x-litellm-api-key"
"""The one x-litellm-* header a client may send: LiteLLM reads the key from it."""
ROUTER_CONTROLS = frozenset({
    "timeout", "model_id", "specific_deployment", "deployment_id", "context_window_fallbacks",
    "content_policy_fallbacks", "disable_fallbacks", "fallback_model_group", "include_fallback_errors",
    "model_group_retry_policy", "passthrough", "passthrough_on_no_deployment", "priority", "routing_groups",
    "routing_strategy_args", "standard_callback_dynamic_params", "litellm_params", "user_config",
    "mock_testing_fallbacks", "mock_testing_context_fallbacks", "mock_testing_content_policy_fallbacks",
    "mock_testing_rate_limit_error",
})
"""Request keys LiteLLM's router reads that are not in its published parameter list (litellm/router.py, 1.108.7)."""
CLIENT_REFUSED = (frozenset(all_litellm_params) | ROUTER_CONTROLS) - {"metadata"}
"""Body keys a client may not send. `metadata` is also OpenAI's (string pairs), checked separately."""
METADATA_LIMITS = (16, 64, 512)
"""OpenAI's metadata: at most 16 pairs, keys up to 64 characters, values up to 512."""
PEER_CACHE_SECONDS = 5


class GatewayError(ProxyException):
    """An error as OpenAI's API writes it: the HTTP status, and `code` as OpenAI names it (not the status)."""

    def __init__(self, status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message=message, type=type_, param=param, code=status, headers=headers)
        self.error_code = code

    def to_dict(self) -> dict:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.error_code}


def shown(name: str, limit: int = 100) -> str:
    """A client's string as an error message repeats it: never more than `limit` characters of it."""
    return name if len(name) <= limit else name[:limit] + "..."


def bad_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, "invalid_request_error", param=param)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyTable:
    """Who may call what: loaded once from the two mounted files. The policy is
    {"models": [every name the gateway serves], "fallbacksAcrossGrants": bool, "replicas": int,
     "keys": {name: {"models": [...], "requestsPerMinute": int, "tokensPerMinute": int}}}."""

    def __init__(self, policy: dict, hashes: dict[str, str]):
        keys = policy["keys"]
        unknown = sorted(set(hashes) - set(keys) - {ADMIN})
        if unknown:
            raise ValueError(f"key hashes without a policy: {unknown}")
        self.by_hash = {digest: name for name, digest in hashes.items()}
        self.keys = keys
        self.served = frozenset(policy["models"])
        self.fallbacks_across_grants = bool(policy["fallbacksAcrossGrants"])
        self.replicas = max(1, int(policy["replicas"]))

    @classmethod
    def from_files(cls, policy_path: str, hashes_path: str) -> KeyTable:
        return cls(json.loads(Path(policy_path).read_text()), json.loads(Path(hashes_path).read_text()))

    def authorize(self, api_key: str | None, method: str, route: str, *, path: str | None = None,
                  body: dict | None = None, query_models: list[str] = (), path_params: dict | None = None,
                  headers: dict | None = None, share: int = 1) -> UserAPIKeyAuth:
        """The identity LiteLLM applies limits to, or a GatewayError. `route` is the template FastAPI matched,
        `path` the request's own; `share` divides the key's limits (the number of replicas counting in their own
        memory while Redis is unreachable)."""
        headers = headers or {}
        key = (api_key or "").removeprefix("Bearer ").strip()
        name = self.by_hash.get(key_hash(key)) if key else None
        if name is None:
            raise GatewayError(401, "missing or unknown API key", "invalid_request_error", "invalid_api_key")
        if name == ADMIN:
            if any(h in headers for h in FORWARDED_HEADERS):
                raise GatewayError(403, "the master key is accepted only from inside the cluster",
                                   "permission_error", "master_key_outside_cluster")
            return UserAPIKeyAuth(api_key=ADMIN, key_alias=ADMIN, user_role=LitellmUserRoles.PROXY_ADMIN)
        if (method, route) not in CLIENT_ROUTES:
            raise GatewayError(404, f"Invalid URL ({method} {path or route})", "invalid_request_error", "not_found")
        policy = self.keys[name]
        allowed = policy["models"]
        self._refuse_controls(body, headers)
        if route in MODEL_IN_BODY:
            model = self._requested_model(body, query_models)
            self._check_model(name, model, allowed)
            self._check_shape(route, body)
            self._check_fits(name, body, policy)
        elif route == "/v1/models/{model_id}":
            model = str((path_params or {}).get("model_id", ""))
            if model not in self.served or ("*" not in allowed and model not in allowed):
                raise GatewayError(404, f"The model '{shown(model)}' does not exist or you do not have access to it.",
                                   "invalid_request_error", "model_not_found", "model")
        listing = route.startswith("/v1/models")
        grant = [] if "*" in allowed or (self.fallbacks_across_grants and not listing) else list(allowed)
        return UserAPIKeyAuth(api_key=name, key_alias=name, models=grant,
                              rpm_limit=math.ceil(policy["requestsPerMinute"] / share),
                              tpm_limit=math.ceil(policy["tokensPerMinute"] / share),
                              user_role=LitellmUserRoles.INTERNAL_USER)

    @staticmethod
    def _refuse_controls(body: dict | None, headers: dict) -> None:
        controls = sorted(h for h in headers if h.startswith("x-litellm-") and h != KEY_HEADER)
        if controls:
            raise bad_request(f"header '{controls[0]}' is set by the gateway, not by clients", controls[0])
        if not isinstance(body, dict):
            return
        refused = sorted(k for k in body if k in CLIENT_REFUSED or k.startswith("_"))
        if refused:
            raise bad_request(f"parameter '{refused[0]}' is set by the gateway, not by clients", refused[0])
        metadata = body.get("metadata")
        if metadata is not None:
            pairs, key_chars, value_chars = METADATA_LIMITS
            if not (isinstance(metadata, dict) and len(metadata) <= pairs and all(
                    isinstance(k, str) and isinstance(v, str) and len(k) <= key_chars and len(v) <= value_chars
                    and not k.startswith("user_api_key") for k, v in metadata.items())):
                raise bad_request(f"metadata must be at most {pairs} string pairs (keys up to {key_chars} "
                                  f"characters, values up to {value_chars})", "metadata")

    @staticmethod
    def _requested_model(body: dict | None, query_models: list[str]) -> str:
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            raise bad_request("'model' must be a model name (a string)", "model")
        # An empty `?model=` is ignored by LiteLLM too (it takes the first non-empty of query and body).
        others = sorted({m for m in query_models if m and m != model})
        if others:
            raise bad_request(f"the request names two models: '{shown(model)}' in the body and '{shown(others[0])}' "
                              "in the query string; name it once, in the body", "model")
        return model

    def _check_model(self, name: str, model: str, allowed: list[str]) -> None:
        if model not in self.served:
            raise GatewayError(404, f"The model '{shown(model)}' does not exist or you do not have access to it.",
                               "invalid_request_error", "model_not_found", "model")
        if "*" not in allowed and model not in allowed:
            raise GatewayError(403, f"key '{name}' may not call model '{shown(model)}'; allowed: {', '.join(allowed)}",
                               "permission_error", "model_not_allowed", "model")

    @staticmethod
    def _check_shape(route: str, body: dict) -> None:
        """What LiteLLM itself needs before it can forward the request; the server checks the rest. Without this,
        LiteLLM fails on a malformed body inside its own code and reports it as a connection error."""
        if route == "/v1/chat/completions":
            messages = body.get("messages")
            if not (isinstance(messages, list) and messages and all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)):
                raise bad_request("'messages' must be a non-empty list of message objects, each with a 'role'",
                                  "messages")
        else:
            prompt = body.get("prompt")
            if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(
                    isinstance(p, str | int) or (isinstance(p, list) and all(isinstance(i, int) for i in p))
                    for p in prompt))):
                raise bad_request("'prompt' must be a string, a list of strings, or token lists", "prompt")

    @staticmethod
    def _check_fits(name: str, body: dict, policy: dict) -> None:
        limit = policy["tokensPerMinute"]
        for param in ("max_tokens", "max_completion_tokens"):
            value = body.get(param)
            if isinstance(value, int) and not isinstance(value, bool) and value > limit:
                raise bad_request(f"{param} {value} is above key '{name}''s whole limit of {limit} tokens per "
                                  "minute: this request can never be served; ask for fewer", param)


_table: tuple[tuple[float, float], KeyTable] | None = None
_peers: tuple[float, int] | None = None


def _loaded() -> KeyTable:
    """The table, reloaded when either file changes: Kubernetes updates a mounted Secret or ConfigMap in place
    (within a minute), so a new or rotated key takes effect without a restart."""
    global _table
    paths = os.environ[POLICY_FILE], os.environ[HASHES_FILE]
    stamp = tuple(os.stat(path).st_mtime for path in paths)
    if _table is None or _table[0] != stamp:
        _table = (stamp, KeyTable.from_files(*paths))
    return _table[1]


def limits_degraded() -> bool:
    """Whether LiteLLM's limiter is counting in this replica's memory: a Redis circuit breaker is open or probing."""
    from litellm.caching.redis_cache import redis_breaker_state_counts

    return any(state != "closed" and count for state, count in redis_breaker_state_counts().items())


async def ready_replicas(configured: int) -> int:
    """Ready gateway replicas from the headless Service's DNS records (cached a few seconds); the configured count
    when the name is unset or does not resolve."""
    global _peers
    name = os.environ.get(PEERS)
    if not name:
        return configured
    now = time.monotonic()
    if _peers is None or now - _peers[0] > PEER_CACHE_SECONDS:
        try:
            found = await asyncio.wait_for(asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM),
                                           timeout=1)
            _peers = (now, len({address[4][0] for address in found}) or configured)
        except (TimeoutError, OSError):
            _peers = (now, configured)
    return _peers[1]


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """LiteLLM's custom_auth entry point (`general_settings.custom_auth: gateway_auth.user_api_key_auth`)."""
    from litellm.proxy.common_utils.http_parsing_utils import read_request_body

    table = _loaded()
    route = request.scope.get("route")
    template = getattr(route, "path", None) or request.scope.get("path", "")
    body = await read_request_body(request=request) if request.method == "POST" else None
    share = await ready_replicas(table.replicas) if limits_degraded() else 1
    return table.authorize(api_key, request.method, template, path=request.scope.get("path"), body=body,
                           query_models=request.query_params.getlist("model"),
                           path_params=dict(request.path_params), headers=dict(request.headers), share=share)
