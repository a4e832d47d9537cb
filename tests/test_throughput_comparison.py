"""`make throughput-compare` (tests/throughput_comparison.py) without AIConfigurator: what it reads from its output,
and that each case asks for the batch and shape the cost report assumes."""

from __future__ import annotations

import pytest

import config
from planning import cost
from tests import throughput_comparison as compare
from tests.conftest import ROOT

# AIConfigurator 0.12.0's estimate summary for the bf16 405B at TP 8 x PP 2 (its lines as printed, numbers from a run).
OUTPUT = """\
  Backend:          vllm (0.24.0)
  Batch Size:       32
  TPOT:             44.250 ms
  tokens/s:         1,446.32
  tokens/s/gpu:     90.40
  tokens/s/user:    22.60
  Concurrency:      32
"""


def fake(tmp_path, output: str, code: int = 0) -> str:
    """An executable that records its arguments and prints `output`."""
    script = tmp_path / "aiconfigurator"
    script.write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'argv'}\ncat <<'END'\n{output}END\nexit {code}\n")
    script.chmod(0o755)
    return str(script)


def test_throughput_is_the_per_user_rate_times_the_batch_not_the_doubled_pipeline_line(tmp_path):
    m = config.load_stack_file(ROOT, "prod").models["llama-405b-bf16"]
    tokens, tpot, release, printed = compare.estimate(fake(tmp_path, OUTPUT), m, "H100-80GB", 32)
    assert (tokens, tpot, release, printed) == (pytest.approx(22.60 * 32), 44.25, "0.24.0", 1446.32)
    argv = (tmp_path / "argv").read_text().split()
    assert argv[argv.index("--tp-size") + 1] == "8" and argv[argv.index("--pp-size") + 1] == "2"
    assert argv[argv.index("--batch-size") + 1] == "32" and argv[argv.index("--system") + 1] == "h100_sxm"
    assert "--gemm-quant-mode" not in argv  # bf16


def test_a_failed_or_unreadable_estimate_raises_with_its_output(tmp_path):
    m = config.load_stack_file(ROOT, "prod").models["llama-405b-fp8"]
    with pytest.raises(RuntimeError, match="exited 1"):
        compare.estimate(fake(tmp_path, "InsufficientMemoryError\n", 1), m, "H100-80GB", 32)
    with pytest.raises(RuntimeError, match="exited 0"):
        compare.estimate(fake(tmp_path, "nothing useful\n"), m, "H100-80GB", 32)
    assert "fp8" in (tmp_path / "argv").read_text()  # the FP8 checkpoint is estimated with FP8 GEMMs


def test_each_case_uses_the_cost_reports_batch_and_the_models_own_shape(tmp_path):
    rows = compare.compare(fake(tmp_path, OUTPUT))
    by_case = {(r.case.model_key, r.case.gpu): r for r in rows}
    l4 = by_case[("llama-8b", "L4")]
    assert l4.theirs is None and "no vLLM data for L4" in l4.why_not
    assert by_case[("llama-70b-tgi", "H100-80GB")].why_not == "AIConfigurator has no TGI backend"
    throughput, _ = compare.ours("llama-70b", "A100-80GB")
    row = by_case[("llama-70b", "A100-80GB")]
    assert (row.batch, row.ours, row.shape) == (throughput.concurrency, throughput.tokens_per_second, "TP 8")
    assert row.batch <= cost.ASSUMED_CONCURRENCY
    assert by_case[("llama-405b-bf16", "H100-80GB")].shape == "TP 8 x PP 2"
    assert "its tokens/s line says 1,446" in compare.report(rows)
