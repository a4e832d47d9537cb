"""Shared fixtures. The whole program runs once per stack, in a subprocess (Pulumi mocks are process-wide)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import config

# Importing LiteLLM (the gateway's modules) would otherwise try to download its price list; tests stay offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Rendered:
    """What `llmctl plan` wrote for one stack, loaded back: the same artifacts a user reads."""

    stack: str
    out: Path
    stdout: str
    inventory: list[dict[str, Any]]
    manifests: list[dict[str, Any]]
    releases: dict[str, dict[str, Any]]
    outputs: dict[str, Any]

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.inventory if r["type"] == type_]

    def named(self, name: str, type_: str) -> dict[str, Any]:
        """Logical names are unique per type, not across types (a role and its access entry may share one)."""
        matches = [r for r in self.inventory if r["name"] == name and r["type"] == type_]
        assert len(matches) == 1, f"{len(matches)} {type_} named {name}"
        return matches[0]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    @property
    def config(self) -> config.StackConfig:
        return config.load_stack_file(ROOT, self.stack)


def pins(requirements: str) -> dict[str, str]:
    """name -> version of every `name==version` line of a requirements file under ROOT, without a local version
    label (2.13.0+cpu -> 2.13.0)."""
    lines = (ROOT / requirements).read_text().splitlines()
    return {name.lower(): version.split("+")[0]
            for name, version in (line.split("==") for line in lines if "==" in line and not line.startswith("#"))}


def render(stack: str, out: Path) -> Rendered:
    proc = subprocess.run(
        [sys.executable, "-m", "llmctl", "plan", stack, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return Rendered(
        stack=stack,
        out=out,
        stdout=proc.stdout,
        inventory=json.loads((out / "inventory.json").read_text()),
        manifests=[yaml.safe_load(p.read_text()) for p in sorted((out / "manifests").glob("*.yaml"))],
        releases={p.stem: yaml.safe_load(p.read_text()) for p in (out / "values").glob("*.yaml")},
        outputs=json.loads((out / "outputs.json").read_text()),
    )


@pytest.fixture(scope="session")
def dev(tmp_path_factory) -> Rendered:
    return render("dev", tmp_path_factory.mktemp("dev"))


@pytest.fixture(scope="session")
def prod(tmp_path_factory) -> Rendered:
    return render("prod", tmp_path_factory.mktemp("prod"))


@pytest.fixture(params=["dev", "prod"])
def stack(request) -> Rendered:
    return request.getfixturevalue(request.param)


def stack_values(stack: str) -> dict[str, Any]:
    """The `config:` map of a committed stack file, for tests that mutate one key."""
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def raw(values: dict[str, Any]) -> dict[str, Any]:
    """A stack file's `config:` map as config.parse takes it: by key, without the project prefix."""
    return {key: values.get(f"{config.PROJECT}:{key}") for key in config.KEYS}


def config_problems(values: dict[str, Any], stack: str = "prod") -> list[config.Problem]:
    """Every problem config.parse reports for these stack values (it must refuse them)."""
    with pytest.raises(config.ConfigError) as raised:
        config.parse(stack, raw(values))
    return raised.value.problems


@pytest.fixture(scope="session")
def gateways():
    """The real LiteLLM proxy as rendered, in front of stand-in model servers (tests/gateway_stand_in.py): `default`
    with the stack's default fallback rule, `strict` with fallbacksAcrossGrants false. Shared by the proxy and
    security tests, and stopped by PID at the end, pass or fail."""
    from tests import gateway_stand_in
    from tests.servers import StartupFailed

    configs = {"default": gateway_stand_in.stack_config(), "strict": gateway_stand_in.stack_config(False)}
    started = {}
    try:
        started = gateway_stand_in.start_gateways(ROOT / "build" / "test-gateway", configs)
        yield started
    except StartupFailed as error:
        pytest.fail(str(error))
    finally:
        gateway_stand_in.stop_gateways(started)
