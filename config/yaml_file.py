"""Read a Pulumi YAML file the way the Pulumi CLI reads it, or fail with a ConfigError that points at the line.

The Pulumi CLI parses YAML 1.2 (Go's yaml.v3): `yes`, `on` and `no` are text, `010` is ten, `1_000`, `1:30` and
`2026-01-01` are text. PyYAML's SafeLoader is YAML 1.1 and would read them as true, 8, 1000 and 90, so a stack would mean one thing to
`llmctl plan` and another to `pulumi up`. This loader resolves plain scalars by YAML 1.2's core schema instead, refuses
duplicate keys, and bounds what a file may cost to read: its size, its nesting and how far its aliases expand.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from config.errors import ConfigError, Problem

MAX_FILE_BYTES = 1 << 20
"""1 MiB: the committed stacks are under 10 KiB; a file this large is a mistake, and reading it must stay cheap."""
MAX_VALUES = 100_000
"""Scalars and collections after aliases are expanded: a few anchors that nest each other (a 'billion laughs'
file) would otherwise make validation walk billions of values."""
MAX_DEPTH = 64
"""Nesting of the deepest value; the deepest real key (models.<key>.autoscaling.scaleUp.pods) is 5 levels."""

# YAML 1.2 core schema (yaml.org/spec/1.2.2/#1032-tag-resolution), the rules yaml.v3 follows for plain scalars.
_CORE = [
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     "-+.0123456789"),
    ("tag:yaml.org,2002:null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
]


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and no duplicate keys."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in {t for t, _, _ in _CORE} | {"tag:yaml.org,2002:timestamp"}]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _CORE:
    _Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text[2:], 8 if text[1] == "o" else 16)
    return int(text, 10)


def _float(loader: _Loader, node: yaml.ScalarNode) -> float:
    text = loader.construct_scalar(node).lower()
    if text.lstrip("+-") == ".inf":
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text == ".nan" else float(text)


def _bool(loader: _Loader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node).lower() == "true"


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        self.key, self.line, self.first_line = key, line, first_line


def _mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: keys written beside it override its keys
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be text, not a list or a map", key_node.start_mark) from None
        if key in seen:
            raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key].start_mark.line + 1)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:float", _float)
_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load(path: Path, stack: str) -> Any:
    """The file's YAML value (None for an empty file), or ConfigError naming the file, line and column."""
    def fail(where: str, value: object, allowed: str) -> ConfigError:
        return ConfigError(stack, [Problem(where, value, allowed)])

    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise fail(path.name, f"{size} bytes", f"a stack file may be at most {MAX_FILE_BYTES} bytes (1 MiB)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise fail(path.name, f"byte {e.start}", "must be UTF-8 text") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except _DuplicateKey as e:
        raise fail(f"{path.name} line {e.line}", e.key,
                   f"duplicate key (first defined on line {e.first_line}); each key may appear once") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path.name} line {mark.line + 1} column {mark.column + 1}" if mark else path.name
        problem = (e.problem or e.context or "invalid YAML").replace("\t", "\\t")
        hint = "; indent with spaces, YAML does not allow tabs" if "\\t" in problem else ""
        raise fail(where, problem, f"must be valid YAML{hint}") from None
    except (yaml.YAMLError, ValueError) as e:  # a scalar its tag cannot hold, e.g. an explicit !!int on text
        raise fail(path.name, str(e).splitlines()[0], "must be valid YAML") from None
    except RecursionError:
        raise fail(path.name, "nesting", f"values may nest at most {MAX_DEPTH} levels") from None
    problem = _too_big(data)
    if problem:
        raise fail(path.name, problem, f"values may nest at most {MAX_DEPTH} levels and expand (aliases included) "
                                       f"to at most {MAX_VALUES} values")
    return data


def _too_big(data: Any) -> str | None:
    """Walks the value as a reader of it would, aliases expanded, and stops as soon as a bound is crossed."""
    count, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            return f"more than {MAX_VALUES} values"
        if depth > MAX_DEPTH:
            return f"nesting deeper than {MAX_DEPTH}"
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            stack.extend((k, depth + 1) for k in value)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return None
