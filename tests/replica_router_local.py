"""The replica router as the tests run it: the rendered `vllm-router` arguments (components/serving/replica_router.py)
started on 127.0.0.1 from the vllm-router in this virtualenv, in front of servers given by URL.

Two substitutions, each because there is no Kubernetes here: 127.0.0.1 and free ports for the pod's 0.0.0.0 and
fixed ports, and the servers' URLs (`--worker-urls`) for pod discovery. With no URL, discovery stays on and finds
nothing (the router continues without it), which is a router whose model has no ready server; the environment
names no cluster (no in-cluster variables, a KUBECONFIG that does not exist), so it can never reach one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import config
from components.serving import replica_router
from tests.servers import Server, free_port, fresh_folder, start

ROUTER = Path(sys.executable).parent / "vllm-router"
DISCOVERY_FLAGS = {"--service-discovery", "--service-discovery-namespace", "--service-discovery-port", "--selector"}
STARTUP_SECONDS = 60
NO_CLUSTER = {"KUBECONFIG": "/nonexistent/kubeconfig", "KUBERNETES_SERVICE_HOST": "", "KUBERNETES_SERVICE_PORT": ""}


@dataclass
class LocalRouter:
    server: Server
    metrics_url: str

    @property
    def url(self) -> str:
        return self.server.url


def without_discovery(rendered: list[str]) -> list[str]:
    """The rendered arguments less pod discovery: its switch, namespace, port and selector terms."""
    args, skipping = [], False
    for arg in rendered:
        if arg.startswith("--"):
            skipping = arg in DISCOVERY_FLAGS
        if not skipping:
            args.append(arg)
    return args


def local_args(rendered: list[str], port: int, metrics_port: int, workers: list[str]) -> list[str]:
    """The rendered arguments on loopback ports, with `workers` instead of discovery (or, with none, discovery as
    rendered: outside a cluster it finds nothing)."""
    args = without_discovery(rendered) + ["--worker-urls", *workers] if workers else list(rendered)
    values = {"--host": "127.0.0.1", "--prometheus-host": "127.0.0.1", "--port": str(port),
              "--prometheus-port": str(metrics_port)}
    for flag, value in values.items():
        args[args.index(flag) + 1] = value
    return args


def start_router(name: str, folder: Path, key: str, m: config.ModelDeployment, workers: list[str],
                 request_timeout_seconds: int = 300, overrides: dict[str, str] | None = None,
                 port: int | None = None) -> LocalRouter:
    """A router for model `key` in a fresh `folder`; `overrides` replaces rendered flags' values (the benchmark's
    policies), `port` is its API port when the caller needs the URL before the router starts."""
    fresh_folder(folder)
    rendered = replica_router.router_args(key, m, request_timeout_seconds)
    for flag, value in (overrides or {}).items():
        rendered[rendered.index(flag) + 1] = value
    port, metrics_port = port or free_port(), free_port()
    args = local_args(rendered, port, metrics_port, workers)
    (folder / "args.txt").write_text(" ".join(args) + "\n")
    server = start(name, [str(ROUTER), *args], folder, port, NO_CLUSTER)
    return LocalRouter(server, f"http://127.0.0.1:{metrics_port}")
