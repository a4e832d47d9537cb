"""Read a stack's configuration once, from Pulumi config or from Pulumi.<stack>.yaml on disk, and validate it in one
pass: unknown keys, each value, and the checks across keys, all reported together as one ConfigError."""

from __future__ import annotations

import copy
import difflib
import re
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from config import yaml_file
from config.checks import GATEWAY_KEYS, check, key_value_problems, missing_secrets, redis_auth_token_problems
from config.errors import EVERYTHING, HIDDEN, ConfigError, Problem, did_you_mean
from config.schema import PATTERN_WORDS, StackConfig

PROJECT = "llm-platform"
# Top-level config keys of the project namespace, in the order the README documents them.
KEYS = ("cluster", "gpuPools", "tags", "models", "modelRegistry", "monitoring", "gateway", "redis")
# Secret keys, set with `pulumi config set --secret`. Not declared in Pulumi.yaml: a declared key without a default
# is required in every stack, and a stack that serves only registry models needs no token.
SECRET_KEYS = ("huggingfaceToken", "grafanaAdminPassword", "pagerdutyRoutingKey", "slackWebhookUrl", "gatewayMasterKey",
               "redisAuthToken", GATEWAY_KEYS)
# Keyed maps whose entries the checks across keys skip as a whole when one of the entry's own values is invalid.
_ENTRY_MAPS = (("gpuPools",), ("models",), ("gateway", "keys"))
_SET_SECRET = "set it with `pulumi config set --secret"
_GATEWAY_KEYS_SHAPE = ("must be an object of key name -> secret value; set each with `pulumi config set --secret "
                       f"--path '{PROJECT}:{GATEWAY_KEYS}.<name>' <value>`")


def parse(stack: str, raw: dict[str, Any], aws_region: str | None = None, secrets_set: set[str] | None = None,
          problems: list[Problem] | None = None, key_value_names: set[str] | None = None) -> StackConfig:
    """Validate raw config values (keyed by KEYS) into a StackConfig, or raise ConfigError with every problem.
    `secrets_set` names the SECRET_KEYS the stack has set (and `gatewayKeys.<name>` paths); None skips the secret
    check (config-only tests). `problems` are the caller's own, reported with these; `key_value_names` are the
    names a stack file sets under gatewayKeys, each of which needs a gateway.keys entry."""
    problems = list(problems or [])
    cfg, value_problems, skipped = _validate(stack, {k: v for k, v in raw.items() if v is not None})
    problems += value_problems
    if cfg is not None:
        across = check(cfg)
        if secrets_set is not None:
            across += missing_secrets(cfg, secrets_set)
        if key_value_names is not None:
            across += key_value_problems(cfg, key_value_names)
        if aws_region and aws_region != cfg.cluster.region:
            across.append(Problem("aws:region", aws_region, f"must equal cluster.region ({cfg.cluster.region}) or "
                                                            "be unset"))
        problems += [p for p in across if not _touches(p, skipped)]
    elif value_problems:
        skipped = [EVERYTHING]
    if problems:
        raise ConfigError(stack, problems, skipped)
    return cfg


def load() -> StackConfig:
    """The running Pulumi program's stack configuration."""
    import pulumi
    from pulumi.runtime import get_config

    config = pulumi.Config(PROJECT)
    stack, problems, raw = pulumi.get_stack(), [], {}
    for key in KEYS:
        try:
            raw[key] = config.get_object(key)
        except (pulumi.ConfigTypeError, ValueError):
            problems.append(Problem(key, HIDDEN, "must be valid JSON or YAML (an object, a list or a scalar) "
                                                 "nested at most 64 levels"))
    secrets_set = {key for key in SECRET_KEYS if get_config(f"{PROJECT}:{key}") is not None}
    # The names of the client keys set under gatewayKeys (never their values, which stay secret Outputs).
    client_keys: object = {}
    try:
        client_keys = config.get_object(GATEWAY_KEYS) or {}
    except (pulumi.ConfigTypeError, ValueError):
        client_keys = None
    if isinstance(client_keys, dict) and all(isinstance(name, str) for name in client_keys):
        secrets_set |= {f"{GATEWAY_KEYS}.{name}" for name in client_keys}
    else:
        secrets_set.discard(GATEWAY_KEYS)
        problems.append(Problem(GATEWAY_KEYS, HIDDEN, _GATEWAY_KEYS_SHAPE))
    problems += redis_auth_token_problems(get_config(f"{PROJECT}:redisAuthToken"))
    return parse(stack, raw, pulumi.Config("aws").get("region"), secrets_set, problems)


def secret(key: str):
    """A secret config value as a secret Output, or None when the stack has not set it."""
    import pulumi

    assert key in SECRET_KEYS, key
    return pulumi.Config(PROJECT).get_secret(key)


def read_stack_file(project_dir: Path, stack: str) -> dict[str, Any]:
    """The `config:` map of Pulumi.<stack>.yaml, checked the way the Pulumi CLI checks it against Pulumi.yaml."""
    values, problems = _read_stack_file(project_dir, stack)
    if problems:
        raise ConfigError(stack, problems)
    return values


def load_stack_file(project_dir: Path, stack: str) -> StackConfig:
    """Offline: secrets are not required, since they are set per stack with `pulumi config set --secret` and a
    committed stack file usually lacks them (`load()` requires them when the program runs); but a secret written in
    plain text, or a gatewayKeys value with no gateway.keys entry, is reported."""
    values, problems = _read_stack_file(project_dir, stack)
    raw = {key: values.get(f"{PROJECT}:{key}") for key in KEYS}
    names = values.get(f"{PROJECT}:{GATEWAY_KEYS}")
    names = set(names) - {"secure"} if isinstance(names, dict) and all(isinstance(n, str) for n in names) else set()
    region = values.get("aws:region")
    if region is not None and not isinstance(region, str):
        problems.append(Problem("aws:region", region, "must be a region name like us-west-2"))
        region = None
    return parse(stack, raw, region, problems=problems, key_value_names=names)


def _read_stack_file(project_dir: Path, stack: str) -> tuple[dict[str, Any], list[Problem]]:
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", stack) or not path.is_file():
        stacks = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in project_dir.glob("Pulumi.*.yaml"))
        raise ConfigError(stack, [Problem("stack", stack, f"no Pulumi.<stack>.yaml for it; stacks here: "
                                                          f"{', '.join(stacks)}")])
    project = yaml_file.load(project_dir / "Pulumi.yaml", stack) or {}
    declared = project.get("config") or {}
    document = yaml_file.load(path, stack)
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise ConfigError(stack, [Problem(path.name, _kind(document), "must be a map with a `config:` key, as "
                                                                      "`pulumi config set` writes it")])
    values = document.get("config") or {}
    if not isinstance(values, dict):
        raise ConfigError(stack, [Problem(f"{path.name} config", _kind(values), "must be a map of "
                                                                                f"'{PROJECT}:<key>: <value>' lines")])
    problems = []
    for key in list(values):
        if not isinstance(key, str):
            problems.append(Problem(f"{path.name} config", key, f"keys must be text like '{PROJECT}:cluster'"))
            del values[key]
            continue
        namespace, _, name = key.partition(":")
        if namespace == PROJECT and name in SECRET_KEYS:
            problems += _plain_text_secret(name, values[key])
        elif namespace == PROJECT and name not in declared:
            hint = did_you_mean(name, [*declared, *SECRET_KEYS])
            problems.append(Problem(key, HIDDEN, f"is not declared in Pulumi.yaml{hint}; declared keys: "
                                                 f"{', '.join(declared)}"))
        elif namespace != PROJECT and difflib.get_close_matches(namespace, [PROJECT], n=1, cutoff=0.8):
            problems.append(Problem(key, HIDDEN, f"is in namespace '{namespace}', not this project's; did you mean "
                                                 f"{PROJECT}:{name}?"))
    for name, declaration in declared.items():
        if f"{PROJECT}:{name}" not in values and "default" not in (declaration or {}):
            problems.append(Problem(f"{PROJECT}:{name}", None, f"is required by Pulumi.yaml; set it in {path.name}"))
    return values, problems


def _plain_text_secret(name: str, value: Any) -> list[Problem]:
    """A secret must be stored as `secure: <ciphertext>` (what `pulumi config set --secret` writes); the value of
    one in plain text is never repeated."""
    def encrypted(v: Any) -> bool:
        return isinstance(v, dict) and set(v) == {"secure"} and isinstance(v["secure"], str)

    if name != GATEWAY_KEYS:
        return [] if encrypted(value) else [Problem(name, HIDDEN, f"is in plain text in the stack file; "
                                                                  f"{_SET_SECRET} {PROJECT}:{name} <value>`")]
    if encrypted(value):
        return []
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return [Problem(GATEWAY_KEYS, HIDDEN, _GATEWAY_KEYS_SHAPE)]
    return [Problem(f"{GATEWAY_KEYS}.{key}", HIDDEN, f"is in plain text in the stack file; {_SET_SECRET} --path "
                                                     f"'{PROJECT}:{GATEWAY_KEYS}.{key}' <value>`")
            for key, v in value.items() if not encrypted(v)]


def _validate(stack: str, present: dict[str, Any]) -> tuple[StackConfig | None, list[Problem], list[str]]:
    """The config, or every value problem with a config in which each invalid value is reset to its default (or,
    inside a keyed-map entry, the whole entry left out) so the checks across keys can still run; the keys reset or
    left out are returned so those checks skip them. None when no such config exists (a required key is bad)."""
    try:
        return StackConfig.model_validate({"stack": stack, **present}), [], []
    except ValidationError as e:
        errors = e.errors()
    problems = [_problem(err) for err in errors]
    repaired, skipped = copy.deepcopy(present), []
    for _ in range(4):  # each round removes what the last one found invalid; a valid remainder comes quickly
        for err in errors:
            path = _leave_out(repaired, err["loc"])
            if path is None:
                return None, problems, skipped
            if path not in skipped:
                skipped.append(path)
        try:
            return StackConfig.model_validate({"stack": stack, **repaired}), problems, skipped
        except ValidationError as e:
            errors = e.errors()
    return None, problems, skipped


def _leave_out(data: dict[str, Any], loc: tuple) -> str | None:
    """Removes what an error's location points at: the keyed-map entry that holds it, or else the key itself (a
    list or map as a whole when the error is in one of its elements), so its default applies. Returns the dotted
    path removed, or None when it is required at the top (cluster, its region, gpuPools): nothing can stand in."""
    parts: tuple = ()
    for prefix in _ENTRY_MAPS:
        if tuple(loc[:len(prefix)]) == prefix and len(loc) > len(prefix) and loc[len(prefix)] != "[key]":
            parts = loc[:len(prefix) + 1]
            break
    else:
        for part in loc:
            if not isinstance(part, str) or part == "[key]":
                break
            parts += (part,)
    if parts in ((), ("cluster",), ("cluster", "region"), ("gpuPools",)):
        return None
    node: Any = data
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(parts[-1], None)
    return ".".join(str(p) for p in parts)


def _touches(problem: Problem, skipped: list[str]) -> bool:
    """Whether a check across keys involved a key that was reset or left out (its result would be about the
    default, or about an entry that is not there)."""
    for path in skipped:
        if (problem.key == path or problem.key.startswith(path + ".") or path.startswith(problem.key + ".")
                or path in problem.allowed):
            return True
        if isinstance(problem.value, str) and path.endswith(f".{problem.value}"):
            return True  # a reference to a left-out entry, e.g. a model's gpuPool
        if path.startswith("models.") and problem.key.startswith("gateway.keys."):
            return True  # a key's grants name models and the tiers they serve
    return False


def _problem(err: dict[str, Any]) -> Problem:
    loc = err["loc"]
    if loc and loc[-1] == "[key]":
        where = _dotted(loc[:-2])
        return Problem(where, loc[-2], "keys must be text; quote a key YAML reads as a number or a boolean")
    path = _dotted(loc)
    kind, value = err["type"], err.get("input")
    if kind == "missing":
        return Problem(path, None, "is required")
    if kind == "extra_forbidden":
        return Problem(path, HIDDEN, f"is not a known key{did_you_mean(str(loc[-1]), _keys_at(loc[:-1]))} (keys are "
                                     f"camelCase); known keys here: {', '.join(_keys_at(loc[:-1]))}")
    return Problem(path, _echoed(value), _message(kind, err, value))


class _Described(str):
    """A value described rather than repeated: a map or a nested list may hold anything, secrets under undeclared
    keys included, so its contents are not echoed."""

    def __repr__(self) -> str:
        return str(self)


def _echoed(value: Any) -> Any:
    if isinstance(value, dict):
        keys = [str(k) for k in list(value)[:8]]
        return _Described(f"a map with keys {', '.join(keys)}{', ...' if len(value) > 8 else ''}" if keys else
                          "an empty map")
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return _Described(f"a list of {len(value)} entries")
    return value


def _message(kind: str, err: dict[str, Any], value: Any) -> str:
    ctx = err.get("ctx") or {}
    if kind == "string_pattern_mismatch":
        return f"must be {PATTERN_WORDS.get(ctx.get('pattern'), 'of the documented form')}"
    if kind == "string_type":
        if isinstance(value, bool | int | float):
            return f"must be text; YAML reads {value!r} unquoted as a {type(value).__name__}: write it in quotes"
        return "must be text"
    if kind == "int_type":
        hint = "; true/false are not numbers" if isinstance(value, bool) else (
            "; remove the quotes" if isinstance(value, str) and value.strip().lstrip("-").isdigit() else "")
        return f"must be a whole number{hint}"
    if kind in ("float_type", "float_parsing"):
        return "must be a number" + ("; remove the quotes" if isinstance(value, str) else "")
    if kind == "finite_number":
        return "must be a finite number (.inf, .nan and numbers beyond 1.8e308 are not)"
    if kind == "bool_type":
        return "must be true or false (yes, no, on and off are text to Pulumi, which reads YAML 1.2)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a map of keys, not {_kind(value)}"
    if kind == "list_type":
        return f"must be a list, not {_kind(value)}"
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", ctx.get("expected", "")) or [ctx.get("expected", "")]
        return f"allowed: {ctx.get('expected')}{did_you_mean(value, choices) if isinstance(value, str) else ''}"
    if kind in ("too_long", "too_short"):
        limit = ctx.get("max_length") if kind == "too_long" else ctx.get("min_length")
        return f"must have at {'most' if kind == 'too_long' else 'least'} {limit} entr{'y' if limit == 1 else 'ies'}"
    if kind.startswith(("greater_than", "less_than")):
        word = {"greater_than": "more than", "greater_than_equal": "at least", "less_than": "less than",
                "less_than_equal": "at most"}[kind]
        limit = next(iter(ctx.values()))
        return f"must be {word} {limit:,}" if isinstance(limit, int) else f"must be {word} {limit}"
    message = err["msg"].removeprefix("Value error, ")
    return message[0].lower() + message[1:]


def _dotted(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _kind(value: Any) -> str:
    return {dict: "a map", list: "a list", str: "text", bool: "a boolean", type(None): "nothing"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _keys_at(loc: tuple) -> list[str]:
    """The keys the schema declares at a location, e.g. ('models', 'llama-8b', 'autoscaling')."""
    model: Any = StackConfig
    for part in loc:
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
            if field is None:
                return []
            model = field.annotation
        else:  # the value type of a keyed map or list
            model = typing.get_args(model)[-1] if typing.get_args(model) else None
        while typing.get_origin(model) in (typing.Union, types.UnionType):
            model = next(a for a in typing.get_args(model) if a is not type(None))
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or name for name, f in model.model_fields.items() if name != "stack"]
    return []
