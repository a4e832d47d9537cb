"""`llmctl verify`: the running servers' reported KV capacity against the plan, from a Prometheus answer (saved, or
from a stand-in Prometheus on 127.0.0.1) and from start-up logs. The planned numbers come from the planner
(`config.checks.kv_plans`); what is asserted is the comparison, its verdicts and its errors."""

from __future__ import annotations

import http.server
import json
import sys
import time
import urllib.parse

import pytest

import config
from config.checks import kv_plans
from llmctl import verify
from llmctl.__main__ import main
from tests.conftest import ROOT
from tests.local_http import serve

PROD = config.load_stack_file(ROOT, "prod")


def planned(key: str) -> dict[str, int]:
    m = PROD.models[key]
    return {gpu: s.kv_cache_tokens for gpu, s in kv_plans(m, PROD.gpu_pools[m.gpu_pool]).items()}


def series(model: str, pod: str, tokens: int | None) -> dict:
    labels = {"__name__": "vllm:cache_config_info", "namespace": "llm-inference", "model": model, "pod": pod,
              "block_size": "16", "engine": "0"}
    if tokens is not None:
        labels["kv_cache_size_tokens"] = str(tokens)
    return {"metric": labels, "value": [1764756000, "1"]}


def answer(*items: dict) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": list(items)}}


def run(tmp_path, capsys, body: dict | str, *extra: str) -> tuple[int, str, str]:
    saved = tmp_path / "answer.json"
    saved.write_text(body if isinstance(body, str) else json.dumps(body))
    code = main(["verify", "prod", "--prometheus-json", str(saved), *extra], project_dir=ROOT)
    out, err = capsys.readouterr()
    return code, out, err


def row(out: str, pod: str) -> str:
    [line] = [line for line in out.splitlines() if f" {pod} " in line]
    return line


def test_servers_near_the_plan_of_some_pool_gpu_pass_and_each_is_matched_to_the_closest(tmp_path, capsys):
    small, large = planned("llama-8b"), planned("llama-70b")
    code, out, _ = run(tmp_path, capsys, answer(
        series("llama-8b", "llama-8b-a", small["L4"]),
        series("llama-8b", "llama-8b-b", round(small["L40S"] * 1.05)),
        series("llama-70b", "llama-70b-a", round(large["A100-80GB"] * 1.02))))
    assert code == 0, out
    assert " A10G/L4 " in row(out, "llama-8b-a") and "+0.0%" in row(out, "llama-8b-a")  # planned alike
    assert " L40S " in row(out, "llama-8b-b") and "+5.0%" in row(out, "llama-8b-b")
    assert " A100-80GB " in row(out, "llama-70b-a") and "+2.0%" in row(out, "llama-70b-a")
    assert all(row(out, p).endswith("ok") for p in ("llama-8b-a", "llama-8b-b", "llama-70b-a"))
    assert "note: llama-70b-tgi: TGI publishes no KV capacity; not verified" in out
    assert "note: llama-405b-bf16: no server reported (scaled to zero, or not running)" in out


def test_a_server_off_plan_fails_the_run_names_it_and_points_to_calibrate(tmp_path, capsys):
    large = planned("llama-70b")
    off = round(min(large.values()) * 0.85)
    code, out, _ = run(tmp_path, capsys, answer(series("llama-70b", "llama-70b-a", off),
                                                series("llama-70b", "llama-70b-b", large["H100-80GB"])))
    assert code == 1
    assert "off plan by more than 10%" in row(out, "llama-70b-a") and row(out, "llama-70b-b").endswith("ok")
    assert "FAILED: 1 of 2 servers differ from the plan" in out and "llmctl calibrate" in out
    # The same server passes a looser threshold.
    assert run(tmp_path, capsys, answer(series("llama-70b", "llama-70b-a", off)), "--threshold", "0.2")[0] == 0


def test_a_server_that_cannot_hold_one_full_request_fails_whatever_the_plan(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, answer(series("llama-8b", "llama-8b-a", 4096)))
    assert code == 1 and "less KV than one 8,192-token request (maxModelLen)" in row(out, "llama-8b-a")


def test_series_that_are_not_the_stacks_and_servers_without_the_label_are_reported_not_guessed(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, answer(series("someone-elses", "x-0", 1000),
                                                series("llama-8b", "llama-8b-a", None)))
    assert code == 1
    assert "a server labelled model='someone-elses' (x-0) is not a vLLM model of this stack; skipped" in out
    assert row(out, "llama-8b-a").endswith("reports no KV capacity")


def test_label_values_reach_the_terminal_escaped(tmp_path, capsys):
    """A saved answer is anyone's file: a pod label with escape sequences must not drive the operator's terminal."""
    hostile = "p\x1b]0;owned\x07\x1b[2J"
    code, out, _ = run(tmp_path, capsys, answer(series("llama-8b", hostile, planned("llama-8b")["L4"]),
                                                series("other", hostile, 1000)))
    assert code == 0 and "\x1b" not in out
    assert "p\\x1b]0;owned\\x07\\x1b[2J" in out  # shown, escaped, in the row and in the skipped note


def test_no_server_at_all_is_a_failure_not_a_pass(tmp_path, capsys):
    code, out, _ = run(tmp_path, capsys, answer())
    assert code == 1 and "FAILED: no server of this stack reported anything" in out


@pytest.mark.parametrize("body, message", [
    ("<html>login</html>", "not JSON"),
    ({"status": "error", "error": "bad query"}, "not a successful Prometheus answer (status 'error')"),
    ({"status": "success", "data": {"resultType": "matrix", "result": []}}, "expected an instant vector"),
    ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {"a": 1}}]}},
     "a result without a label set"),
    ([1, 2], "not a successful Prometheus answer"),
])
def test_an_answer_that_is_not_prometheus_is_refused_with_what_was_wrong(tmp_path, capsys, body, message):
    code, _, err = run(tmp_path, capsys, body)
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    ([], "give what the servers report"),
    (["--prometheus", "ftp://example.com"], "expected an http:// or https:// URL"),
    (["--prometheus", "http://[::1"], "expected an http:// or https:// URL"),
    (["--log", "llama-8b"], "expected MODEL=PATH"),
    (["--log", "nope=x.log"], "'nope' is not a model of the stack; allowed:"),
    (["--log", "llama-70b-tgi=x.log"], "llama-70b-tgi runs on tgi; only vLLM logs are read"),
    (["--log", "llama-8b=/nonexistent.log"], "/nonexistent.log: cannot read it"),
    (["--prometheus-json", "x.json", "--threshold", "1.5"], "--threshold 1.5: must be between 0 and 1"),
    (["--prometheus-json", "x.json", "--cpu-kv-space-gib", "-1"], "--cpu-kv-space-gib -1.0: must be more than 0"),
    (["--prometheus-json", "x.json", "--model-config", "llama-8b=/nonexistent/config.json"],
     "--model-config llama-8b=/nonexistent/config.json: cannot read model config"),
])
def test_bad_arguments_exit_2_with_a_clear_error(capsys, args, message):
    assert main(["verify", "prod", *args], project_dir=ROOT) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_start_up_log_is_judged_like_a_server_with_its_memory_split_beside_the_plan(capsys):
    """A vLLM 0.19 log of Llama-3.1-8B on an H100 at 0.95, against prod's llama-8b (pool of A10G, L4, L40S): far
    off every plan, and its weights are shown beside the planned weights per GPU."""
    log = ROOT / "tests" / "data" / "vllm_logs" / "llama31-8b-h100-tp1.log"
    assert main(["verify", "prod", "--log", f"llama-8b={log}"], project_dir=ROOT) == 1
    out = capsys.readouterr().out
    line = row(out, "log")
    assert "476,016" in line and " L40S " in line and "off plan" in line
    assert "per GPU, logged / planned GiB: weights 14.99 / 14.99" in out


def test_on_a_cpu_the_plan_is_the_kv_space_in_cpu_blocks(tmp_path, capsys):
    # llama-3.1-8b: 131,072 KV bytes per token; 2 GiB in blocks of 128 tokens is 16,384 tokens.
    code, out, _ = run(tmp_path, capsys, answer(series("llama-8b", "llama-8b-a", 16_384)), "--cpu-kv-space-gib", "2")
    assert code == 0 and " cpu " in row(out, "llama-8b-a") and "16,384" in row(out, "llama-8b-a")


class _StandIn(http.server.BaseHTTPRequestHandler):
    """A Prometheus stand-in on 127.0.0.1: answers /api/v1/query with `body`, records the query asked."""
    body: bytes = b""
    asked: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.asked.append(urllib.parse.unquote(self.path))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def test_verify_queries_a_live_prometheus_for_the_inference_namespaces_servers(capsys):
    _StandIn.body = json.dumps(answer(series("llama-8b", "llama-8b-a", planned("llama-8b")["L4"]))).encode()
    _StandIn.asked = []
    server = serve(_StandIn)
    try:
        assert main(["verify", "prod", "--prometheus", server.url], project_dir=ROOT) == 0
        assert _StandIn.asked == ['/api/v1/query?query=vllm:cache_config_info{namespace="llm-inference"}']
    finally:
        server.stop()
    closed = server.url  # nothing listens there now
    assert main(["verify", "prod", "--prometheus", closed], project_dir=ROOT) == 2
    assert "cannot query it" in capsys.readouterr().err


def test_the_threshold_default_is_the_alerts_tolerance():
    from components.observability.signals import KV_PLAN_TOLERANCE
    assert verify.DEFAULT_THRESHOLD == float(KV_PLAN_TOLERANCE) == 0.1


# Saved from `make e2e` (tests/data/verify/, tests/data/vllm_logs/e2e-cpu-tiny-v032.log): what three real vLLM 0.32 CPU
# servers reported through the run's Prometheus, and one's start-up log.

def test_the_saved_answer_of_the_e2e_servers_verifies_against_their_cpu_plan(tmp_path):
    from tests.e2e import stack, tiny_model
    config_json = tiny_model.write_config(tmp_path / "tiny") / "config.json"
    saved = ROOT / "tests" / "data" / "verify" / "e2e-cache-config-info.json"
    common = ["--prometheus-json", str(saved), *[a for key in stack.SERVED
                                                 for a in ("--model-config", f"{key}={config_json}")]]
    right = verify.compare(stack.stack_config(), verify.arguments("e2e", *common, "--cpu-kv-space-gib", "1"))
    assert right.ok and [(r.model, r.server, r.planned, r.actual) for r in right.rows] == [
        ("large", "large-0", 4_194_304, 4_194_304), ("small", "small-0", 4_194_304, 4_194_304),
        ("small", "small-1", 4_194_304, 4_194_304)]
    wrong = verify.compare(stack.stack_config(), verify.arguments("e2e", *common, "--cpu-kv-space-gib", "1.2"))
    assert not wrong.ok and {r.problem for r in wrong.rows} == {"off plan by more than 10%"}  # -16.7%
    # Without the checkpoint's shape the servers are held to the catalog 8B on the pool's GPUs: far off.
    catalog = verify.compare(stack.stack_config(), verify.arguments("e2e", "--prometheus-json", str(saved)))
    assert not catalog.ok


def test_a_saved_cpu_servers_log_is_read_and_refused_for_calibration(capsys):
    log = ROOT / "tests" / "data" / "vllm_logs" / "e2e-cpu-tiny-v032.log"
    from planning import calibration
    reading = calibration.read_log(log.read_text())
    assert (reading.vllm, reading.device, reading.kv_tokens, reading.max_model_len) == ("0.32.0", "cpu", 4_194_304,
                                                                                      2048)
    assert main(["calibrate", str(log), "--gpu", "L40S", "--model", "llama-3.1-8b"]) == 2
    assert "it ran on cpu, not a GPU" in capsys.readouterr().err


# --kubectl-logs: a stand-in kubectl that answers from a script and records how it was called --------------------

FAKE_KUBECTL = """#!{python}
import json, pathlib, sys, time
here = pathlib.Path(__file__).parent
args = sys.argv[1:]
with (here / "calls.jsonl").open("a") as calls:
    calls.write(json.dumps(args) + "\\n")
script = json.loads((here / "script.json").read_text())
verb = args[0]
if verb in script.get("sleep", {{}}):
    time.sleep(script["sleep"][verb])
if verb in script.get("fail", {{}}):
    sys.stderr.write(script["fail"][verb] + "\\n")
    sys.exit(1)
if verb == "get":
    selector = args[args.index("-l") + 1]
    pods = script["pods"].get(selector, [])
    if isinstance(pods, str):
        sys.stdout.write(pods)
    else:
        sys.stdout.write(json.dumps({{"items": [{{"metadata": {{"name": n}}, "status": {{"phase": p}}}}
                                                for n, p in pods]}}))
elif verb == "logs":
    sys.stdout.buffer.write(pathlib.Path(script["logs"][args[3]]).read_bytes())
"""
LOGS = ROOT / "tests" / "data" / "vllm_logs"
SELECTOR_8B = "app.kubernetes.io/component=model-server,app.kubernetes.io/instance=llama-8b"


def fake_kubectl(tmp_path, script: dict) -> tuple[str, callable]:
    path = tmp_path / "kubectl"
    path.write_text(FAKE_KUBECTL.format(python=sys.executable))
    path.chmod(0o755)
    (tmp_path / "script.json").write_text(json.dumps(script))

    def calls() -> list[list[str]]:
        log = tmp_path / "calls.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return str(path), calls


def test_kubectl_logs_reads_every_running_server_and_notes_a_log_without_its_start_up_lines(tmp_path, capsys):
    rotated = tmp_path / "rotated.log"
    rotated.write_text("INFO 12-03 08:00:00 [loggers.py:123] Engine 000: Avg prompt throughput: 1.0 tokens/s\n")
    kubectl, calls = fake_kubectl(tmp_path, {
        "pods": {SELECTOR_8B: [["llama-8b-7d9f-abcde", "Running"], ["llama-8b-7d9f-fghij", "Pending"],
                               ["llama-8b-7d9f-klmno", "Running"]]},
        "logs": {"llama-8b-7d9f-abcde": str(LOGS / "llama31-8b-h100-tp1.log"), "llama-8b-7d9f-klmno": str(rotated)}})
    code = main(["verify", "prod", "--kubectl-logs", "--kubectl", kubectl], project_dir=ROOT)
    out = capsys.readouterr().out
    # An H100 log against prod's L4/A10G/L40S pool: far off, and judged like a --log file.
    assert code == 1 and "476,016" in row(out, "llama-8b-7d9f-abcde (log)") and "off plan" in out
    assert "per GPU, logged / planned GiB: weights 14.99 / 14.99" in out
    [note] = [line for line in out.splitlines() if "llama-8b-7d9f-klmno" in line]
    assert note.startswith("note: llama-8b: llama-8b-7d9f-klmno's log was not read: kubelet rotates")
    assert "no 'Initializing a V1 LLM engine (vX) with config:' line" in note
    assert "llama-8b-7d9f-fghij" not in out  # Pending: no server, no log
    made = calls()
    gets = [c for c in made if c[0] == "get"]
    assert ["get", "pods", "-n", "llm-inference", "-l", SELECTOR_8B, "-o", "json", "--request-timeout=30s"] in gets
    # The multi-node model: only each group's leader serves and logs the engine's start-up.
    [lws] = [c for c in gets if "app.kubernetes.io/instance=llama-405b-bf16" in c[5]]
    assert "leaderworkerset.sigs.k8s.io/worker-index=0" in lws[5].split(",")
    assert not [c for c in gets if "llama-70b-tgi" in c[5]]  # TGI publishes no KV capacity
    assert [c for c in made if c[0] == "logs"] == [
        ["logs", "-n", "llm-inference", pod, "-c", "vllm", "--limit-bytes=67108864", "--request-timeout=30s"]
        for pod in ("llama-8b-7d9f-abcde", "llama-8b-7d9f-klmno")]


@pytest.mark.parametrize("script, message", [
    ({"fail": {"get": "error: You must be logged in to the server (Unauthorized)"}},
     "`kubectl get pods -n llm-inference -l app.kubernetes.io/component=model-server,app.kubernetes.io/instance="
     "llama-405b-bf16,leaderworkerset.sigs.k8s.io/worker-index=0 -o json` failed (exit 1): error: You must be logged in"),
    ({"pods": {SELECTOR_8B: "<html>proxy login</html>"}}, "not a pod list ('<html>proxy login</html>')"),
    ({"pods": {SELECTOR_8B: [["--all-namespaces", "Running"]]}}, "not pod names: ['--all-namespaces']"),
])
def test_a_failing_kubectl_exits_2_naming_the_command_and_its_error(tmp_path, capsys, script, message):
    kubectl, _ = fake_kubectl(tmp_path, script)
    assert main(["verify", "prod", "--kubectl-logs", "--kubectl", kubectl], project_dir=ROOT) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --kubectl-logs: ") and message in err and "Traceback" not in err


def test_a_pod_whose_log_kubectl_cannot_read_is_a_note_and_the_run_fails_with_nothing_verified(tmp_path, capsys):
    kubectl, _ = fake_kubectl(tmp_path, {"pods": {SELECTOR_8B: [["llama-8b-a", "Running"]]},
                                         "fail": {"logs": 'container "vllm" in pod "llama-8b-a" is waiting to start'}})
    assert main(["verify", "prod", "--kubectl-logs", "--kubectl", kubectl], project_dir=ROOT) == 1
    out = capsys.readouterr().out
    assert ("note: llama-8b: llama-8b-a's log was not read: `kubectl logs -n llm-inference llama-8b-a -c vllm "
            '--limit-bytes=67108864` failed (exit 1): container "vllm" in pod "llama-8b-a" is waiting to start') in out
    assert "FAILED: no server of this stack reported anything" in out


def test_a_pod_log_of_binary_garbage_is_a_note_not_a_crash(tmp_path, capsys):
    garbage = tmp_path / "garbage.log"
    garbage.write_bytes(bytes(range(256)) * 4096 + b"\xff\xfe")
    kubectl, _ = fake_kubectl(tmp_path, {"pods": {SELECTOR_8B: [["llama-8b-a", "Running"]]},
                                         "logs": {"llama-8b-a": str(garbage)}})
    assert main(["verify", "prod", "--kubectl-logs", "--kubectl", kubectl], project_dir=ROOT) == 1
    out, err = capsys.readouterr()
    assert "note: llama-8b: llama-8b-a's log was not read: kubelet rotates" in out and not err


def test_a_missing_or_hung_kubectl_is_a_clear_error_in_bounded_time(tmp_path, capsys, monkeypatch):
    assert main(["verify", "prod", "--kubectl-logs", "--kubectl", str(tmp_path / "nope")], project_dir=ROOT) == 2
    assert "not found; install kubectl or give its path" in capsys.readouterr().err
    kubectl, _ = fake_kubectl(tmp_path, {"sleep": {"get": 60}})
    monkeypatch.setattr(verify.kubectl, "PROCESS_TIMEOUT_SECONDS", 1)
    started = time.monotonic()
    assert main(["verify", "prod", "--kubectl-logs", "--kubectl", kubectl], project_dir=ROOT) == 2
    assert time.monotonic() - started < 30
    assert "did not finish within 1 s" in capsys.readouterr().err


def test_kubectl_logs_verifies_the_e2e_servers_from_a_real_vllm_0_32_log(tmp_path):
    """The saved log of one of `make e2e`'s real vLLM CPU servers, served by each pod the stand-in kubectl lists."""
    from components.serving.model_server import endpoint_selector
    from tests.e2e import stack, tiny_model
    cfg = stack.stack_config()
    config_json = tiny_model.write_config(tmp_path / "tiny") / "config.json"
    selectors = {key: ",".join(f"{k}={v}" for k, v in sorted(endpoint_selector(key, cfg.models[key]).items()))
                 for key in stack.SERVED}
    kubectl, _ = fake_kubectl(tmp_path, {
        "pods": {selectors[key]: [[f"{key}-0", "Running"]] for key in stack.SERVED},
        "logs": {f"{key}-0": str(LOGS / "e2e-cpu-tiny-v032.log") for key in stack.SERVED}})
    configs = [a for key in stack.SERVED for a in ("--model-config", f"{key}={config_json}")]
    report = verify.compare(cfg, verify.arguments("e2e", "--kubectl-logs", "--kubectl", kubectl,
                                                  "--cpu-kv-space-gib", "1", *configs))
    assert report.ok, report.text
    assert sorted((r.server, r.actual, r.error) for r in report.rows) == [
        (f"{key}-0 (log)", 4_194_304, 0) for key in sorted(stack.SERVED)]
    assert all(r.detail == "vLLM on cpu: no memory profile in the log" for r in report.rows)
