"""The gateway's API-key check: LiteLLM's `general_settings.custom_auth`, mounted into the proxy from a ConfigMap.

This file runs inside the LiteLLM container, not in the Pulumi program: it may import only the standard library,
LiteLLM and what LiteLLM depends on. It never sees a key in plain text at rest: the Secret it reads holds the
SHA-256 of each key, and a request's key is hashed and looked up.

- no key, or a key whose hash is unknown: 401
- a key calling a model, tier or router outside its list: 403 (LiteLLM's custom_auth does not check a key's
  model list itself)
- limits: the key's requests and tokens per minute go back to LiteLLM, whose rate limiter counts them in the
  coordination Redis across all replicas and answers 429 with `retry-after`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth

POLICY_FILE = "LLM_PLATFORM_KEY_POLICY"
"""Environment variable: path of the JSON map of key name -> {models, requestsPerMinute, tokensPerMinute}."""
HASHES_FILE = "LLM_PLATFORM_KEY_HASHES"
"""Environment variable: path of the JSON map of key name -> SHA-256 hex digest of the key."""
ADMIN = "admin"
"""The name the master key's hash has in the hashes file; no client key may use it (client names are checked)."""
OPEN_ROUTES = ("/v1/models", "/models", "/v1/model/info", "/model/info")
"""Routes a valid key may call without naming a model."""


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyTable:
    """Who may call what: loaded once from the two mounted files."""

    def __init__(self, policy: dict, hashes: dict[str, str]):
        unknown = sorted(set(hashes) - set(policy) - {ADMIN})
        if unknown:
            raise ValueError(f"key hashes without a policy: {unknown}")
        self.by_hash = {digest: name for name, digest in hashes.items()}
        self.policy = policy

    @classmethod
    def from_files(cls, policy_path: str, hashes_path: str) -> KeyTable:
        return cls(json.loads(Path(policy_path).read_text()), json.loads(Path(hashes_path).read_text()))

    def authorize(self, api_key: str | None, route: str, model: str | None) -> UserAPIKeyAuth:
        """The identity LiteLLM applies limits to, or an HTTPException (401 or 403)."""
        key = (api_key or "").removeprefix("Bearer ").strip()
        name = self.by_hash.get(key_hash(key)) if key else None
        if name is None:
            raise HTTPException(status_code=401, detail="missing or unknown API key")
        digest = key_hash(key)
        if name == ADMIN:
            return UserAPIKeyAuth(api_key=digest, key_alias=ADMIN, user_role=LitellmUserRoles.PROXY_ADMIN)
        policy = self.policy[name]
        allowed = policy["models"]
        if model is None and route.rstrip("/") not in OPEN_ROUTES and not route.startswith("/health"):
            # Every other client route (chat, completions, embeddings, ...) names its model in the body.
            raise HTTPException(status_code=403, detail=f"key '{name}' may call only the model routes")
        if model is not None and "*" not in allowed and model not in allowed:
            raise HTTPException(status_code=403, detail=f"key '{name}' may not call model '{model}'; "
                                                        f"allowed: {', '.join(allowed)}")
        return UserAPIKeyAuth(api_key=digest, key_alias=name, models=[] if "*" in allowed else list(allowed),
                              rpm_limit=policy["requestsPerMinute"], tpm_limit=policy["tokensPerMinute"],
                              user_role=LitellmUserRoles.INTERNAL_USER)


_table: tuple[tuple[float, float], KeyTable] | None = None


def _loaded() -> KeyTable:
    """The table, reloaded when either file changes: Kubernetes updates a mounted Secret or ConfigMap in place
    (within a minute), so a new or rotated key takes effect without a restart."""
    global _table
    paths = os.environ[POLICY_FILE], os.environ[HASHES_FILE]
    stamp = tuple(os.stat(path).st_mtime for path in paths)
    if _table is None or _table[0] != stamp:
        _table = (stamp, KeyTable.from_files(*paths))
    return _table[1]


async def _requested_model(request: Request) -> str | None:
    if request.method != "POST":
        return None
    from litellm.proxy.common_utils.http_parsing_utils import read_request_body

    body = await read_request_body(request=request)
    model = body.get("model") if isinstance(body, dict) else None
    return model if isinstance(model, str) else None


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """LiteLLM's custom_auth entry point (`general_settings.custom_auth: gateway_auth.user_api_key_auth`)."""
    return _loaded().authorize(api_key, request.url.path, await _requested_model(request))
