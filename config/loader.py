"""Read a stack's configuration once, from Pulumi config or from Pulumi.<stack>.yaml on disk, and validate it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from config.checks import GATEWAY_KEYS, check, missing_secrets
from config.errors import ConfigError, Problem
from config.schema import StackConfig

PROJECT = "llm-platform"
# Top-level config keys of the project namespace, in the order the README documents them.
KEYS = ("cluster", "gpuPools", "tags", "models", "modelRegistry", "monitoring", "gateway", "redis")
# Secret keys, set with `pulumi config set --secret`. Not declared in Pulumi.yaml: a declared key without a default
# is required in every stack, and a stack that serves only registry models needs no token.
SECRET_KEYS = ("huggingfaceToken", "grafanaAdminPassword", "pagerdutyRoutingKey", "slackWebhookUrl", "gatewayMasterKey",
               "redisAuthToken", GATEWAY_KEYS)


def parse(stack: str, raw: dict[str, Any], aws_region: str | None = None,
          secrets_set: set[str] | None = None) -> StackConfig:
    """Validate raw config values (keyed by KEYS) into a StackConfig, or raise ConfigError with every problem.
    `secrets_set` names the SECRET_KEYS the stack has set; None skips the secret check (config-only tests)."""
    present = {k: v for k, v in raw.items() if v is not None}
    try:
        cfg = StackConfig.model_validate({"stack": stack, **present})
    except ValidationError as e:
        raise ConfigError(stack, [_problem(err) for err in e.errors()]) from None
    problems = check(cfg)
    if secrets_set is not None:
        problems.extend(missing_secrets(cfg, secrets_set))
    if aws_region and aws_region != cfg.cluster.region:
        problems.append(Problem("aws:region", aws_region, f"must equal cluster.region ({cfg.cluster.region}) or be unset"))
    if problems:
        raise ConfigError(stack, problems)
    return cfg


def load() -> StackConfig:
    """The running Pulumi program's stack configuration."""
    import pulumi

    config = pulumi.Config(PROJECT)
    raw = {key: config.get_object(key) for key in KEYS}
    secrets_set = {key for key in SECRET_KEYS if config.get_secret(key) is not None}
    # The names of the client keys set under gatewayKeys (never their values, which stay secret Outputs).
    try:
        client_keys = config.get_object(GATEWAY_KEYS) or {}
    except pulumi.ConfigTypeError:
        client_keys = None
    if not isinstance(client_keys, dict):
        raise ConfigError(pulumi.get_stack(), [Problem(GATEWAY_KEYS, "[secret]", "must be an object of key name -> "
                                                       "value; set each with `pulumi config set --secret --path "
                                                       f"'{PROJECT}:{GATEWAY_KEYS}.<name>' <value>`")])
    secrets_set |= {f"{GATEWAY_KEYS}.{name}" for name in client_keys}
    return parse(pulumi.get_stack(), raw, pulumi.Config("aws").get("region"), secrets_set)


def secret(key: str):
    """A secret config value as a secret Output, or None when the stack has not set it."""
    import pulumi

    assert key in SECRET_KEYS, key
    return pulumi.Config(PROJECT).get_secret(key)


def read_stack_file(project_dir: Path, stack: str) -> dict[str, Any]:
    """The `config:` map of Pulumi.<stack>.yaml, checked the way the Pulumi CLI checks it against Pulumi.yaml."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.exists():
        stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(stack, [Problem("stack", stack, f"no {path.name}; stacks here: {', '.join(stacks)}")])
    project = _load_yaml(project_dir / "Pulumi.yaml", stack)
    values = (_load_yaml(path, stack) or {}).get("config") or {}
    declared = project.get("config") or {}
    problems = []
    for key in values:
        namespace, _, name = key.partition(":")
        if namespace == PROJECT and name not in declared and name not in SECRET_KEYS:
            problems.append(Problem(key, values[key], f"is not declared in Pulumi.yaml; declared keys: {', '.join(declared)}"))
    for name, declaration in declared.items():
        if f"{PROJECT}:{name}" not in values and "default" not in (declaration or {}):
            problems.append(Problem(f"{PROJECT}:{name}", None, f"is required by Pulumi.yaml; set it in {path.name}"))
    if problems:
        raise ConfigError(stack, problems)
    return values


def load_stack_file(project_dir: Path, stack: str) -> StackConfig:
    """Offline: secrets are not checked, since they are set per stack with `pulumi config set --secret` and a
    committed stack file usually lacks them; `load()` checks them when the program runs."""
    values = read_stack_file(project_dir, stack)
    raw = {key: values.get(f"{PROJECT}:{key}") for key in KEYS}
    return parse(stack, raw, values.get("aws:region"))


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that rejects duplicate keys instead of silently keeping the last one."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key].start_mark.line + 1)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line


def _load_yaml(path: Path, stack: str) -> dict[str, Any]:
    try:
        return yaml.load(path.read_text(), Loader=_StrictLoader) or {}
    except _DuplicateKey as e:
        raise ConfigError(stack, [Problem(
            f"{path.name} line {e.line}", e.key, f"duplicate key (first defined on line {e.first_line}); each key may appear once"
        )]) from None
    except yaml.YAMLError as e:
        raise ConfigError(stack, [Problem(path.name, str(e).splitlines()[0], "must be valid YAML")]) from None


def _problem(err: dict[str, Any]) -> Problem:
    path = ""
    for part in err["loc"]:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return Problem(path, None, "is required")
    if err["type"] == "extra_forbidden":
        return Problem(path, err["input"], "is not a known key (check its spelling; keys are camelCase)")
    return Problem(path, err.get("input"), message[0].lower() + message[1:])
