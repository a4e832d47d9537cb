"""The end-to-end run (`make e2e`) must run what the cluster runs: these check, without starting anything, that each
change tests/e2e/stack.py makes to the rendered artefacts is only the one it names."""

from __future__ import annotations

from pathlib import Path

import pytest

import config
from components.edge import gateway
from components.observability import monitoring, signals
from components.serving import replica_router
from components.serving.vllm_service import vllm_args
from tests import litellm_proxy, replica_router_local
from tests.e2e import stack, tiny_model


@pytest.fixture(scope="module")
def cfg() -> config.StackConfig:
    return stack.stack_config()


@pytest.mark.parametrize("key", stack.SERVED)
def test_a_server_runs_the_rendered_arguments_with_only_location_host_and_port_replaced(cfg, key):
    rendered = vllm_args(key, cfg.models[key], "e2e-registry", 18000)
    local = stack.server_args(key, cfg.models[key], "/models/tiny", 18000, "/local/adapters")
    changed = {i: (rendered[i], local[i]) for i in range(len(rendered)) if rendered[i] != local[i]}
    assert len(local) == len(rendered)
    adapters = {rendered.index(f"{name}=/cache/adapters/{name}"): (f"{name}=/cache/adapters/{name}",
                                                                  f"{name}=/local/adapters/{name}")
                for name in cfg.models[key].adapters}
    assert changed == {0: (rendered[0], "/models/tiny"),
                       rendered.index("--host") + 1: ("0.0.0.0", "127.0.0.1"), **adapters}
    assert local[local.index("--shutdown-timeout") + 1] == str(stack.DRAIN_SECONDS)


@pytest.mark.parametrize("worker_index", [0, 1])
def test_a_group_member_runs_the_rendered_arguments_with_only_lws_environment_location_host_and_ports_replaced(
        worker_index):
    multi = stack.multi_node_config()
    leader, worker = stack.group_containers(multi, stack.SPLIT)
    rendered = (leader if worker_index == 0 else worker)["args"]
    local = stack.group_member_args(leader if worker_index == 0 else worker, "/models/tiny", worker_index, 18000, 18001)
    changed = {i: (rendered[i], local[i]) for i in range(len(rendered)) if rendered[i] != local[i]}
    def at(flag):
        return rendered.index(flag) + 1
    expected = {0: (rendered[0], "/models/tiny"), at("--host"): ("0.0.0.0", "127.0.0.1"),
                at("--port"): ("8000", "18000"), at("--master-port"): ("29501", "18001"),
                at("--master-addr"): ("$(LWS_LEADER_ADDRESS)", "127.0.0.1")}
    if worker_index:
        expected[at("--node-rank")] = ("$(LWS_WORKER_INDEX)", "1")
    assert len(local) == len(rendered) and changed == expected
    assert ("--headless" in local) == bool(worker_index)


def test_the_fast_model_serves_a_lora_adapter_the_run_can_load(cfg):
    assert stack.ADAPTER in cfg.models[stack.FAST].adapters
    with pytest.raises(ValueError, match="give the folder"):
        stack.server_args(stack.FAST, cfg.models[stack.FAST], "/m", 1)


def test_the_quality_server_queues_beyond_two_sequences(cfg):
    args = stack.server_args(stack.QUALITY, cfg.models[stack.QUALITY], "/m", 1)
    assert args[args.index("--max-num-seqs") + 1] == str(stack.QUALITY_MAX_SEQS)
    assert signals.queue_alert_per_replica(cfg.models[stack.QUALITY]) == 2 * stack.QUALITY_QUEUE_TARGET


def test_a_flag_a_cpu_cannot_honour_is_refused_by_name(cfg):
    quantized = cfg.models[stack.FAST].model_copy(update={"quantization": "fp8"})
    with pytest.raises(ValueError, match="--quantization"):
        stack.server_args(stack.FAST, quantized, "/m", 1)


def tiny_model_dir(tmp_path) -> Path:
    return tiny_model.write_config(tmp_path)


def test_alert_conditions_are_as_rendered_and_only_their_wait_is_cut(cfg, tmp_path):
    rendered = signals.prometheus_rule_groups(cfg)
    local = stack.rule_groups(cfg, tiny_model_dir(tmp_path))
    alerts = [r for g in local for r in g["rules"] if "alert" in r]
    assert alerts and all(r["for"] == stack.ALERT_FOR_IN_TEST for r in alerts)

    def strip(groups: list[dict]) -> list:
        return [[{k: v for k, v in r.items() if k != "for"} for r in g["rules"]] for g in groups
                if g["name"] != "llm-platform.models.capacity"]
    assert strip(local) == strip(rendered)


def test_the_kv_band_here_is_the_cpu_plan_of_the_checkpoint_the_servers_load(cfg, tmp_path):
    """On a CPU vLLM holds VLLM_CPU_KVCACHE_SPACE of KV cache: the tiny checkpoint has 2 layers x 1 KV head x 32
    x 2 (K, V) x 2 bytes = 256 bytes per token, so 1 GiB is 32,768 blocks of 128 tokens: 4,194,304 tokens."""
    bands = stack.kv_bands(cfg, tiny_model_dir(tmp_path))
    assert set(bands) == {stack.FAST, stack.QUALITY, stack.ASLEEP}
    assert bands[stack.FAST] == [(3_774_874, 4_613_734)]  # 4,194,304 within 10%
    assert bands[stack.FAST] != signals.kv_bands(cfg)[stack.FAST]  # not the catalog 8B on the pool's GPUs


def test_alert_routing_is_as_rendered_and_only_its_waits_are_cut(cfg):
    rendered = monitoring.alertmanager_config_spec(cfg.monitoring.alerting)
    local = stack.alertmanager_spec(cfg)
    assert local["receivers"] == rendered["receivers"] and local["inhibitRules"] == rendered["inhibitRules"]

    def timings(route: dict) -> list:
        return [{k: route[k] for k in ("groupWait", "groupInterval") if k in route},
                *(t for child in route.get("routes", []) for t in timings(child))]

    def without_timings(route: dict) -> dict:
        return {k: ([without_timings(c) for c in v] if k == "routes" else v) for k, v in route.items()
                if k not in ("groupWait", "groupInterval")}

    assert without_timings(local["route"]) == without_timings(rendered["route"])
    assert timings(local["route"])[0] == stack.ROUTE_TIMING_IN_TEST
    assert rendered["route"]["groupWait"] != stack.ROUTE_TIMING_IN_TEST["groupWait"]


def test_the_gateway_gets_the_rendered_environment_with_secrets_resolved(cfg):
    secrets = {(gateway.KEYS_SECRET, "master-key"): "m", (gateway.REDIS_SECRET, "host"): "127.0.0.1",
               (gateway.REDIS_SECRET, "port"): "6390", (gateway.REDIS_SECRET, "password"): "p"}
    paths = {f"{gateway.KEYS_DIR}/hashes.json": "/local/hashes.json"}
    env = litellm_proxy.gateway_env(cfg, secrets, paths)
    assert env["LITELLM_MASTER_KEY"] == "m" and env["REDIS_PORT"] == "6390"
    assert env[gateway.HASHES_FILE] == "/local/hashes.json"
    assert env["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
    assert env[gateway.REQUEST_TIMEOUT] == str(cfg.gateway.request_timeout_seconds)
    # The one named change: no headless Service here, so each proxy counts the configured replicas.
    rendered = {e["name"]: e.get("value") for e in litellm_proxy.container(cfg)["env"]}
    assert rendered[gateway.PEERS].endswith(".svc.cluster.local") and env[gateway.PEERS] == ""
    with pytest.raises(KeyError):  # a Secret the run does not provide: the pod would not start either
        litellm_proxy.gateway_env(cfg, {k: v for k, v in secrets.items() if k[1] != "password"}, paths)


def test_the_gateway_runs_the_rendered_arguments_on_loopback(cfg):
    command = litellm_proxy.gateway_command(cfg, "/local/config.yaml", 4100)
    assert command[command.index("--config") + 1] == "/local/config.yaml"
    assert command[command.index("--port") + 1] == "4100"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--num_workers") + 1] == "1"


def test_monitors_scrape_what_the_cluster_scrapes(cfg):
    scrape = {job["job_name"]: job for job in stack.scrape_configs(
        cfg, {f"{stack.FAST}-0": "127.0.0.1:1"}, {"gateway-a": "127.0.0.1:2"}, "127.0.0.1:3",
        {f"{stack.FAST}-router-0": "127.0.0.1:4"})}
    [target] = scrape["model-servers"]["static_configs"]
    assert target["labels"]["__meta_kubernetes_pod_label_llm_platform_io_model"] == stack.FAST
    assert target["labels"]["__meta_kubernetes_pod_label_llm_platform_io_tier"] == "fast"
    assert {"source_labels": ["__meta_kubernetes_pod_label_llm_platform_io_model"], "target_label": "model",
            "action": "replace"} in scrape["model-servers"]["relabel_configs"]
    # The router's series get `model` from its pod's label, as its PodMonitor relabels them.
    [router_target] = scrape["replica-routers"]["static_configs"]
    assert router_target["labels"]["__meta_kubernetes_pod_label_llm_platform_io_model"] == stack.FAST
    assert {"source_labels": ["__meta_kubernetes_pod_label_llm_platform_io_model"], "target_label": "model",
            "action": "replace"} in scrape["replica-routers"]["relabel_configs"]
    [gateway_target] = scrape["gateway"]["static_configs"]
    assert gateway_target["labels"]["__metrics_path__"] == "/metrics/"
    # Client-chosen labels are left out by the proxy itself, so nothing is dropped at the scrape (which would
    # collide series that differ only in a dropped label).
    assert scrape["gateway"]["metric_relabel_configs"] == []


def flags(args: list[str]) -> dict[str, list[str]]:
    """An argument list as flag -> the values after it."""
    found: dict[str, list[str]] = {}
    for arg in args:
        if arg.startswith("--"):
            current = found.setdefault(arg, [])
        else:
            current.append(arg)
    return found


def test_the_router_runs_the_rendered_arguments_with_only_addresses_and_discovery_replaced(cfg):
    rendered = flags(replica_router.router_args(stack.FAST, cfg.models[stack.FAST], 300))
    workers = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    local = flags(replica_router_local.local_args(
        replica_router.router_args(stack.FAST, cfg.models[stack.FAST], 300), 5000, 5001, workers))
    discovery = {"--service-discovery", "--service-discovery-namespace", "--service-discovery-port", "--selector"}
    addresses = {"--host": ["127.0.0.1"], "--port": ["5000"], "--prometheus-host": ["127.0.0.1"],
                 "--prometheus-port": ["5001"]}
    assert local == {**{f: v for f, v in rendered.items() if f not in discovery}, **addresses, "--worker-urls": workers}
    # With no server, discovery stays as rendered (outside a cluster it finds none).
    assert flags(replica_router_local.local_args(
        replica_router.router_args(stack.FAST, cfg.models[stack.FAST], 300), 5000, 5001, [])).keys() == rendered.keys()
