"""`llmctl calibrate` and the planner's use of calibration records (planning/calibration.py, catalog/calibrations.yaml).

The logs are excerpts of public vLLM 0.19 start-up logs (tests/data/vllm_logs/, each with its source); the numbers
asserted below are read off those lines by eye, not from the parser.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest

from catalog.models import MODELS
from llmctl import calibrate as calibrate_cmd
from llmctl.__main__ import main
from planning import calibration, capacity
from tests import planner_accuracy
from tests.conftest import ROOT

LOGS = ROOT / "tests" / "data" / "vllm_logs"


def read(name: str) -> calibration.LogReading:
    return calibration.read_log((LOGS / f"{name}.log").read_text(), name)


@pytest.mark.parametrize("name, tp, weights, non_torch, activation, graphs, kv_gib, kv_tokens", [
    ("llama31-8b-h100-tp1", 1, 14.99, 0.25, 1.89, 0.84, 58.11, 476_016),
    ("llama31-8b-h100-tp2", 2, 7.51, 2.07, 1.89, 1.69, 63.76, 1_044_688),
    ("qwen25-72b-h100-tp2", 2, 67.8, 2.09, 2.29, 1.63, 3.04, 19_920),
    ("mixtral-8x7b-h100-tp2", 2, 43.51, 2.07, 1.21, 0.82, 28.44, 465_936),
])
def test_a_v019_log_gives_its_inputs_and_memory_split(name, tp, weights, non_torch, activation, graphs, kv_gib,
                                                       kv_tokens):
    r = read(name)
    assert (r.vllm, r.tensor_parallel_size, r.pipeline_parallel_size, r.max_model_len) == ("0.19.0", tp, 1, 8192)
    assert (r.max_num_seqs, r.max_num_batched_tokens, r.gpu_memory_utilization) == (1024, 8192, 0.95)
    assert (r.device, r.total_gib, r.quantization, r.kv_cache_dtype) == ("cuda", 79.19, "none", "auto")
    assert (r.weights_gib, r.non_torch_gib, r.activation_gib, r.cuda_graph_estimate_gib) == (
        weights, non_torch, activation, graphs)
    assert (r.kv_gib, r.kv_tokens) == (kv_gib, kv_tokens)
    assert r.cuda_graphs_applied is False  # 0.19 printed the estimate without taking it from the budget


# vLLM 0.32's INFO lines, from its format strings (vllm/v1/worker/gpu_worker.py determine_available_memory and
# gpu_model_runner.py; vllm/v1/core/kv_cache_utils.py), with the numbers of an 8B on an L40S at TP 1.
V032_LOG = """\
(APIServer pid=1) INFO 12-01 10:00:00 [utils.py:233] non-default args: {'model_tag': 'meta-llama/Llama-3.1-8B-Instruct', 'model': 'meta-llama/Llama-3.1-8B-Instruct', 'max_model_len': 8192, 'max_num_seqs': 256}
(APIServer pid=1) INFO 12-01 10:00:00 [scheduler.py:238] Chunked prefill is enabled with max_num_batched_tokens=2048.
(EngineCore pid=9) INFO 12-01 10:00:01 [core.py:105] Initializing a V1 LLM engine (v0.32.0) with config: model='meta-llama/Llama-3.1-8B-Instruct', dtype=torch.bfloat16, max_seq_len=8192, tensor_parallel_size=1, pipeline_parallel_size=1, quantization=None, kv_cache_dtype=auto, device_config=cuda, seed=0
(EngineCore pid=9) INFO 12-01 10:00:20 [gpu_model_runner.py:5150] Model loading took 14.99 GiB memory and 12.100000 seconds
(EngineCore pid=9) INFO 12-01 10:00:40 [gpu_model_runner.py:6475] Estimated CUDA graph memory: 0.61 GiB total
(EngineCore pid=9) INFO 12-01 10:00:40 [gpu_worker.py:760] Available KV cache memory: 23.11 GiB
(EngineCore pid=9) INFO 12-01 10:00:40 [gpu_worker.py:1035] Free memory on device (43.98/44.39 GiB) on startup. Desired GPU memory utilization is (0.92, 40.84 GiB). Actual usage is 15.29 GiB for consumed memory (weights + non-torch), 2.44 GiB for peak activation, and 0.58 GiB for CUDAGraph memory. Replace gpu_memory_utilization config with `--kv-cache-memory=24000000000` (22.35 GiB) to fit into requested memory, or `--kv-cache-memory=25000000000` (23.28 GiB) to fully utilize gpu memory. Current kv cache memory in use is 23.11 GiB.
(EngineCore pid=9) INFO 12-01 10:00:40 [kv_cache_utils.py:2327] GPU KV cache size: 189,312 tokens, Maximum concurrency for 8,192 tokens per request: 23.11x
"""


def test_a_v032_log_splits_consumed_memory_and_takes_the_graph_estimate_out_of_peak_activation():
    r = calibration.read_log(V032_LOG)
    assert (r.vllm, r.release, r.max_num_seqs, r.max_num_batched_tokens) == ("0.32.0", (0, 32), 256, 2048)
    assert (r.total_gib, r.gpu_memory_utilization) == (44.39, 0.92)
    assert r.non_torch_gib == pytest.approx(15.29 - 14.99)
    assert r.cuda_graphs_applied and r.activation_gib == pytest.approx(2.44 - 0.61)
    assert (r.kv_gib, r.kv_tokens) == (23.11, 189_312)
    record = calibration.record(r, "L40S", MODELS["llama-3.1-8b"], id="x", source="s", checked="2026-12-03")
    assert (record.vllm, record.gpu, record.tensor_parallel_size) == ("0.32", "L40S", 1)
    assert record.non_torch_gib == pytest.approx(0.30)
    # 256 sequences: 51 piecewise + 35 full captures (the planner's cuda_graph_captures), 32 layers
    assert record.cuda_graph_gib_per_layer_capture == pytest.approx(0.61 / (32 * 86), rel=1e-3)


def test_a_record_reproduces_its_own_log_when_the_planner_replays_it():
    """The loop closed on one log: sized with its own record, the planner's KV cache is the log's within a block
    per GiB of rounding in the printed figures."""
    r = read("llama31-8b-h100-tp2")
    record = calibration.record(r, "H100-80GB", MODELS["llama-3.1-8b"], id="tp2", source="s", checked="d")
    sizing = capacity.size(planner_accuracy.log_request(r, "H100-80GB", (record,)))
    assert sizing.overheads_from.startswith("calibration tp2")
    assert sizing.non_torch_gib_per_gpu == 2.07
    assert sizing.kv_cache_tokens == pytest.approx(r.kv_tokens, rel=0.002)


def test_the_planner_prefers_a_matching_record_and_says_so():
    records = calibration.shipped()
    base = capacity.SizingRequest(MODELS["qwen2.5-7b"], 79.19, "H100-80GB", tensor_parallel_size=2,
                                  max_model_len=8192, vllm_release="0.19")
    used = capacity.size(base)
    assert used.overheads_from.startswith("calibration llama31-8b-h100-tp2 (vLLM 0.19, H100-80GB, TP 2")
    [tp2] = [r for r in records if r.id == "llama31-8b-h100-tp2"]
    assert used.non_torch_gib_per_gpu == tp2.non_torch_gib
    general = capacity.size(replace(base, calibrations=()))
    assert general.overheads_from == "general formula"
    assert general.non_torch_gib_per_gpu == capacity.NON_TORCH_GIB + capacity.TP_COMM_GIB["nvlink"]
    # Another model's activation ratio is not borrowed: activations are the model's own.
    assert used.activation_gib_per_gpu == general.activation_gib_per_gpu
    for other in (replace(base, vllm_release="0.32"), replace(base, gpu_name="A100-80GB"),
                  replace(base, tensor_parallel_size=4, vllm_release="0.21"),
                  replace(base, pipeline_parallel_size=2)):
        assert capacity.size(other).overheads_from == "general formula", other


def test_the_shipped_records_are_what_calibrate_makes_of_their_logs(tmp_path):
    """catalog/calibrations.yaml is reviewed output, not hand-edited numbers: regenerating it from the logs it
    names gives the same terms."""
    shipped = {r.id: r for r in calibration.shipped()}
    assert shipped, "catalog/calibrations.yaml has no records"
    logs = [LOGS / f"{i}.log" for i in shipped]
    fresh = calibrate_cmd.records(argparse.Namespace(logs=logs, gpu=None, model=None, source=None), today="x")
    for r in fresh:
        assert replace(r, checked=shipped[r.id].checked) == shipped[r.id]
        assert shipped[r.id].source.startswith("https://github.com/") and shipped[r.id].checked


def test_no_held_out_log_made_a_record_and_a_leak_is_refused():
    rows = planner_accuracy.held_out()
    assert len(rows) >= 8 and all(r.reported > 0 for r in rows)
    assert all(abs(r.calibrated / r.reported - 1) < 0.06 for r in rows)
    leaked = calibrate_cmd.records(argparse.Namespace(
        logs=[LOGS / "qwen3-8b-h100-tp1.log"], gpu=None, model=None, source=None))
    with pytest.raises(AssertionError, match="held out but a calibration record was made from it"):
        planner_accuracy.held_out(calibration.shipped() + tuple(leaked))


def test_calibrate_writes_a_file_the_planner_can_load_and_replaces_records_by_id(tmp_path, capsys):
    out = tmp_path / "calibrations.yaml"
    for _ in range(2):
        assert main(["calibrate", str(LOGS / "llama31-8b-h100-tp4.log"), "--write", str(out)]) == 0
    [record] = calibration.load(out)
    assert (record.id, record.gpu, record.tensor_parallel_size, record.vllm, record.non_torch_gib) == (
        "llama31-8b-h100-tp4", "H100-80GB", 4, "0.19", 2.13)
    assert "non_torch_gib: 2.13" in capsys.readouterr().out


def test_write_refuses_an_unwritable_path_and_a_file_that_is_not_a_calibrations_file(tmp_path, capsys):
    log = str(LOGS / "llama31-8b-h100-tp4.log")
    assert main(["calibrate", log, "--write", str(tmp_path / "missing-dir" / "c.yaml")]) == 2
    assert "cannot update it (No such file or directory)" in capsys.readouterr().err
    other = tmp_path / "values.yaml"
    other.write_text("replicas: 3\n")
    assert main(["calibrate", log, "--write", str(other)]) == 2
    assert "not a calibrations file, left as it is" in capsys.readouterr().err
    assert other.read_text() == "replicas: 3\n"


def test_calibrate_names_every_problem_of_every_log(tmp_path, capsys):
    not_a_log = tmp_path / "notes.txt"
    not_a_log.write_text("hello\n")
    cpu = tmp_path / "cpu.log"
    cpu.write_text(V032_LOG.replace("device_config=cuda", "device_config=cpu"))
    foreign = tmp_path / "foreign.log"
    foreign.write_text(V032_LOG.replace("meta-llama/Llama-3.1-8B-Instruct", "acme/secret-model"))
    assert main(["calibrate", str(not_a_log), str(cpu), str(foreign), str(tmp_path / "missing.log"),
                 "--gpu", "L40S"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt: no 'Initializing a V1 LLM engine" in err
    assert "cpu.log: cannot calibrate from it: it ran on cpu, not a GPU" in err and "VLLM_CPU_KVCACHE_SPACE" in err
    assert "foreign.log: its model 'acme/secret-model' is not a catalog model's Hugging Face id; give --model" in err
    assert "missing.log: cannot read it" in err
    assert main(["calibrate", str(LOGS / "qwen3-8b-h100-tp1.log"), "--gpu", "A10G"]) == 2
    assert "measured 79.19 GiB of GPU memory, A10G has" in capsys.readouterr().err
    assert main(["calibrate", str(LOGS / "qwen3-8b-h100-tp1.log"), "--gpu", "B300"]) == 2
    assert "GPU 'B300' is not in the catalog; allowed:" in capsys.readouterr().err


def test_a_log_without_the_profile_lines_is_refused_naming_each_missing_line(tmp_path, capsys):
    cut = tmp_path / "cut.log"
    cut.write_text("\n".join(line for line in V032_LOG.splitlines()
                             if "Actual usage" not in line and "Model loading" not in line))
    assert main(["calibrate", str(cut), "--gpu", "L40S"]) == 2
    err = capsys.readouterr().err
    assert "missing the weights ('Model loading took X GiB')" in err
    assert "missing the memory outside PyTorch ('Actual usage is X GiB for consumed memory'" in err
    assert "missing the activation peak" in err and "max_num_seqs" not in err  # the args line still has it


def test_hostile_log_lines_give_a_clear_error_or_are_ignored(tmp_path, capsys):
    weird = tmp_path / "weird.log"
    weird.write_text(V032_LOG.replace("(v0.32.0)", "(v0)").replace("non-default args: {", "non-default args: {{{{["))
    assert main(["calibrate", str(weird), "--gpu", "L40S"]) == 2
    assert "the engine line's version '0' is not major.minor[.patch]" in capsys.readouterr().err
    deep = V032_LOG.replace("non-default args: {'model_tag'", "non-default args: {'x': " + "[" * 5000 + "]" * 5000
                            + ", 'model_tag'")
    assert calibration.read_log(deep).max_num_seqs is None  # the args could not be read: no guess from them


def test_an_oversized_file_is_refused_without_reading_it(tmp_path, capsys, monkeypatch):
    big = tmp_path / "big.log"
    big.write_bytes(b"x" * 2048)
    monkeypatch.setattr(calibrate_cmd, "MAX_LOG_BYTES", 1024)
    assert main(["calibrate", str(big), "--gpu", "L40S"]) == 2
    assert "larger than" in capsys.readouterr().err


def test_llmctl_size_says_which_overheads_it_used(capsys):
    args = ["size", "--model", "qwen2.5-7b", "--gpu", "H100-80GB", "--tp", "2", "--max-model-len", "8192"]
    assert main(args) == 0
    assert "overheads from       general formula" in capsys.readouterr().out  # no 0.32 record for H100 yet
    assert main([*args, "--vllm-release", "0.19"]) == 0
    assert "overheads from       calibration llama31-8b-h100-tp2" in capsys.readouterr().out


def test_cpu_kv_tokens_is_the_kv_space_in_whole_cpu_blocks_of_the_fullest_stage():
    m = MODELS["llama-3.1-8b"]  # 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes = 131,072 bytes per token
    assert capacity.cpu_kv_tokens(m, 1) == 1024**3 // (128 * 131_072) * 128 == 8192
    assert capacity.cpu_kv_tokens(m, 1, pipeline_parallel_size=2) == 16_384  # each stage holds half the layers
    assert capacity.cpu_kv_tokens(m, 1.5) == 12_288


@pytest.mark.parametrize("text, message", [
    ("- id: a\n  vllm: '0.32'\n  gpu: L4\n", "record 1 has no source, checked"),
    ("id: a\n", "expected a list of records, got dict"),
    ("- just a string\n", "record 1 is not a mapping"),
    ("- {id: a, source: s, checked: d, vllm: '0.32', gpu: L4, tensor_parallel_size: 1, model: m, non_torch_gib: lots,"
     " activation_ratio: 1}\n", "record 'a': non_torch_gib must be numbers from 0 to 1000"),
    ("- {id: a, source: s, checked: d, vllm: latest, gpu: L4, tensor_parallel_size: 1, model: m, non_torch_gib: 0.3,"
     " activation_ratio: 1}\n", "record 'a': vllm must be major.minor"),
])
def test_the_records_file_rejects_what_the_planner_could_not_use(tmp_path, text, message):
    bad = tmp_path / "c.yaml"
    bad.write_text(text)
    with pytest.raises(calibration.CalibrationError, match=message):
        calibration.load(bad)
    assert Path(calibration.RECORDS_FILE).name == "calibrations.yaml"


def test_plan_lists_each_models_planned_kv_and_which_overheads_it_used(prod, monkeypatch):
    from types import SimpleNamespace

    from llmctl import plan as plan_cmd
    assert "  llama-8b                 A10G 22,688, L4 22,688, L40S " in prod.stdout
    assert "overheads from general formula" in prod.stdout and "llama-70b-tgi " not in prod.stdout.split(
        "KV capacity per replica")[1].split("\n\n")[0]
    # A reviewed vLLM 0.32 record for H100 at TP 8 is used for the 70B on p5 (not on p4de's A100) and named.
    record = calibration.Calibration("h100-tp8-v032", "cluster log", "2026-12-03", "0.32", "H100-80GB", 8,
                                     "llama-3.1-70b", 2.5, 1.0, 0.0003)
    monkeypatch.setattr(calibration, "shipped", lambda: (record,))
    [line] = [line for line in plan_cmd._kv_capacity_lines(SimpleNamespace(cfg=prod.config))
              if line.startswith("  llama-70b ")]
    assert "overheads from calibration h100-tp8-v032 (vLLM 0.32, H100-80GB, TP 8, cluster log) and general formula" \
        in line


def test_a_vllm_record_is_never_applied_to_a_tgi_model(monkeypatch):
    from config import load_stack_file
    from config.checks import sizing_request
    record = calibration.Calibration("h100-tp1-v032", "cluster log", "2026-12-03", capacity.VLLM_RELEASE,
                                     "H100-80GB", 1, "llama-3.1-70b", 9.0, 1.0, None)
    monkeypatch.setattr(calibration, "shipped", lambda: (record,))
    models = load_stack_file(ROOT, "prod").models
    on_h100 = {"gpu_memory_gib": 79.22, "gpu_name": "H100-80GB"}
    tgi = capacity.size(replace(sizing_request(models["llama-70b-tgi"]), **on_h100))
    assert tgi.overheads_from == "general formula"
    vllm_model = replace(sizing_request(models["llama-70b-tgi"].model_copy(update={"engine": "vllm"})), **on_h100)
    assert capacity.size(vllm_model).overheads_from.startswith("calibration h100-tp1-v032")
