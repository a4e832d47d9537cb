"""A real Prometheus as the tests run it: its HTTP API, and monitors (the Prometheus Operator's CRDs) written as the
plain scrape configuration the operator would generate, for the fields the platform uses."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

# What the operator puts in front of a monitor's own relabelings: namespace and pod from service discovery.
OPERATOR_RELABELINGS = [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
                        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}]


def relabel(configs: list[dict]) -> list[dict]:
    """A monitor's relabelings (the CRD's camelCase) as Prometheus configuration, as the operator writes them."""
    keys = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    return [{keys.get(k, k): v for k, v in c.items()} for c in configs]


def pod_target(address: str, path: str, namespace: str, pod: str, **pod_labels: str) -> dict:
    """A static target carrying the `__meta_kubernetes_*` labels Kubernetes service discovery would set."""
    return {"targets": [address], "labels": {
        "__metrics_path__": path, "__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": pod,
        **{f"__meta_kubernetes_pod_label_{k}": v for k, v in pod_labels.items()}}}


class Api:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log

    def get(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        # Generous: on two cores shared with busy model servers an answer can take seconds.
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=20) as response:
            return json.loads(response.read())

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["data"]["result"]

    def alerts(self, name: str) -> list[dict]:
        return [a for a in self.get("/api/v1/alerts")["data"]["alerts"] if a["labels"]["alertname"] == name]

    def wait_for(self, expr: str, proc: subprocess.Popen, seconds: float = 60) -> None:
        """Until `expr` has a result: Prometheus up, targets scraped twice (rates), rules evaluated."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.query(expr):
                    time.sleep(2)  # one more evaluation of every group, so later rules see earlier ones
                    return
            except OSError:
                pass
            time.sleep(0.5)
        pytest.fail(f"no result for {expr} after {seconds} s:\n{self.log.read_text()[-3000:]}")
