"""Stack files written to a scratch project (a copy of Pulumi.yaml and a link to __main__.py), so tests can run
`llmctl plan` on text a careless or hostile user wrote without touching the committed stacks."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

from llmctl.__main__ import main
from tests.conftest import ROOT


def scratch_project(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    if not (folder / "__main__.py").exists():
        (folder / "__main__.py").symlink_to(ROOT / "__main__.py")
    return folder


@dataclass
class PlanRun:
    code: int
    stdout: str
    stderr: str
    out: Path

    def written(self) -> str:
        """Everything the plan wrote, as one text."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.out.rglob("*")) if p.is_file())


def plan(project: Path, stack_text: str | bytes, stack: str = "test") -> PlanRun:
    """`llmctl plan <stack>` in this process on a stack file with this text. Anything that escapes main() is raised:
    a test fails on it, as a user would see a traceback."""
    path = project / f"Pulumi.{stack}.yaml"
    path.write_bytes(stack_text.encode() if isinstance(stack_text, str) else stack_text)
    out = project / "out"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["plan", stack, "--out", str(out)], project_dir=project)
    return PlanRun(code, stdout.getvalue(), stderr.getvalue(), out)
