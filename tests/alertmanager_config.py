"""The rendered AlertmanagerConfig (the CRD's camelCase) converted to Alertmanager's own configuration file the way the
Prometheus Operator converts it, for the fields the platform uses; an unknown field fails the conversion rather
than being dropped. amtool (tests/test_alertmanager.py) and the end-to-end run's Alertmanager read the result."""

from __future__ import annotations

# Values for the Secrets the receivers reference, for amtool, which never sends anything.
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


def _receiver(receiver: dict, secrets: dict[str, str]) -> dict:
    _only(receiver, {"name", "pagerdutyConfigs", "slackConfigs"}, "receiver")
    out = {"name": receiver["name"]}
    for pd in receiver.get("pagerdutyConfigs", []):
        _only(pd, {"routingKey", "sendResolved"}, "pagerdutyConfigs")
        out.setdefault("pagerduty_configs", []).append(
            {"routing_key": secrets[pd["routingKey"]["key"]], "send_resolved": pd["sendResolved"]})
    for slack in receiver.get("slackConfigs", []):
        _only(slack, {"apiURL", "sendResolved", "channel", "title", "text"}, "slackConfigs")
        out.setdefault("slack_configs", []).append({
            "api_url": secrets[slack["apiURL"]["key"]], "send_resolved": slack["sendResolved"],
            **{k: slack[k] for k in ("channel", "title", "text") if k in slack}})
    return out


def alertmanager_config(spec: dict, secrets: dict[str, str] = STAND_INS) -> dict:
    """Secret references take their values from `secrets` (by the Secret's key)."""
    _only(spec, {"route", "receivers", "inhibitRules"}, "spec")
    inhibit = []
    for rule in spec.get("inhibitRules", []):
        _only(rule, {"sourceMatch", "targetMatch", "equal"}, "inhibitRules")
        inhibit.append({"source_matchers": [_matcher(m) for m in rule["sourceMatch"]],
                        "target_matchers": [_matcher(m) for m in rule["targetMatch"]], "equal": rule["equal"]})
    return {"route": _route(spec["route"]), "receivers": [_receiver(r, secrets) for r in spec["receivers"]],
            "inhibit_rules": inhibit}
