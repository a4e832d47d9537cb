"""The one exception type for bad stack configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    key: str  # dotted path under the stack's config, e.g. "gpuPools.large.gpuLimit"
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.key}: got {self.value!r}; {self.allowed}"


class ConfigError(ValueError):
    """Raised with every problem found in a stack's configuration, not only the first."""

    def __init__(self, stack: str, problems: list[Problem]):
        self.stack = stack
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration for stack '{stack}' ({count}):\n{lines}")
