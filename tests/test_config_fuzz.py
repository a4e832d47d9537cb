"""Property-based fuzzing of stack files: hypothesis mutates the dev and prod stacks (wrong types, deletions,
misspelt and non-text keys, huge and tiny numbers, unicode, duplicated lines, tabs, deep nesting, cut-off files,
planted secrets) and runs `llmctl plan` on each. For every example: plan exits 0, 1 (a mandatory policy fails, said
in words) or 2 (the config error); nothing escapes as a traceback; no planted secret reaches any output or written
file; each run ends in bounded time; and the process stays in bounded memory.

`make test` runs LLM_PLATFORM_FUZZ_EXAMPLES (default 150, derandomized: the same examples every run); `make fuzz`
runs 2000 new ones each time (LLM_PLATFORM_FUZZ_RANDOM), and CI runs it. A summary goes to build/fuzz/report.json."""

from __future__ import annotations

import copy
import functools
import json
import os
import resource
import time
from collections import Counter

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.loader import _keys_at
from tests.conftest import ROOT, stack_values
from tests.stack_files import plan, scratch_project

EXAMPLES = int(os.environ.get("LLM_PLATFORM_FUZZ_EXAMPLES", "150"))
PLANTED = "sk-fuzz-planted-6c1d0e9b"
MAX_SECONDS_PER_PLAN = 20
MAX_RSS_MIB = 3072
SECRETS = ("huggingfaceToken", "grafanaAdminPassword", "pagerdutyRoutingKey", "slackWebhookUrl", "gatewayMasterKey",
           "redisAuthToken")

HOSTILE = st.one_of(
    st.sampled_from([True, False, "yes", "on", "off", "", None, 0, -1, 1, 2**31, 2**63, 10**30, 1e308, -0.0,
                     float("inf"), float("-inf"), float("nan"), [], {}, "x" * 200_000, "ｌｌａｍａ", "\u202e\u0000",
                     "../../etc/passwd", "${HOME}", "1.33", "10.0.0.0/8", "0.0.0.0/0", "cache.t4g.small",
                     "p5.48xlarge", "*", "auto", "spot", [None], [[[[]]]], {"a": {"b": {"c": {}}}}]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(st.integers(), max_size=5),
)


def _plausible(value):
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, int):
        return st.integers(0, max(12, value * 2))
    if isinstance(value, float):
        return st.floats(0.01, 1.0)
    if isinstance(value, str):
        return st.sampled_from(_texts())
    if isinstance(value, list) and value:
        return st.lists(st.sampled_from(value), max_size=len(value) + 1)
    return st.just(value)


@functools.cache
def _texts() -> list[str]:
    """Every text value of the committed stacks: a tweak swaps one for another (a pool, a model, a family...)."""
    return sorted({v for stack in ("dev", "prod") for _, v in _paths(stack_values(stack)) if isinstance(v, str)})


def _paths(node, prefix=()):
    """Every key path in the config map, with the value there."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,), value
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield prefix + (i,), value
            yield from _paths(value, prefix + (i,))


def _parent(values, path):
    node = values
    for part in path[:-1]:
        node = node[part]
    return node


def _schema_loc(path) -> tuple:
    """A path under `llm-platform:<key>` as the schema's location, e.g. ('models', 'llama-8b', 'autoscaling')."""
    return (path[0].partition(":")[2], *path[1:])


@st.composite
def stack_texts(draw):
    stack = draw(st.sampled_from(["dev", "prod"]))
    values = copy.deepcopy(stack_values(stack))
    planted = False
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(values)]
        op = draw(st.sampled_from(["tweak", "tweak", "tweak", "replace", "replace", "delete", "rename", "nest", "plant",
                                   "non-text key"]))
        if op == "plant":
            planted = True
            where = draw(st.sampled_from(["misspelt secret", "plain secret", "unknown key", "client key"]))
            if where == "misspelt secret":
                name = draw(st.sampled_from(SECRETS))
                values[f"llm-platform:{name[:-1]}"] = PLANTED
            elif where == "plain secret":
                values[f"llm-platform:{draw(st.sampled_from(SECRETS))}"] = PLANTED
            elif where == "client key":
                values["llm-platform:gatewayKeys"] = draw(st.sampled_from([PLANTED, {"dev-team": PLANTED}, [PLANTED]]))
            else:  # an undeclared key inside an object the schema types (never a free map such as tags)
                typed = [p for p, v in _paths(values) if isinstance(v, dict) and isinstance(p[0], str)
                         and p[0].startswith("llm-platform:") and _keys_at(_schema_loc(p))]
                if typed:
                    where = draw(st.sampled_from(typed))
                    _parent(values, where)[where[-1]]["passwordd"] = PLANTED
                else:
                    values["llm-platform:fooBar"] = PLANTED
            continue
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(values, path)
        if op == "tweak":  # a plausible value of the same type: most plans still succeed, the program runs
            parent[path[-1]] = draw(_plausible(parent[path[-1]]))
        elif op == "replace":
            parent[path[-1]] = draw(HOSTILE)
        elif op == "delete":
            del parent[path[-1]]
        elif op == "nest":
            value = parent[path[-1]]
            for _ in range(draw(st.integers(1, 80))):
                value = [value]
            parent[path[-1]] = value
        elif isinstance(parent, dict):  # rename, or a non-text key
            new = draw(st.one_of(st.integers(-5, 5), st.booleans())) if op == "non-text key" else draw(st.sampled_from([
                str(path[-1])[:-1], str(path[-1]).upper(), f"{path[-1]}s", str(path[-1]).replace("-", "_"),
                f"{path[-1]}-{draw(st.text(max_size=3))}"]))
            parent[new] = parent.pop(path[-1])
    text = yaml.safe_dump({"config": values}, sort_keys=False, allow_unicode=True)
    lines = text.splitlines(keepends=True)
    edit = draw(st.sampled_from(["none", "none", "duplicate line", "tab", "cut"]))
    if edit != "none" and len(lines) > 1:
        i = draw(st.integers(1, len(lines) - 1))
        if edit == "duplicate line":
            lines.insert(i, lines[i])
        elif edit == "tab":
            lines[i] = "\t" + lines[i].lstrip(" ")
        else:
            lines = lines[:i]
    return stack, "".join(lines), planted


def test_no_stack_file_gets_a_traceback_a_leak_or_an_unbounded_run(tmp_path):
    project = scratch_project(tmp_path)
    outcomes: Counter = Counter()
    slowest = [0.0, ""]
    blocked: list[list[str]] = []  # what each plan a mandatory policy blocked said: a config check may be missing

    @settings(max_examples=EXAMPLES, deadline=None, derandomize="LLM_PLATFORM_FUZZ_RANDOM" not in os.environ,
              database=None,
              suppress_health_check=list(HealthCheck))
    @given(stack_texts())
    def one(example):
        stack, text, planted = example
        started = time.perf_counter()
        run = plan(project, text)
        seconds = time.perf_counter() - started
        outcomes[run.code] += 1
        if seconds > slowest[0]:
            slowest[:] = [seconds, text[:2000]]
        assert run.code in (0, 1, 2), (run.code, run.stderr[-3000:])
        assert "Traceback" not in run.stdout + run.stderr, run.stderr[-3000:]
        if run.code == 2:
            assert run.stderr.startswith("error: invalid configuration for stack 'test'"), run.stderr[-3000:]
        if run.code == 1:
            assert "a mandatory policy fails" in run.stderr, run.stderr[-3000:]
            lines = run.stdout.splitlines()
            blocked.append([" ".join(lines[i:i + 2]) for i, line in enumerate(lines) if line.strip().startswith("FAIL")])
        if planted:
            assert PLANTED not in run.stdout + run.stderr, run.stderr[-3000:]
            if run.code != 2:
                assert PLANTED not in run.written()
        assert seconds < MAX_SECONDS_PER_PLAN, (seconds, text[:2000])

    one()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    report = {"examples": EXAMPLES, "exit codes": {str(k): v for k, v in sorted(outcomes.items())},
              "slowest plan seconds": round(slowest[0], 2), "peak rss MiB (whole test process)": peak_mib,
              "blocked by a mandatory policy": blocked}
    (ROOT / "build" / "fuzz").mkdir(parents=True, exist_ok=True)
    (ROOT / "build" / "fuzz" / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(report)
    assert peak_mib < MAX_RSS_MIB, report
    assert outcomes[2] and outcomes[0], report  # the mutations reach both outcomes: the fuzzer is not idle
