"""The gateway's answer while a model has no ready server: 503 with `retry-after`, not LiteLLM's 500.

Runs inside the LiteLLM container (`litellm_settings.callbacks: [gateway_hooks.unavailable]`), mounted from the
gateway's ConfigMap beside config.yaml; like gateway_auth.py it imports only LiteLLM and the standard library.

A model scaled to zero, or one whose servers are all starting, has a Service with no ready endpoints: the
connection is refused and LiteLLM reports a connection error (after the tier's fallbacks, if any, also failed).
Meanwhile the request still counts in `litellm_proxy_total_requests_metric_total`, which wakes the model (KEDA).
"""

from __future__ import annotations

import os

import litellm
from fastapi import HTTPException
from litellm.integrations.custom_logger import CustomLogger

RETRY_AFTER_SECONDS = os.environ.get("LLM_PLATFORM_RETRY_AFTER_SECONDS", "30")
"""How long a client should wait before retrying; a server takes minutes to start (`llmctl plan` lists each)."""


def no_server_ready(error: Exception) -> bool:
    """Connection refused or reset by the model's Service, as opposed to an answer the server gave."""
    if isinstance(error, (litellm.APIConnectionError, litellm.ServiceUnavailableError)):
        return True
    return isinstance(error, litellm.InternalServerError) and "Connection error" in str(error)


class ModelUnavailable(CustomLogger):
    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict,
                                           traceback_str=None):
        if not no_server_ready(original_exception):
            return None
        model = request_data.get("model", "the model")
        return HTTPException(
            status_code=503, headers={"retry-after": RETRY_AFTER_SECONDS},
            detail=f"no server for '{model}' is ready yet (it may be starting from zero); retry after "
                   f"{RETRY_AFTER_SECONDS} seconds")


unavailable = ModelUnavailable()
