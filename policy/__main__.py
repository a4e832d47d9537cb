"""Entry point the Pulumi CLI runs for `--policy-pack policy`: serves the rules in rules.py to the engine."""

import sys
from pathlib import Path

# The CLI runs this file as a script; the project root on the path makes `policy` importable as the package it is
# when llmctl and the tests import it.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policy.rules import POLICIES  # noqa: E402

PolicyPack("llm-platform", policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)
