"""Every Helm value the program sets is one its chart reads. Helm silently ignores a key no template uses, so a
misspelt value (`podAntiAffinty`, `nodeSelectr`) would deploy the chart's default without a word. The charts' value
shapes (tests/data/charts/, keys only, with source and licence) come from the pinned versions' values.yaml and
templates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Rendered

CHARTS_DIR = Path(__file__).resolve().parent / "data" / "charts"
FREE = "free"


def chart_shape(chart: str, version: str) -> dict:
    path = CHARTS_DIR / f"{chart.rsplit('/', 1)[-1]}-{version}.json"
    assert path.exists(), f"no value shape for {chart} {version}: run tests/data/charts/extract.py"
    return json.loads(path.read_text())["values"]


def unknown_keys(values, shape, path: str = "") -> list[str]:
    if shape == FREE or not isinstance(values, dict):
        return []
    if not isinstance(shape, dict):
        return [f"{path.rstrip('.')}: a structure where the chart takes a single value"]
    found = []
    for key, value in values.items():
        if key not in shape:
            found.append(f"{path}{key}")
        else:
            found += unknown_keys(value, shape[key], f"{path}{key}.")
    return found


def test_every_value_set_is_read_by_its_chart(stack: Rendered):
    checked = []
    for release in stack.releases.values():
        if release["values"]:
            unknown = unknown_keys(release["values"], chart_shape(release["chart"], release["version"]))
            assert not unknown, f"{release['release']}: the chart has no value {unknown}"
            checked.append(release["release"])
    expected = {"karpenter", "nvidia-device-plugin", "kube-prometheus-stack", "keda", "dcgm-exporter",
                "aws-load-balancer-controller"}
    if stack.stack == "prod":  # its multi-node model on an EFA pool
        expected |= {"lws", "aws-efa-k8s-device-plugin"}
    assert set(checked) == expected


@pytest.mark.parametrize(("release", "path"), [
    ("kube-prometheus-stack", ["prometheus", "prometheusSpec", "podAntiAffinty"]),
    ("kube-prometheus-stack", ["grafana", "sidecar", "dashboards", "searchNamespaces"]),
    ("keda", ["metricServer", "replicaCount"]),  # the chart's key is metricsServer
    ("dcgm-exporter", ["serviceMonitor", "honourLabels"]),
    ("aws-load-balancer-controller", ["defaultSslPolicy"]),  # the chart's key is defaultSSLPolicy
])
def test_a_misspelt_value_is_caught(prod: Rendered, release, path):
    values = json.loads(json.dumps(prod.releases[release]["values"]))
    node = values
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = True
    shape = chart_shape(prod.releases[release]["chart"], prod.releases[release]["version"])
    misspelt = ".".join(path)
    unknown = unknown_keys(values, shape)
    assert any(misspelt == u or misspelt.startswith(u + ".") for u in unknown), unknown
