"""The platform on one machine, for `make e2e`: three real vLLM servers (two of the fast model behind the real
replica router, one of the quality model), two real LiteLLM gateways sharing a real Redis, a real Prometheus with the rendered rules, and a real Alertmanager with the rendered routing, all on
127.0.0.1 and configured by tests/e2e/stack.py from the functions that render the stack. Started once for the
session, stopped by PID at the end, pass or fail; logs stay in build/e2e/<server>/server.log.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import yaml

import config
from components.observability import monitoring
from tests.alertmanager_config import STAND_INS, alertmanager_config
from tests.conftest import ROOT
from tests.e2e import report, stack
from tests.e2e.stand_ins import Readiness, SlackWebhook, StateMetrics
from tests.litellm_proxy import start_proxy
from tests.local_http import serve
from tests.prometheus import Api
from tests.replica_router_local import LocalRouter, start_router
from tests.servers import Server, StartupFailed, free_port, fresh_folder, start

WORK = ROOT / "build" / "e2e"
# Paths relative to the project (the Makefile's), made absolute: each server runs in its own folder.
TOOLS = ROOT / os.environ.get("LLM_PLATFORM_TOOLS", "build/tools/usr/bin")
VLLM_PYTHON = ROOT / os.environ.get("LLM_PLATFORM_VLLM_PYTHON", ".venv-upstream/bin/python")
TINY_MODEL = WORK / "tiny-model"
ADAPTERS = WORK / "adapters"
"""One folder per adapter (tests/e2e/tiny_adapter.py), as the pod's init containers leave them."""
# Measured here: a vLLM server is healthy in 17-45 s alone; two start side by side on two cores.
VLLM_STARTUP_SECONDS = 240
STARTUP_SECONDS = 90


@dataclass
class Platform:
    cfg: config.StackConfig
    keys: dict[str, str]
    vllm: dict[str, Server]
    gateways: list[Server]
    redis: Server
    prometheus: Api
    prometheus_server: Server
    alertmanager: Server
    slack: list[dict]
    redis_password: str
    replicas: list[Server]
    """The fast model's servers (the first is also vllm[FAST]), behind `router`."""
    router: LocalRouter

    def servers(self) -> dict[str, Server]:
        return {s.name: s for s in (*self.vllm.values(), *self.replicas, self.router.server, *self.gateways,
                                    self.redis, self.prometheus_server, self.alertmanager)}

    def explain(self, message: str, *names: str) -> str:
        """A failure message with the tail of each named server's log."""
        servers = self.servers()
        return "\n".join([message, *(servers[n].tail() for n in names)])


# Starting each program -------------------------------------------------------------------------------------------

def start_vllm(cfg, key: str, cpu: int | None, index: int = 0) -> Server:
    port = free_port()
    folder = WORK / (f"vllm-{key}-{index}" if index else f"vllm-{key}")
    args = stack.server_args(key, cfg.models[key], str(TINY_MODEL), port, str(ADAPTERS))
    return start_vllm_with(folder, args, port, cpu)


def start_vllm_with(folder, args: list[str], port: int, cpu: int | None) -> Server:
    """`vllm serve` with these arguments, in a fresh folder (its temporary files and caches there too)."""
    env = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": str(stack.KV_CACHE_SPACE_GIB), "PYTHONPATH": str(ROOT),
           "TMPDIR": str(folder / "tmp"), "VLLM_CACHE_ROOT": str(folder / "cache"),
           "XDG_CACHE_HOME": str(folder / "cache")}
    if cpu is not None:
        # Each server on a core of its own (its OpenMP threads bound to it too): two engines spinning on the same
        # cores starve both, and a busy server must leave the other core to Prometheus and the gateways.
        env["VLLM_CPU_OMP_THREADS_BIND"] = str(cpu)
    (fresh_folder(folder) / "tmp").mkdir()
    (folder / "args.txt").write_text(" ".join(args) + "\n")
    return start(folder.name, [str(VLLM_PYTHON), "-m", "tests.upstream.vllm_cpu", "serve", *args], folder, port,
                 env, cpus={cpu} if cpu is not None else None)


# Debian's redis-server, unpacked by `make e2e-tools`: its jemalloc and lzf come from the same folder.
REDIS_ENV = {"LD_LIBRARY_PATH": str(TOOLS.parent / "lib" / "x86_64-linux-gnu")}


def start_redis(password: str) -> Server:
    port, folder = free_port(), WORK / "redis"
    fresh_folder(folder)
    argv = [str(TOOLS / "redis-server"), "--bind", "127.0.0.1", "--port", str(port), "--dir", str(folder),
            "--requirepass", password, "--save", "", "--appendonly", "no", "--daemonize", "no"]
    return start("redis", argv, folder, port, REDIS_ENV)


def restart_redis(server: Server, password: str) -> Server:
    """A stopped Redis started again on its port, empty (as a replaced ElastiCache node comes back)."""
    port = int(server.url.rsplit(":", 1)[1])
    again = start("redis", list(server.process.args), server.folder, port, REDIS_ENV)
    redis_ready(again, password)
    return again


def redis_ready(server: Server, password: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    port = int(server.url.rsplit(":", 1)[1])
    while time.monotonic() < deadline:
        if not server.alive():
            raise StartupFailed(f"redis exited with {server.process.returncode}\n{server.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
                if b"+PONG" in s.recv(100):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise StartupFailed(f"redis did not answer PING in {seconds} s\n{server.tail()}")


TEMPLATE_DIR = b"/usr/share/prometheus/alertmanager"
TEMPLATE_LINK = "alertmanager-share"


def start_alertmanager(cfg, slack_url: str) -> Server:
    """Debian's Alertmanager reads its default template from a fixed path under /usr/share, which this machine
    does not have (the package is unpacked, not installed). A copy of the binary has that path replaced by a
    relative one of the same length, which resolves inside the server's own folder; the machine's /usr is left
    alone."""
    port, folder = free_port(), WORK / "alertmanager"
    fresh_folder(folder)
    relative = "./" * ((len(TEMPLATE_DIR) - len(TEMPLATE_LINK)) // 2) + TEMPLATE_LINK
    assert len(relative) == len(TEMPLATE_DIR)
    binary = folder / "alertmanager"
    original = (TOOLS / "prometheus-alertmanager").read_bytes()
    binary.write_bytes(original.replace(TEMPLATE_DIR, relative.encode()))
    binary.chmod(0o755)
    link = folder / TEMPLATE_LINK
    if not link.exists():
        link.symlink_to(TOOLS.parent / "share" / "prometheus" / "alertmanager")
    config = alertmanager_config(stack.alertmanager_spec(cfg), {**STAND_INS, monitoring.SLACK_KEY: slack_url})
    (folder / "alertmanager.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    argv = [str(binary), f"--config.file={folder / 'alertmanager.yaml'}", f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]
    return start("alertmanager", argv, folder, port)


def start_prometheus(cfg, servers: dict[str, Server], gateways: list[Server], state_metrics: str,
                     alertmanager: Server, routers: dict[str, LocalRouter]) -> Server:
    port, folder = free_port(), WORK / "prometheus"
    fresh_folder(folder)
    (folder / "rules.yaml").write_text(yaml.safe_dump({"groups": stack.rule_groups(cfg, TINY_MODEL)}))
    address = {name: s.url.removeprefix("http://") for name, s in servers.items()}
    scrape = stack.scrape_configs(cfg, address, {g.name: g.url.removeprefix("http://") for g in gateways},
                                  state_metrics, {pod: r.metrics_url.removeprefix("http://") for pod, r in routers.items()})
    (folder / "prometheus.yaml").write_text(yaml.safe_dump(stack.prometheus_config(
        scrape, str(folder / "rules.yaml"), alertmanager.url.removeprefix("http://"))))
    argv = [str(TOOLS / "prometheus"), f"--config.file={folder / 'prometheus.yaml'}",
            f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            # A firing alert is sent again every minute by default; a few seconds, should a send fail under load.
            "--rules.alert.resend-delay=5s"]
    return start("prometheus", argv, folder, port)


def _wait_ready(servers: list[tuple[Server, str, float]]) -> dict[str, float]:
    """Seconds each server took to answer its readiness path; StartupFailed from the first that did not."""
    with ThreadPoolExecutor(len(servers)) as pool:
        waits = {s.name: pool.submit(s.wait_ready, path, seconds) for s, path, seconds in servers}
        return {name: round(wait.result(), 1) for name, wait in waits.items()}


# The session's platform ------------------------------------------------------------------------------------------

def _missing_tools() -> list[str]:
    needed = [TOOLS / n for n in ("prometheus", "prometheus-alertmanager", "redis-server")] + [VLLM_PYTHON]
    adapters = [ADAPTERS / name / "adapter_config.json" for name in stack.stack_config().models[stack.FAST].adapters]
    return [str(p) for p in needed + adapters if not p.exists()] + ([] if (TINY_MODEL / "config.json").exists()
                                                                   else [str(TINY_MODEL)])


@pytest.fixture(scope="session")
def platform():
    missing = _missing_tools()
    if missing:
        pytest.fail(f"missing {missing}: `make e2e` installs and unpacks them")
    cfg = stack.stack_config()
    keys = {name: f"sk-e2e-{name}-{secrets.token_hex(8)}" for name in cfg.gateway.keys}
    master, redis_password = f"sk-e2e-master-{secrets.token_hex(8)}", secrets.token_hex(16)
    started: list[Server] = []
    readiness = None
    helpers = [serve(StateMetrics), serve(SlackWebhook)]
    try:
        # Each server on a core of its own where there are enough; here the quality server shares the second.
        cpus = sorted(os.sched_getaffinity(0))
        core = (lambda i: cpus[i % len(cpus)]) if len(cpus) >= 2 else (lambda i: None)
        replicas = [start_vllm(cfg, stack.FAST, core(i), i) for i in range(stack.ROUTED_REPLICAS)]
        vllm = {stack.FAST: replicas[0], stack.QUALITY: start_vllm(cfg, stack.QUALITY, core(1))}
        started += [*replicas, vllm[stack.QUALITY]]
        redis = start_redis(redis_password)
        started.append(redis)
        redis_ready(redis, redis_password)
        # The fast model's backend is its router, started once its servers are up (it waits for them otherwise).
        router_port = free_port()
        backends = {stack.FAST: f"http://127.0.0.1:{router_port}", stack.QUALITY: vllm[stack.QUALITY].url,
                    stack.ASLEEP: f"http://127.0.0.1:{free_port()}"}
        shared = {"host": "127.0.0.1", "port": redis.url.rsplit(":", 1)[1], "password": redis_password}
        gateways = [start_proxy(name, WORK / name, cfg, backends, master, keys, shared)
                    for name in ("gateway-a", "gateway-b")]
        started += gateways
        pods = {f"{stack.FAST}-{i}": s for i, s in enumerate(replicas)} | {f"{stack.QUALITY}-0": vllm[stack.QUALITY]}
        readiness = Readiness(cfg, pods)
        readiness.start()
        StateMetrics.cfg, StateMetrics.readiness = cfg, readiness
        SlackWebhook.received = []
        timings = _wait_ready([*((s, "/health", VLLM_STARTUP_SECONDS) for s in (*replicas, vllm[stack.QUALITY])),
                               *((g, "/health/readiness", STARTUP_SECONDS) for g in gateways)])
        router = start_router(f"router-{stack.FAST}", WORK / f"router-{stack.FAST}", stack.FAST,
                              cfg.models[stack.FAST], [s.url for s in replicas],
                              cfg.gateway.request_timeout_seconds, port=router_port)
        started.append(router.server)
        timings |= _wait_ready([(router.server, "/readiness", STARTUP_SECONDS)])
        # Monitoring starts once the servers are up, so that no check sees the alerts of their start-up.
        alertmanager = start_alertmanager(cfg, f"http://127.0.0.1:{helpers[1].server_port}/slack")
        started.append(alertmanager)
        prometheus = start_prometheus(cfg, pods, gateways, f"127.0.0.1:{helpers[0].server_port}", alertmanager,
                                      {f"{stack.FAST}-router-0": router})
        started.append(prometheus)
        timings |= _wait_ready([(alertmanager, "/-/ready", STARTUP_SECONDS), (prometheus, "/-/ready", STARTUP_SECONDS)])
        report.STARTUP.update(timings)
        api = Api(prometheus.url, prometheus.log)
        platform = Platform(cfg, keys, vllm, gateways, redis, api, prometheus, alertmanager, SlackWebhook.received,
                            redis_password, replicas, router)
        yield platform
        if platform.redis is not redis:  # a check restarted it
            started.append(platform.redis)
    except StartupFailed as error:
        pytest.fail(str(error))
    finally:
        if readiness:
            readiness.stopped.set()
        for server in reversed(started):
            server.stop()
        for helper in helpers:
            helper.stop()
