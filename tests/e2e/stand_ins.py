"""Stand-ins for what only a cluster has, for the end-to-end run: the kubelet's readiness probe, kube-state-metrics'
view of the model Deployments (both from the real server processes), and Slack's incoming webhook."""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler

from components.serving import model_server
from tests.e2e import stack
from tests.servers import Server


class Readiness(threading.Thread):
    """The kubelet's readiness probe for each model server, as rendered (path, timeout, failure threshold), polled
    every second instead of every five: a server is ready after one answer and unready after `failureThreshold`
    misses in a row, so one slow answer under load does not take it out, as in a cluster."""

    def __init__(self, cfg, servers: dict[str, Server]):
        super().__init__(daemon=True)
        self.servers, self.stopped = servers, threading.Event()
        self.probes = {pod: model_server.probes(cfg.models[pod.rsplit("-", 1)[0]], "http")["readinessProbe"]
                       for pod in servers}
        self.misses = dict.fromkeys(servers, 0)
        self.ever = dict.fromkeys(servers, False)

    def ready(self, pod: str) -> bool:
        return self.ever[pod] and self.misses[pod] < self.probes[pod]["failureThreshold"]

    def run(self) -> None:
        while not self.stopped.wait(1):
            for pod, server in self.servers.items():
                probe = self.probes[pod]
                ok = server.alive() and _healthy(server.url + probe["httpGet"]["path"], probe["timeoutSeconds"])
                self.ever[pod] |= ok
                self.misses[pod] = 0 if ok else self.misses[pod] + 1


class StateMetrics(BaseHTTPRequestHandler):
    """kube-state-metrics' view of the model Deployments, taken from the real processes: a pod's labels and its
    readiness while its server runs, and a Deployment's available replicas = its ready servers (Readiness). The
    recording rules join on these; nothing else is invented."""

    cfg = None
    readiness: Readiness | None = None

    def do_GET(self):  # noqa: N802 (the stdlib's name)
        lines = []
        for key, m in self.cfg.models.items():
            available = 0
            for pod, server in self.readiness.servers.items():
                if not pod.startswith(f"{key}-") or not server.alive():
                    continue
                labels = {f"label_{k}": v for k, v in stack.pod_labels(key, m).items()}
                text = ",".join(f'{k}="{v}"' for k, v in {"namespace": model_server.NAMESPACE, "pod": pod,
                                                           **labels}.items())
                lines.append(f"kube_pod_labels{{{text}}} 1")
                ready = self.readiness.ready(pod)
                pod_id = f'namespace="{model_server.NAMESPACE}",pod="{pod}"'
                lines.append(f'kube_pod_status_ready{{{pod_id},condition="true"}} {int(ready)}')
                available += ready
            lines.append(f'kube_deployment_status_replicas_available{{namespace="{model_server.NAMESPACE}",'
                         f'deployment="{key}"}} {available}')
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("content-type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class SlackWebhook(BaseHTTPRequestHandler):
    """Slack's incoming webhook, on 127.0.0.1: keeps every message Alertmanager posts."""

    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        self.received.append(json.loads(self.rfile.read(int(self.headers.get("content-length", 0)))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def _healthy(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status == 200
    except OSError:
        return False
