"""Code that runs inside the LiteLLM gateway container, not in the Pulumi program.

Each module here is mounted from the gateway's ConfigMap into the proxy's config directory, beside config.yaml, and
LiteLLM loads it by its bare module name (`general_settings.custom_auth: gateway_auth.user_api_key_auth`,
`litellm_settings.callbacks: [gateway_hooks.unavailable]`). So a module here imports only the standard library,
LiteLLM and what LiteLLM itself depends on (FastAPI), never another module of this project, and never a sibling by
this package's name. The program reads these files as text (components/edge/gateway.py) and never imports them;
tests/test_layout.py holds both rules.

- `gateway_auth`: the API-key check (hashed keys, each key's models and limits).
- `gateway_hooks`: 503 with `retry-after` while a model has no ready server.
"""
