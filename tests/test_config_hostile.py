"""Careless and hostile stack files: each class of input that once got a traceback, an echoed secret, a hang or a
silent coercion now gets one clear ConfigError, in bounded time. Every case goes through `llmctl plan` as a user
runs it (tests/stack_files.py), or through config.parse where only the checks are under test."""

from __future__ import annotations

import copy
import json
import re
import time

import pytest
import yaml

import config
from catalog.aws import CACHE_ENGINE_VERSIONS
from catalog.versions import CACHE_ENGINES
from components.edge.redis_cache import engine_version
from config import yaml_file
from config.checks import redis_auth_token_problems
from config.schema import TIERS, Redis
from llmctl import plan as plan_cmd
from tests.conftest import ROOT, stack_values
from tests.stack_files import plan, scratch_project

PLANTED = "sk-planted-7f3a9c2e5b1d4e8a"
DEV = (ROOT / "Pulumi.dev.yaml").read_text()
# What a regular expression in a message would look like; every message says what is allowed in words.
REGEX = re.compile(r"\^|\$'|\[a-z|\{0,|\\\.|\(\?")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return scratch_project(tmp_path_factory.mktemp("hostile"))


def dev_with(**changes) -> str:
    """dev's stack file with `section.a.b` keys replaced (None deletes), as YAML text."""
    values = copy.deepcopy(stack_values("dev"))
    for dotted, value in changes.items():
        section, *path = dotted.split("__")
        node = values.setdefault(f"llm-platform:{section}", {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return yaml.safe_dump({"config": values}, sort_keys=False)


def refused(project, text: str | bytes) -> str:
    """Runs `llmctl plan` on the text; it must exit 2 with a config error and no traceback. Returns stderr."""
    run = plan(project, text)
    assert run.code == 2, (run.code, run.stdout[-2000:], run.stderr[-2000:])
    assert run.stderr.startswith("error: invalid configuration for stack 'test'"), run.stderr[:2000]
    assert "Traceback" not in run.stderr
    assert not REGEX.search(run.stderr), run.stderr
    return run.stderr


# Unbounded inputs -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("replicas", "text"), [
    (99_999_999_999, "models.llama-8b.maxReplicas: got 99999999999; must be at most 2,147,483,647"),
    (100_000, "models.llama-8b.maxReplicas: got 100000; 100000 replicas x tensorParallelSize 1 need 100,000 GPUs, "
              "more than gpuPools.general.gpuLimit (4) lets one NodePool launch; use at most 4"),
])
def test_a_huge_max_replicas_is_refused_quickly_with_the_bound_it_crosses(project, replicas, text):
    started = time.perf_counter()
    stderr = refused(project, dev_with(models__llama_8b=None, **{"models__llama-8b__maxReplicas": replicas}))
    assert time.perf_counter() - started < 5
    assert text in stderr


def test_max_replicas_times_tensor_parallelism_must_fit_the_pool_gpu_limit():
    values = stack_values("prod")
    values["llm-platform:models"]["llama-70b"]["maxReplicas"] = 40  # TP 8: 320 GPUs
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", {key: values.get(f"llm-platform:{key}") for key in config.KEYS})
    [problem] = [p for p in raised.value.problems if p.key == "models.llama-70b.maxReplicas"]
    assert "40 replicas x tensorParallelSize 8 need 320 GPUs" in problem.allowed


@pytest.mark.parametrize(("key", "value", "text"), [
    ("gpuPools__general__gpuLimit", 10**6, "must be at most 10,000"),
    ("models__llama-8b__maxNumSeqs", 10**9, "must be at most 65,536"),
    ("models__llama-8b__tensorParallelSize", 1000, "must be at most 64"),
    ("gateway__keys__dev-team__requestsPerMinute", 10**12, "must be at most 1,000,000,000"),
    ("models__llama-8b__autoscaling", {"p99LatencySeconds": 1e300}, "must be at most 3600"),
])
def test_every_number_has_a_ceiling_from_what_it_controls(project, key, value, text):
    assert text in refused(project, dev_with(**{key: value}))


# Secrets ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "named", "text"), [
    (f"  llm-platform:grafanaAdminPasword: {PLANTED}\n", "llm-platform:grafanaAdminPasword",
     "did you mean grafanaAdminPassword?"),
    (f"  llm-platform:grafanaAdminPassword: {PLANTED}\n", "grafanaAdminPassword", "is in plain text"),
    (f"  llm-platform:gatewayKeys:\n    dev-team: {PLANTED}\n", "gatewayKeys.dev-team", "is in plain text"),
    (f"  llm-platform:gatewayKeys: {PLANTED}\n", "gatewayKeys", "must be an object of key name"),
    (f"  llm-platfrom:redisAuthToken: {PLANTED}\n", "llm-platfrom:redisAuthToken",
     "did you mean llm-platform:redisAuthToken?"),
])
def test_a_secret_is_never_echoed_even_misspelt(project, line, named, text):
    stderr = refused(project, DEV.replace("config:\n", "config:\n" + line, 1))
    assert PLANTED not in stderr
    assert f"{named}: got [value not shown]; " in stderr and text in stderr


def test_an_unknown_nested_key_is_not_echoed_and_gets_a_suggestion(project):
    stderr = refused(project, dev_with(**{"models__llama-8b__maxReplica": PLANTED}))
    assert PLANTED not in stderr
    assert "models.llama-8b.maxReplica: got [value not shown]; is not a known key (did you mean maxReplicas?)" in stderr


def test_a_redis_auth_token_elasticache_refuses_is_reported_without_its_value():
    [problem] = redis_auth_token_problems("has space/and@" + PLANTED)
    assert PLANTED not in str(problem) and "other than space, '/', '\"' and '@'" in str(problem)
    assert redis_auth_token_problems("0123456789abcdef") == [] and redis_auth_token_problems(None) == []
    assert redis_auth_token_problems("x" * 129) and redis_auth_token_problems("short")


def test_the_program_s_own_secret_checks_are_a_config_error_not_a_traceback(tmp_path):
    project = scratch_project(tmp_path)
    (project / "Pulumi.test.yaml").write_text(DEV)
    with pytest.raises(config.ConfigError) as raised:
        plan_cmd.run("test", project, secret_values={"redisAuthToken": f"with space {PLANTED}"})
    assert [p.key for p in raised.value.problems] == ["redisAuthToken"]
    assert PLANTED not in str(raised.value)


@pytest.mark.parametrize("gateway_keys", ["a-plain-string", "[1, 2]", '{"intern": "sk-x"}'])
def test_client_keys_the_program_reads_are_checked_the_same_way(tmp_path, gateway_keys):
    """gatewayKeys as the program sees it (set with `pulumi config set`, not in the stack file): not an object, or
    a key with no gateway.keys entry, is the config error, from inside the program as from the stack file."""
    project = scratch_project(tmp_path)
    (project / "Pulumi.test.yaml").write_text(DEV)
    with pytest.raises(config.ConfigError) as raised:
        plan_cmd.run("test", project, secret_values={"gatewayKeys": gateway_keys})
    keys = [p.key for p in raised.value.problems]
    assert ("gatewayKeys.intern" if "intern" in gateway_keys else "gatewayKeys") in keys, keys
    assert "gatewayKeys.dev-team" in keys  # dev-team's own value is then missing: said too
    assert "sk-x" not in str(raised.value) and "a-plain-string" not in str(raised.value)


@pytest.mark.parametrize("stack", ["../../etc/passwd", "", "a" * 300, "dev/../dev"])
def test_a_stack_name_is_a_name_not_a_path(stack):
    with pytest.raises(config.ConfigError, match="no Pulumi.<stack>.yaml for it; stacks here: dev, prod"):
        config.load_stack_file(ROOT, stack)


# No traceback from any stack file ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "named", "allowed"), [
    ("- config: {}\n", "Pulumi.test.yaml", "must be a map with a `config:` key"),
    ("config: [a, b]\n", "Pulumi.test.yaml config", "must be a map of"),
    (DEV.replace("  llm-platform:models:\n    llama-8b:", "  llm-platform:models:\n    1:"), "models",
     "keys must be text"),
    (DEV.replace("config:\n", "config:\n  7: x\n", 1), "Pulumi.test.yaml config", "keys must be text"),
    (DEV.replace("config:\n", "config:\n  llm-platform:gatewayKeys:\n    intern:\n      secure: AAAB\n", 1),
     "gatewayKeys.intern", "has no gateway.keys.intern entry"),
    (DEV.replace("    maxReplicas: 2\n", "\tmaxReplicas: 2\n"), "Pulumi.test.yaml line ", "indent with spaces"),
    (DEV.replace("  llm-platform:tags:\n", "  llm-platform:tags: [\n"), "Pulumi.test.yaml line ",
     "must be valid YAML"),
    (b"config:\n  llm-platform:tags: {a: \xff}\n", "Pulumi.test.yaml", "must be UTF-8 text"),
    ("", "llm-platform:cluster", "is required by Pulumi.yaml"),
])
def test_malformed_files_get_the_config_error(project, text, named, allowed):
    stderr = refused(project, text)
    assert f"  - {named}" in stderr and allowed in stderr, stderr


def test_a_tab_is_reported_with_its_line_and_column(project):
    stderr = refused(project, DEV.replace("      gpuLimit: 4\n", "\tgpuLimit: 4\n"))
    line = DEV.splitlines().index("      gpuLimit: 4") + 1
    assert f"Pulumi.test.yaml line {line} column 1: got" in stderr, stderr


def test_aliases_that_expand_to_billions_of_values_are_refused_in_bounded_time(project):
    laughs = "    x0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"    x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10))
    started = time.perf_counter()
    stderr = refused(project, DEV.replace("  llm-platform:tags:\n", "  llm-platform:tags:\n" + laughs))
    assert time.perf_counter() - started < 5
    assert "expand (aliases included) to at most 100000 values" in stderr


def test_nesting_and_size_are_bounded(project):
    assert "nest at most 64 levels" in refused(project, "config:\n  llm-platform:tags: " + "[" * 5000 + "]" * 5000)
    assert "at most 1048576 bytes" in refused(project, "# " + "x" * (1 << 20) + "\n" + DEV)


# One pass ------------------------------------------------------------------------------------------------------------

def test_unknown_keys_value_errors_and_cross_key_checks_are_reported_together(project):
    text = dev_with(**{"cluster__vpcCidr": "10.10.0.0/16", "cluster__serviceCidr": "10.10.0.0/20",  # across keys
                       "monitoring__storageGib": 1,  # a value
                       "gateway__keys__dev-team__models": ["llama-8b", "nope"]})  # across keys
    stderr = refused(project, text.replace("config:\n", "config:\n  llm-platform:clusterr: {}\n", 1))  # unknown
    for key in ("llm-platform:clusterr", "monitoring.storageGib", "cluster.serviceCidr", "gateway.keys.dev-team.models"):
        assert f"  - {key}: got" in stderr, (key, stderr)


def test_a_cross_key_check_skips_an_entry_whose_own_values_are_invalid_and_says_so():
    values = stack_values("prod")
    values["llm-platform:gpuPools"]["small"]["gpuLimit"] = "four"
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", {key: values.get(f"llm-platform:{key}") for key in config.KEYS})
    message = str(raised.value)
    assert [p.key for p in raised.value.problems] == ["gpuPools.small.gpuLimit"], message
    assert "got 'four'; must be a whole number" in message
    assert "checks across keys skipped gpuPools.small, whose own values are invalid" in message
    # The other pools' and models' checks across keys still run:
    values["llm-platform:models"]["llama-70b"]["minReplicas"] = 9
    with pytest.raises(config.ConfigError) as raised:
        config.parse("prod", {key: values.get(f"llm-platform:{key}") for key in config.KEYS})
    assert [p.key for p in raised.value.problems] == ["gpuPools.small.gpuLimit", "models.llama-70b.minReplicas"]


def test_when_a_required_key_is_invalid_the_message_says_the_checks_across_keys_did_not_run(project):
    stderr = refused(project, dev_with(**{"gpuPools__general__gpuLimit": "four"}))
    assert "gpuPools.general.gpuLimit: got 'four'; must be a whole number" in stderr
    assert "checks across keys did not run: a required key is invalid" in stderr


@pytest.mark.parametrize(("scalar", "value"), [
    ("yes", "yes"), ("on", "on"), ("No", "No"), ("true", True), ("False", False), ("010", 10), ("0o17", 15),
    ("0x1f", 31), ("1_000", "1_000"), ("1:30", "1:30"), ("2026-01-01", "2026-01-01"), ("1.35", 1.35), ("~", None),
    ("null", None), ("'8'", "8"),
])
def test_plain_scalars_are_read_by_yaml_1_2_as_the_pulumi_cli_reads_them(tmp_path, scalar, value):
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(f"config:\n  a: {scalar}\n")
    assert yaml_file.load(path, "test") == {"config": {"a": value}}


# YAML 1.1 surprises ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("old", "new", "text"), [
    ("      maxReplicas: 1\n", "      maxReplicas: on\n", "models.llama-8b.maxReplicas: got 'on'; must be a whole number"),
    ("      gpuLimit: 4\n", "      gpuLimit: yes\n", "gpuPools.general.gpuLimit: got 'yes'; must be a whole number"),
    ("      gpuLimit: 4\n", "      gpuLimit: true\n", "true/false are not numbers"),
    ("      gpuLimit: 4\n", "      gpuLimit: \"4\"\n", "got '4'; must be a whole number; remove the quotes"),
    ("      enabled: false\n", "      enabled: no\n", "gateway.ingress.enabled: got 'no'; must be true or false"),
    ("      maxReplicas: 1\n", "      maxReplicas: 1\n      slo: {p99LatencySeconds: .inf}\n",
     "models.llama-8b.slo.p99LatencySeconds: got inf; must be a finite number"),
    ("      maxReplicas: 1\n", "      maxReplicas: 1\n      autoscaling: {waitingRequestsPerReplica: 1e309}\n",
     "waitingRequestsPerReplica: got inf; must be a finite number"),
    ("    kubernetesVersion: \"1.35\"\n", "    kubernetesVersion: 1.35\n",
     "cluster.kubernetesVersion: got 1.35; must be text; YAML reads 1.35 unquoted as a float: write it in quotes"),
    ("      maxReplicas: 1\n", "      maxReplicas: 1\n      drainSeconds: 1:30\n",
     "drainSeconds: got '1:30'; must be a whole number"),
])
def test_yaml_1_1_coercions_are_not_numbers_or_booleans(project, old, new, text):
    assert DEV.count(old) == 1, old
    assert text in refused(project, DEV.replace(old, new))


# Names -----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "text"), [
    ("8b", "a model key names its Kubernetes Service: lowercase letters, digits and '-', starting with a letter"),
    ("auto", "is a name the gateway reserves"),
    ("fast", "is a name the gateway reserves"),
])
def test_model_keys_kubernetes_or_the_gateway_would_refuse(project, key, text):
    stderr = refused(project, DEV.replace("    llama-8b:\n", f"    {key}:\n").replace('["*"]', f'["{key}"]'))
    assert f"models.{key}: got '{key}'; {text}" in stderr


def test_the_reserved_names_are_the_ones_the_gateway_and_router_use():
    from components.edge.gateway import AUTO
    from components.serving import replica_router
    from config.checks import RESERVED_MODEL_NAMES, ROUTER_SUFFIX

    assert AUTO in RESERVED_MODEL_NAMES and set(TIERS) <= set(RESERVED_MODEL_NAMES)
    assert replica_router.name("llama-8b") == f"llama-8b{ROUTER_SUFFIX}"


def test_a_model_key_that_is_another_model_s_router_name_is_refused():
    values = stack_values("prod")
    models = values["llm-platform:models"]
    models["llama-8b-router"] = {**models["llama-8b"], "tier": None}
    with pytest.raises(config.ConfigError, match="is the name of model 'llama-8b's replica router Service"):
        config.parse("prod", {key: values.get(f"llm-platform:{key}") for key in config.KEYS})


# Checks beyond the shape ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "value", "text"), [
    ("cluster__vpcCidr", "127.0.0.0/16", "must be inside RFC 1918"),
    ("cluster__vpcCidr", "169.254.0.0/16", "must be inside RFC 1918"),
    ("cluster__vpcCidr", "100.64.0.0/16", None),  # RFC 6598 is allowed
    ("cluster__serviceCidr", "8.8.0.0/16", "must be inside RFC 1918"),
    ("cluster__serviceCidr", "172.17.0.0/16", "Docker's bridge network"),
    ("cluster__region", "us-west2", "not an AWS region (did you mean us-west-2?)"),
    ("cluster__region", "us-middle-earth-1", "not an AWS region"),
    ("redis__nodeType", "cache.t4g.smal", "unknown ElastiCache node type cache.t4g.smal (did you mean cache.t4g.small?)"),
    ("redis__nodeType", "m7g.large", "unknown ElastiCache node type m7g.large"),
    ("redis__engineVersion", "6.2", "allowed for valkey: 7.2, 8.0, 8.1, 8.2"),
    ("cluster__systemNodeGroup__instanceTypes", ["m7g.large"], "unknown system instance type m7g.large"),
    ("cluster__systemNodeGroup__instanceTypes", ["m9z.large"], "unknown system instance type m9z.large"),
])
def test_values_are_checked_against_what_aws_and_eks_accept(project, key, value, text):
    text_file = dev_with(**{key: value}).replace("us-west-2", value) if key == "cluster__region" else dev_with(**{key: value})
    if text is None:
        assert plan(project, text_file).code == 0
    else:
        assert text in refused(project, text_file)


def test_each_engine_s_default_version_is_allowed_and_renders_its_real_parameter_family():
    for engine, (version, family) in CACHE_ENGINES.items():
        assert version in CACHE_ENGINE_VERSIONS[engine]
        for allowed in CACHE_ENGINE_VERSIONS[engine]:
            rendered = engine_version(Redis(engine=engine, engine_version=allowed))
            assert rendered == (allowed, f"{engine}{allowed.split('.')[0]}")
        assert engine_version(Redis(engine=engine)) == (version, family)


# Messages ----------------------------------------------------------------------------------------------------------------

def test_a_megabyte_value_is_shortened_in_the_message(project):
    stderr = refused(project, dev_with(cluster__name="x" * 500_000))
    assert "cluster.name: got 'xxxxxxxx" in stderr and "(500002 characters)" in stderr
    assert len(stderr) < 2000


def test_a_misspelt_allowed_value_gets_a_suggestion(project):
    assert "allowed: 'vllm' or 'tgi' (did you mean vllm?)" in refused(project, dev_with(**{"models__llama-8b__engine": "vlm"}))


def test_the_program_reads_unreadable_config_values_as_config_errors():
    """What the Pulumi CLI hands the program (strings, objects as JSON) goes through the same checks: a value
    nested past Python's JSON parser and a gatewayKeys that is not an object are problems, not tracebacks."""
    import pulumi

    from llmctl.mocks import install

    install("us-west-2", "llm-platform", "test")
    dev = stack_values("dev")
    flat = {key: json.dumps(value) for key, value in dev.items() if isinstance(value, dict)}
    flat |= {"llm-platform:models": "[" * 5000 + "]" * 5000, "llm-platform:gatewayKeys": PLANTED}
    pulumi.runtime.set_all_config(flat, ["llm-platform:gatewayKeys"])
    with pytest.raises(config.ConfigError) as raised:
        config.load()
    keys = [p.key for p in raised.value.problems]
    assert keys[:2] == ["models", "gatewayKeys"], keys
    assert "nested at most 64 levels" in str(raised.value) and PLANTED not in str(raised.value)
