"""The real LiteLLM proxy as the tests run it: the container the platform renders (its arguments, environment and
mounted files) started on 127.0.0.1 from the `litellm` in this virtualenv. tests/test_gateway_proxy.py runs one
against a stand-in backend; the end-to-end run (tests/e2e/) runs two against real vLLM servers and a Redis."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

import config
from components.edge import gateway
from tests.servers import Server, free_port, fresh_folder, start

# With no Redis the rendered config names none, so the container's REDIS_* variables are set but never read.
NO_REDIS = {"host": "127.0.0.1", "port": "0", "password": "unused"}


def container(cfg: config.StackConfig) -> dict:
    [rendered] = gateway.pod_spec("local", cfg.gateway)["spec"]["containers"]
    return rendered


def gateway_command(cfg: config.StackConfig, config_path: str, port: int) -> list[str]:
    """The gateway container's arguments as rendered, with the local config path and a loopback port."""
    args = list(container(cfg)["args"])
    args[args.index("--config") + 1] = config_path
    args[args.index("--port") + 1] = str(port)
    return [*args, "--host", "127.0.0.1"]


def gateway_env(cfg: config.StackConfig, secrets: dict[tuple[str, str], str], paths: dict[str, str]) -> dict[str, str]:
    """The gateway container's environment as rendered: literal values (with mounted paths mapped to local
    files), and each Secret reference resolved from `secrets[(secret name, key)]`. A reference the run cannot
    resolve is an error: the pod would not start either. The peers' DNS name (a headless Service) exists only in a
    cluster: here it is empty, so a proxy counts the configured replicas."""
    env = {}
    for entry in container(cfg)["env"]:
        if "value" in entry:
            env[entry["name"]] = "" if entry["name"] == gateway.PEERS else paths.get(entry["value"], entry["value"])
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = secrets[(ref["name"], ref["key"])]
    return env


def start_proxy(name: str, folder: Path, cfg: config.StackConfig, backends: dict[str, str], master: str,
                keys: dict[str, str], redis: dict[str, str] | None = None) -> Server:
    """One proxy in a fresh `folder`: the rendered config with `backends` (model key -> base URL), the custom_auth
    and hook modules, the key policy and hashes. `redis` ({host, port, password}) shares limits through it (TLS
    off); None keeps them in the proxy's memory."""
    fresh_folder(folder)
    settings = gateway.RedisSettings(ssl=False) if redis else None
    rendered = gateway.litellm_config(cfg.models, backends, cfg.gateway, redis=settings)
    (folder / "config.yaml").write_text(yaml.safe_dump(rendered))
    for module, text in gateway.proxy_modules().items():
        (folder / module).write_text(text)
    (folder / "key-policy.json").write_text(json.dumps(gateway.key_policy(cfg.gateway, cfg.models)))
    (folder / "hashes.json").write_text(gateway.key_hashes(master, keys))
    secrets = {(gateway.KEYS_SECRET, "master-key"): master,
               **{(gateway.REDIS_SECRET, part): value for part, value in (redis or NO_REDIS).items()}}
    paths = {f"{gateway.CONFIG_DIR}/key-policy.json": str(folder / "key-policy.json"),
             f"{gateway.KEYS_DIR}/hashes.json": str(folder / "hashes.json")}
    port = free_port()
    litellm = Path(sys.executable).parent / "litellm"
    return start(name, [str(litellm), *gateway_command(cfg, str(folder / "config.yaml"), port)], folder, port,
                 gateway_env(cfg, secrets, paths))
