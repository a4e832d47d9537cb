"""The rendered AlertmanagerConfig, checked by the real Alertmanager's amtool (Debian's 0.25, unpacked by
`make tools`): the configuration and its Slack templates are valid, and each kind of alert reaches the receivers it
should through Alertmanager's own routing.

amtool reads Alertmanager's configuration file, so the AlertmanagerConfig is converted as the operator converts it
(tests/alertmanager_config.py). Secret references become stand-in values (amtool never sends anything).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.alertmanager_config import alertmanager_config
from tests.conftest import Rendered
from tests.tools import tool


@pytest.fixture(scope="module")
def amtool():
    return tool("amtool")


def _config_file(stack: Rendered, tmp_path) -> str:
    [config] = stack.kind("AlertmanagerConfig")
    path = tmp_path / f"alertmanager-{stack.stack}.yaml"
    path.write_text(yaml.safe_dump(alertmanager_config(config["spec"]), sort_keys=False))
    return str(path)


def run(amtool, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(amtool), *args], capture_output=True, text=True, timeout=60)


def test_the_configuration_is_valid_for_alertmanager(amtool, stack: Rendered, tmp_path):
    result = run(amtool, "check-config", _config_file(stack, tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_slack_templates_render(amtool, prod: Rendered):
    [config] = prod.kind("AlertmanagerConfig")
    [slack] = [r for r in config["spec"]["receivers"] if r["name"] == "slack"][0]["slackConfigs"]
    for field in ("title", "text"):
        result = run(amtool, "template", "render", "--template.glob=/dev/null", f"--template.text={slack[field]}")
        assert result.returncode == 0, (field, result.stderr)
    broken = run(amtool, "template", "render", "--template.glob=/dev/null", "--template.text={{ .Status | toUper }}")
    assert broken.returncode != 0  # guards the guard


def receivers_for(amtool, config_file: str, labels: dict[str, str]) -> set[str]:
    result = run(amtool, "config", "routes", "test", f"--config.file={config_file}",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stdout + result.stderr
    return {name.strip() for name in result.stdout.strip().split(",")}


@pytest.mark.parametrize(("alert", "expected"), [
    ({"alertname": "LLMModelDown", "severity": "critical", "model": "llama-8b"}, {"pagerduty", "slack"}),
    ({"alertname": "LLMQueueDepthHigh", "severity": "warning", "model": "llama-8b"}, {"slack"}),
    ({"alertname": "LLMGPUFatalXid", "severity": "critical", "pod": "dcgm-exporter-x1"}, {"pagerduty", "slack"}),
    ({"alertname": "KarpenterSpotInterruptionWave", "severity": "warning"}, {"slack"}),
    ({"alertname": "Watchdog", "severity": "none"}, {"null"}),
    ({"alertname": "InfoInhibitor", "severity": "info"}, {"null"}),
])
def test_critical_pages_pagerduty_and_warnings_go_to_slack(amtool, prod: Rendered, tmp_path, alert, expected):
    assert receivers_for(amtool, _config_file(prod, tmp_path), alert) == expected


def test_without_receivers_every_alert_goes_nowhere(amtool, dev: Rendered, tmp_path):
    config_file = _config_file(dev, tmp_path)
    for severity in ("critical", "warning"):
        assert receivers_for(amtool, config_file, {"severity": severity, "model": "llama-8b"}) == {"null"}
