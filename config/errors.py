"""The one exception type for bad stack configuration."""

from __future__ import annotations

from dataclasses import dataclass

# An echoed value longer than this is cut: a megabyte-long value makes the error unreadable.
SHOWN_CHARACTERS = 80


class _Hidden:
    """Stands in for a value the error must not repeat: a secret, or the value of a key that is not declared (a
    misspelt secret key is still a secret)."""

    def __repr__(self) -> str:
        return "[value not shown]"


HIDDEN = _Hidden()


def did_you_mean(value: object, choices) -> str:
    """' (did you mean X?)' for the choice closest to a misspelt value, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def shown(value: object) -> str:
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS - 20]}... ({len(text)} characters)"


@dataclass(frozen=True)
class Problem:
    key: str  # dotted path under the stack's config, e.g. "gpuPools.large.gpuLimit"
    value: object
    allowed: str

    def __str__(self) -> str:
        return f"{self.key}: got {shown(self.value)}; {self.allowed}"


EVERYTHING = "*"
"""`skipped` when no check across keys could run."""


class ConfigError(ValueError):
    """Raised with every problem found in a stack's configuration, not only the first. `skipped` names the keys
    whose own values were invalid, so the checks across keys left them out."""

    def __init__(self, stack: str, problems: list[Problem], skipped: list[str] | None = None):
        self.stack, self.problems, self.skipped = stack, problems, list(skipped or [])
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        lines = "\n".join(f"  - {p}" for p in problems)
        message = f"invalid configuration for stack '{stack}' ({count}):\n{lines}"
        if self.skipped == [EVERYTHING]:
            message += "\n  (checks across keys did not run: a required key is invalid; fix it and run again)"
        elif self.skipped:
            message += (f"\n  (checks across keys skipped {', '.join(self.skipped)}, whose own values are invalid: "
                        "fix those and run again)")
        super().__init__(message)
