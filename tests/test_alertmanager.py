"""The rendered AlertmanagerConfig, checked by the real Alertmanager's amtool (Debian's 0.25, unpacked by
`make tools`): the configuration and its Slack templates are valid, and each kind of alert reaches the receivers it
should through Alertmanager's own routing.

amtool reads Alertmanager's configuration file, so the AlertmanagerConfig (the CRD's camelCase) is converted the way
the Prometheus Operator converts it, for the fields the platform uses; an unknown field fails the conversion rather
than being dropped. Secret references become stand-in values (amtool never sends anything).
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.conftest import Rendered
from tests.tools import tool

STAND_INS = {"pagerduty-routing-key": "0123456789abcdef0123456789abcdef",
             "slack-webhook-url": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"}
ROUTE_FIELDS = {"receiver": "receiver", "groupBy": "group_by", "groupWait": "group_wait",
                "groupInterval": "group_interval", "repeatInterval": "repeat_interval", "continue": "continue"}


def _only(obj: dict, allowed: set[str], where: str) -> None:
    unknown = set(obj) - allowed
    assert not unknown, f"the converter does not know {where}.{sorted(unknown)}: teach it, as the operator does"


def _matcher(m: dict) -> str:
    _only(m, {"name", "value", "matchType"}, "matcher")
    return f'{m["name"]}{m.get("matchType", "=")}"{m["value"]}"'


def _route(route: dict) -> dict:
    _only(route, {*ROUTE_FIELDS, "matchers", "routes"}, "route")
    out = {ROUTE_FIELDS[k]: v for k, v in route.items() if k in ROUTE_FIELDS}
    if "matchers" in route:
        out["matchers"] = [_matcher(m) for m in route["matchers"]]
    if route.get("routes"):
        out["routes"] = [_route(r) for r in route["routes"]]
    return out


def _secret(ref: dict) -> str:
    return STAND_INS[ref["key"]]


def _receiver(receiver: dict) -> dict:
    _only(receiver, {"name", "pagerdutyConfigs", "slackConfigs"}, "receiver")
    out = {"name": receiver["name"]}
    for pd in receiver.get("pagerdutyConfigs", []):
        _only(pd, {"routingKey", "sendResolved"}, "pagerdutyConfigs")
        out.setdefault("pagerduty_configs", []).append(
            {"routing_key": _secret(pd["routingKey"]), "send_resolved": pd["sendResolved"]})
    for slack in receiver.get("slackConfigs", []):
        _only(slack, {"apiURL", "sendResolved", "channel", "title", "text"}, "slackConfigs")
        out.setdefault("slack_configs", []).append({
            "api_url": _secret(slack["apiURL"]), "send_resolved": slack["sendResolved"],
            **{k: slack[k] for k in ("channel", "title", "text") if k in slack}})
    return out


def alertmanager_config(spec: dict) -> dict:
    _only(spec, {"route", "receivers", "inhibitRules"}, "spec")
    inhibit = []
    for rule in spec.get("inhibitRules", []):
        _only(rule, {"sourceMatch", "targetMatch", "equal"}, "inhibitRules")
        inhibit.append({"source_matchers": [_matcher(m) for m in rule["sourceMatch"]],
                        "target_matchers": [_matcher(m) for m in rule["targetMatch"]], "equal": rule["equal"]})
    return {"route": _route(spec["route"]), "receivers": [_receiver(r) for r in spec["receivers"]],
            "inhibit_rules": inhibit}


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
