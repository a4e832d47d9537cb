"""Binaries and processes the tests run: promtool and prometheus from Debian's prometheus package, which `make tools` unpacks
into build/tools (no service installed or started). `make test` sets LLM_PLATFORM_TOOLS, and then a missing tool
fails the test instead of skipping it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tool(name: str) -> Path:
    required = os.environ.get("LLM_PLATFORM_TOOLS")
    path = Path(required or ROOT / "build" / "tools" / "usr" / "bin") / name
    if path.is_file():
        return path.resolve()
    if required:
        pytest.fail(f"{path} does not exist: `make tools` unpacks it from Debian's prometheus package")
    pytest.skip(f"{name} not unpacked: run `make tools` (make test does)")


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a server a test started, by its PID: politely, then for sure, never leaving it behind."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
