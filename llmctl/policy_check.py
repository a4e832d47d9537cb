"""Apply the CrossGuard pack in policy/ to a plan offline, the way `pulumi preview --policy-pack policy` applies it.

Each recorded resource becomes the arguments pulumi-policy's analyzer would build: resource policies read its
inputs, stack policies read every resource's outputs with their property dependencies; secrets unwrapped, as the
analyzer unwraps them. The policy config is policy/config/<stack>.json, the file the workflows pass with
--policy-pack-config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

from llmctl.mocks import Recording, plain
from policy.rules import POLICIES

POLICY_DIR = Path(__file__).resolve().parent.parent / "policy"


@dataclass(frozen=True)
class Subject:
    """One resource as a policy sees it."""
    type: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None = None  # defaults to the inputs
    urn: str = ""
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)

    @property
    def resource_urn(self) -> str:
        return self.urn or f"urn:pulumi:offline::llm-platform::{self.type}::{self.name}"


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # "mandatory" or "advisory"
    resource: str  # "<type> <name>", or "stack" for a stack policy's finding with no resource
    message: str


def subjects(recording: Recording) -> list[Subject]:
    return [Subject(r.type, r.name, plain(r.inputs, reveal_secrets=True), plain(r.outputs, reveal_secrets=True),
                    r.urn, r.property_dependencies)
            for r in sorted(recording.resources, key=lambda r: (r.type, r.name))]


def stack_policy_config(stack: str, policy_dir: Path = POLICY_DIR) -> dict[str, dict[str, Any]]:
    path = policy_dir / "config" / f"{stack}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _config_for(policy, config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The policy's configured values over its schema's defaults, as the CLI hands them to a policy."""
    defaults = {key: spec["default"] for key, spec in (policy.config_schema.properties if policy.config_schema else {}).items()
                if "default" in spec}
    return {**defaults, **{k: v for k, v in config.get(policy.name, {}).items() if k != "enforcementLevel"}}


def _level(policy, config: dict[str, dict[str, Any]]) -> EnforcementLevel:
    configured = config.get(policy.name, {}).get("enforcementLevel")
    return EnforcementLevel(configured) if configured else (policy.enforcement_level or EnforcementLevel.ADVISORY)


def evaluate(items: list[Subject], config: dict[str, dict[str, Any]] | None = None, policies=POLICIES) -> list[Violation]:
    config = config or {}
    options = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])
    by_urn = {s.resource_urn: s for s in items}
    stack_resources = {s.resource_urn: PolicyResource(s.type, s.outputs if s.outputs is not None else s.inputs,
                                                      s.resource_urn, s.name, options, None, None, [], {})
                       for s in items}
    for s in items:
        stack_resources[s.resource_urn].property_dependencies.update({
            key: [stack_resources[u] for u in urns if u in stack_resources]
            for key, urns in s.property_dependencies.items()})

    found: list[Violation] = []
    for policy in policies:
        level = _level(policy, config)
        if level == EnforcementLevel.DISABLED:
            continue
        policy_config = _config_for(policy, config)

        def reporter(default_resource: str, policy=policy, level=level):
            """report_violation: a message, and the URN of the resource at fault when it is not the one checked."""
            def report(message: str, urn: str | None = None) -> None:
                subject = by_urn.get(urn or "")
                resource = f"{subject.type} {subject.name}" if subject else default_resource
                found.append(Violation(policy.name, level.value, resource, message))
            return report

        if isinstance(policy, ResourceValidationPolicy):
            for s in items:
                args = ResourceValidationArgs(s.type, s.inputs, s.resource_urn, s.name, options, None, policy_config)
                policy.validate(args, reporter(f"{s.type} {s.name}"))
        elif isinstance(policy, StackValidationPolicy):
            policy.validate(StackValidationArgs(list(stack_resources.values()), policy_config), reporter("stack"))
    return found


def check(recording: Recording, stack: str) -> list[Violation]:
    return evaluate(subjects(recording), stack_policy_config(stack))


def report_lines(violations: list[Violation], config: dict[str, dict[str, Any]] | None = None,
                 policies=POLICIES) -> list[str]:
    """Each rule's result; the levels are the ones the stack's policy config gives."""
    mandatory = sum(1 for p in policies if _level(p, config or {}) == EnforcementLevel.MANDATORY)
    lines = [f"Policies (policy/, the CrossGuard pack `pulumi preview --policy-pack policy` runs; {mandatory} "
             f"mandatory, {len(policies) - mandatory} advisory):"]
    for policy in policies:
        own = [v for v in violations if v.policy == policy.name]
        mark = "ok" if not own else ("FAIL" if own[0].level == EnforcementLevel.MANDATORY.value else "warn")
        if _level(policy, config or {}) == EnforcementLevel.DISABLED:
            mark = "off"
        lines.append(f"  {mark:<4}  {policy.name:<40} {policy.description}")
        lines += [f"          {v.resource}: {v.message}" for v in own]
    return lines
