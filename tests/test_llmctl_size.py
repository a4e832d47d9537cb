"""`llmctl size` as a user runs it: flags in, a table or one JSON object out, exit 2 with a message on bad input."""

import json
import subprocess
import sys

import pytest

from llmctl.__main__ import main
from tests.conftest import ROOT


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["size", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_documented_command_prints_one_json_object():
    done = subprocess.run([sys.executable, "-m", "llmctl", "size", "--model", "llama-3.1-70b", "--gpu", "H100-80GB",
                           "--tp", "4", "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    for key in ("weights_gib_per_gpu", "overhead_gib_per_gpu", "kv_cache_gib_per_gpu", "kv_cache_tokens",
                "max_concurrency", "fits", "reason"):
        assert key in result
    assert result["kv_bytes_per_token"] == 327_680
    assert result["kv_bytes_per_token_per_gpu"] == 81_920
    assert result["fits"] is True


def test_table_output_says_whether_it_fits(capsys):
    code, out, _ = run(capsys, "--model", "llama-3.1-70b", "--gpu", "A10G", "--max-model-len", "8192")
    assert code == 0
    assert "fits                 NO" in out
    assert "A10G has 20.2 GiB at utilization 0.92" in out


def test_model_config_json_and_explicit_gpu_memory(capsys, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                                "num_key_value_heads": 8, "intermediate_size": 14336, "vocab_size": 128256,
                                "max_position_embeddings": 131072}))
    code, out, _ = run(capsys, "--model-config", str(path), "--gpu-memory-gib", "40", "--max-model-len", "8192",
                       "--json")
    assert code == 0
    assert json.loads(out)["kv_bytes_per_token"] == 131_072


def test_recommend_lists_instances_cheapest_first_with_the_tp_they_need(capsys):
    code, out, _ = run(capsys, "--model", "llama-3.1-70b", "--max-model-len", "32768", "--concurrency", "4",
                       "--recommend", "--json")
    options = json.loads(out)
    assert code == 0 and options
    prices = [o["on_demand_usd_per_hour"] for o in options]
    assert prices == sorted(prices)
    assert all(o["max_concurrency"] >= 4 and o["tensor_parallel_size"] <= o["gpus"] for o in options)
    assert all(0 < o["spot_estimate_usd_per_hour"] < o["on_demand_usd_per_hour"] for o in options)
    assert not any(o["gpu"] in ("A10G", "L4") and o["tensor_parallel_size"] == 1 for o in options)
    # The TP overhead follows the link (planning/capacity.py), so each option says which one it was sized for.
    links = {o["instance_type"].split(".")[0]: o["interconnect"] for o in options}
    assert links["g6e"] == "pcie" and links["p5"] == "nvlink"


@pytest.mark.parametrize("args, message", [
    (["--model", "llama-9", "--gpu", "H100-80GB"], "--model: unknown model 'llama-9'; allowed:"),
    (["--model", "llama-3.1-8b", "--gpu", "V100"], "--gpu 'V100': unknown GPU; allowed: A10G"),
    (["--model", "llama-3.1-70b", "--gpu", "H100-80GB", "--tp", "3"], "--tp 3: must divide"),
    (["--model", "llama-3.1-8b", "--gpu-memory-gib", "0"], "--gpu-memory-gib 0.0: must be positive"),
    (["--model", "llama-3.1-8b", "--gpu-memory-gib", "nan"], "--gpu-memory-gib nan: must be more than 0 and at most"),
    (["--model", "llama-3.1-8b", "--gpu-memory-gib", "1e308"], "at most 4096 GiB"),
    (["--model", "llama-3.1-8b", "--gpu", "L4", "--max-num-seqs", "10000000000"], "must be at most 65,536"),
    (["--model-config", "/dev/zero", "--gpu", "L4"], "is larger than 1048576 bytes"),
    (["--model", "llama-3.1-8b", "--gpu", "H100-80GB", "--max-model-len", "-5"], "--max-model-len -5: must be"),
    (["--model", "llama-3.1-8b"], "give --gpu NAME or --gpu-memory-gib N"),
    (["--model", "llama-3.1-8b", "--recommend", "--max-model-len", "999999"], "above llama-3.1-8b's max_position"),
    (["--model-config", "/nonexistent/config.json", "--gpu", "L4"], "--model-config: cannot read model config"),
])
def test_bad_input_exits_2_with_a_message_and_no_traceback(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(("config_json", "message"), [
    ("[1]", "config.json must be a JSON object"),
    ('{"hidden_size": "x", "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 4, '
     '"vocab_size": 10}', "config.json hidden_size: got 'x'; must be a whole number from 1"),
    ('{"hidden_size": 0, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 4, '
     '"vocab_size": 10}', "config.json hidden_size: got '0'"),
    ('{"hidden_size": 1e400, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 4, '
     '"vocab_size": 10}', "config.json hidden_size: got 'inf'"),
    ("[" * 100_000, "cannot read model config"),
])
def test_a_hostile_config_json_is_an_error_not_a_traceback_or_a_hang(capsys, tmp_path, config_json, message):
    path = tmp_path / "config.json"
    path.write_text(config_json)
    code, out, err = run(capsys, "--model-config", str(path), "--gpu", "L4")
    assert (code, out) == (2, "") and message in err, err
