"""`llmctl verify`: compare each model's running vLLM servers with what the capacity planner promised.

What the servers report comes from the cluster's Prometheus (`vllm:cache_config_info`, whose labels carry the KV
cache vLLM really allocated: `kv_cache_size_tokens`, `num_gpu_blocks`, `block_size`), from a saved answer of the same
query, and from the servers' start-up logs (weights, overheads and KV cache per GPU): files, or read from every
running server with the user's kubectl (`--kubectl-logs`). Each server is
compared with the plan for the GPU it is closest to among its pool's instance types; the run fails when any is more
than `--threshold` off, or holds less KV cache than one request of the model's maxModelLen.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import config
from catalog.models import ModelArch, ModelConfigError, load_model
from components.serving.model_server import NAMESPACE, endpoint_selector
from components.serving.vllm_service import CONTAINER
from config.checks import kv_plans
from llmctl import calibrate, kubectl
from planning import calibration, capacity

QUERY = f'vllm:cache_config_info{{namespace="{NAMESPACE}"}}'
"""One series per vLLM server (its leader, for a multi-node model), labelled with `model` by the PodMonitor."""
DEFAULT_THRESHOLD = 0.10
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
HTTP_TIMEOUT_SECONDS = 15


class UsageError(ValueError):
    """Bad command-line input, or an answer that is not what was asked for; the message says which."""


def arguments(stack: str, *argv: str) -> argparse.Namespace:
    """The parsed arguments of `llmctl verify <stack> <argv>`, for callers that compare in-process."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([stack, *argv])


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml, whose plan the servers are compared with")
    source = p.add_argument_group("what the servers report (at least one)")
    source.add_argument("--prometheus", help="the cluster Prometheus's URL, e.g. http://127.0.0.1:9090 after "
                                             "`kubectl -n monitoring port-forward svc/kube-prometheus-stack-prometheus 9090:9090`")
    source.add_argument("--prometheus-json", type=Path,
                        help=f"a saved answer of /api/v1/query?query={QUERY} (offline)")
    source.add_argument("--log", action="append", default=[], metavar="MODEL=FILE",
                        help="a server's start-up log (kubectl logs <pod>), for a model of the stack; repeatable")
    source.add_argument("--kubectl-logs", action="store_true",
                        help="read the start-up log of every running vLLM server of the stack (a multi-node group's "
                             f"leader) with kubectl, from namespace {NAMESPACE} of its current context")
    p.add_argument("--kubectl", default="kubectl", metavar="PATH",
                   help="the kubectl that --kubectl-logs runs (default: kubectl on PATH)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"largest relative error that passes (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--cpu-kv-space-gib", type=float,
                   help="the servers run on vLLM's CPU backend with this VLLM_CPU_KVCACHE_SPACE: plan them as that "
                        "(the GPU arithmetic does not apply on a CPU)")
    p.add_argument("--model-config", action="append", default=[], metavar="MODEL=CONFIG_JSON",
                   help="the architecture a model's servers really load, when it is not the catalog model the "
                        "stack names (a test checkpoint); repeatable")


@dataclass(frozen=True)
class Plan:
    """A model's planned KV capacity on one GPU of its pool (or on a CPU)."""
    gpu: str
    kv_tokens: int
    sizing: capacity.Sizing | None


@dataclass(frozen=True)
class Row:
    model: str
    server: str
    plan: str
    planned: int | None
    actual: int | None
    problem: str | None
    detail: str = ""

    @property
    def error(self) -> float | None:
        return self.actual / self.planned - 1 if self.planned and self.actual is not None else None


@dataclass(frozen=True)
class Report:
    rows: list[Row]
    notes: list[str]
    threshold: float

    @property
    def ok(self) -> bool:
        return bool(self.rows) and not any(r.problem for r in self.rows)

    @property
    def text(self) -> str:
        head = f"{'model':<20} {'server':<34} {'plan for':<12} {'planned KV':>12} {'reported KV':>12} {'error':>8}  verdict"
        lines = [f"KV cache per replica, planned and reported (threshold {self.threshold:.0%}):", head]
        for r in self.rows:
            error = f"{r.error:+.1%}" if r.error is not None else "-"
            planned = f"{r.planned:,}" if r.planned is not None else "-"
            actual = f"{r.actual:,}" if r.actual is not None else "-"
            lines.append(f"{r.model:<20} {r.server:<34} {r.plan:<12} {planned:>12} {actual:>12} {error:>8}  "
                         f"{r.problem or 'ok'}")
            if r.detail:
                lines.append(f"{'':<21}{r.detail}")
        lines += [f"note: {n}" for n in self.notes]
        if not self.rows:
            lines.append("FAILED: no server of this stack reported anything: nothing was verified")
        elif not self.ok:
            lines.append(f"FAILED: {sum(1 for r in self.rows if r.problem)} of {len(self.rows)} servers differ "
                         "from the plan. If the plan is wrong, calibrate it: `llmctl calibrate <their start-up logs> "
                         "--gpu <GPU> --write catalog/calibrations.yaml` (README, Capacity planning)")
        return "\n".join(lines)


def _pairs(values: list[str], flag: str, models: dict) -> list[tuple[str, str]]:
    """(model, path) for each MODEL=PATH, in order; a model may come more than once (one log per replica)."""
    out = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not rest:
            raise UsageError(f"{flag} {value!r}: expected MODEL=PATH")
        if key not in models:
            raise UsageError(f"{flag} {value!r}: {key!r} is not a model of the stack; allowed: {', '.join(models)}")
        out.append((key, rest))
    return out


def plans(m: config.ModelDeployment, pool: config.GpuPool, arch: ModelArch,
          cpu_kv_space_gib: float | None) -> list[Plan]:
    """What the planner promises per replica on each GPU the pool may launch (or on a CPU)."""
    if cpu_kv_space_gib is not None:
        return [Plan("cpu", capacity.cpu_kv_tokens(arch, cpu_kv_space_gib, m.pipeline_parallel_size), None)]
    return [Plan(gpu, s.kv_cache_tokens, s) for gpu, s in kv_plans(m, pool, arch).items()]


def closest(candidates: list[Plan], actual: int) -> Plan:
    return min(candidates, key=lambda p: abs(actual / p.kv_tokens - 1) if p.kv_tokens else float("inf"))


def judge(key: str, m: config.ModelDeployment, server: str, candidates: list[Plan], actual: int | None,
          threshold: float, detail: str = "") -> Row:
    if actual is None:
        return Row(key, server, "-", None, None, "reports no KV capacity", detail)
    plan = closest(candidates, actual)
    gpus = "/".join(p.gpu for p in candidates if p.kv_tokens == plan.kv_tokens)  # GPUs planned alike, e.g. A10G/L4
    row = Row(key, server, gpus, plan.kv_tokens, actual, None, detail)
    if actual < m.max_model_len:
        return replace(row, problem=f"less KV than one {m.max_model_len:,}-token request (maxModelLen)")
    if plan.kv_tokens == 0 or abs(row.error) > threshold:
        return replace(row, problem=f"off plan by more than {threshold:.0%}")
    return row


def prometheus_series(answer: object, where: str) -> list[dict[str, str]]:
    """The label sets of an instant-vector answer of the Prometheus HTTP API."""
    if not isinstance(answer, dict) or answer.get("status") != "success":
        raise UsageError(f"{where}: not a successful Prometheus answer (status {answer.get('status') if isinstance(answer, dict) else type(answer).__name__!r})")
    data = answer.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        raise UsageError(f"{where}: expected an instant vector (data.resultType 'vector' with a result list)")
    series = []
    for item in data["result"]:
        labels = item.get("metric") if isinstance(item, dict) else None
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise UsageError(f"{where}: a result without a label set: {str(item)[:200]}")
        series.append(labels)
    return series


def query_prometheus(url: str) -> list[dict[str, str]]:
    try:
        parsed = urllib.parse.urlparse(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parsed = urllib.parse.urlparse("")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise UsageError(f"--prometheus {url!r}: expected an http:// or https:// URL")
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": QUERY})
    try:
        with urllib.request.urlopen(endpoint, timeout=HTTP_TIMEOUT_SECONDS) as response:  # noqa: S310 (scheme checked)
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise UsageError(f"--prometheus {url}: cannot query it ({getattr(e, 'reason', e)})") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise UsageError(f"--prometheus {url}: the answer is larger than {MAX_RESPONSE_BYTES // 2**20} MiB")
    try:
        return prometheus_series(json.loads(body), f"--prometheus {url}")
    except ValueError as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(f"--prometheus {url}: the answer is not JSON") from None


def saved_series(path: Path) -> list[dict[str, str]]:
    try:
        return prometheus_series(json.loads(read_log_file(path)), str(path))
    except ValueError as e:
        if isinstance(e, UsageError):
            raise
        raise UsageError(f"--prometheus-json {path}: not JSON ({str(e)[:120]})") from None


def read_log_file(path: Path) -> str:
    try:
        return calibrate.read(path)
    except calibrate.UsageError as e:
        raise UsageError(str(e)) from None


def server_name(labels: dict[str, str]) -> str:
    """A series' pod (or scrape instance), printable as it stands: label values are whatever the answer said, and a
    saved answer could carry terminal escape sequences."""
    name = labels.get("pod") or labels.get("instance") or "?"
    return name if name.isprintable() else name.encode("unicode_escape").decode()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def log_row(key: str, m: config.ModelDeployment, name: str, reading: calibration.LogReading, candidates: list[Plan],
            threshold: float) -> Row:
    """A start-up log: its KV tokens judged like a server's, with weights and overheads per GPU beside the plan's."""
    row = judge(key, m, name, candidates, reading.kv_tokens, threshold)
    plan = next((p for p in candidates if p.gpu == row.plan.split("/")[0]), None)
    if plan and plan.sizing and reading.weights_gib is not None:
        s = plan.sizing
        if not row.problem and abs(reading.weights_gib / s.weights_gib_per_gpu - 1) > threshold:
            row = replace(row, problem=f"weights per GPU off plan by more than {threshold:.0%}")
        measured = [("weights", reading.weights_gib, s.weights_gib_per_gpu),
                    ("outside PyTorch", reading.non_torch_gib, s.non_torch_gib_per_gpu),
                    ("activations", reading.activation_gib, s.activation_gib_per_gpu),
                    ("KV cache", reading.kv_gib, s.kv_cache_gib_per_gpu)]
        row = replace(row, detail="per GPU, logged / planned GiB: " + ", ".join(
            f"{name} {got:.2f} / {want:.2f}" for name, got, want in measured if got is not None))
    elif reading.device != "cuda":
        row = replace(row, detail=f"vLLM on {reading.device}: no memory profile in the log")
    return row


def cluster_logs(kubectl_path: str, key: str, m: config.ModelDeployment
                 ) -> list[tuple[str, calibration.LogReading | None, str]]:
    """(pod, its start-up reading or None, why not) for each running server of model `key`. Not reaching the cluster
    is an error; one pod whose log cannot be read (its container restarting) or has lost its start-up lines (kubelet
    rotates a busy server's log) is a note: the others are still verified, and Prometheus has every server's KV."""
    try:
        pods = kubectl.running_pods(kubectl_path, NAMESPACE, endpoint_selector(key, m))
    except kubectl.KubectlError as e:
        raise UsageError(f"--kubectl-logs: {e}") from None
    out = []
    for pod in pods:
        try:
            text = kubectl.log(kubectl_path, NAMESPACE, pod, CONTAINER, calibrate.MAX_LOG_BYTES)
            out.append((pod, calibration.read_log(text, "its log"), ""))
        except kubectl.KubectlError as e:
            out.append((pod, None, str(e)))
        except calibration.CalibrationError as e:
            out.append((pod, None, f"kubelet rotates a long-running server's log, and Prometheus still has its KV "
                                   f"capacity; {e}"))
    return out


def run(args: argparse.Namespace, project_dir: Path) -> Report:
    """The checks of `args` against the stack file's plan (raises UsageError, config.ConfigError)."""
    _check_arguments(args)
    return compare(config.load_stack_file(project_dir, args.stack), args)


def _check_arguments(args: argparse.Namespace) -> None:
    if not (args.prometheus or args.prometheus_json or args.log or args.kubectl_logs):
        raise UsageError("give what the servers report: --prometheus URL, --prometheus-json FILE, --log MODEL=FILE "
                         "or --kubectl-logs")
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold {args.threshold}: must be between 0 and 1 (0.1 is 10%)")
    if args.cpu_kv_space_gib is not None and not 0 < args.cpu_kv_space_gib <= capacity.MAX_GPU_MEMORY_GIB:
        raise UsageError(f"--cpu-kv-space-gib {args.cpu_kv_space_gib}: must be more than 0 and at most "
                         f"{capacity.MAX_GPU_MEMORY_GIB}")


def compare(cfg: config.StackConfig, args: argparse.Namespace) -> Report:
    """Each reporting server and log of `args` against the plan of `cfg`."""
    _check_arguments(args)
    vllm_models = {k: m for k, m in sorted(cfg.models.items()) if m.engine == "vllm"}
    archs: dict[str, ModelArch] = {}
    for key, path in _pairs(args.model_config, "--model-config", cfg.models):
        try:
            archs[key] = load_model(config_path=path)
        except ModelConfigError as e:
            raise UsageError(f"--model-config {key}={path}: {e}") from None
    candidates = {k: plans(m, cfg.gpu_pools[m.gpu_pool], archs.get(k) or load_model(m.model), args.cpu_kv_space_gib)
                  for k, m in vllm_models.items()}
    notes = [f"{k}: TGI publishes no KV capacity; not verified" for k, m in sorted(cfg.models.items())
             if m.engine != "vllm"]
    series: list[dict[str, str]] = []
    if args.prometheus:
        series += query_prometheus(args.prometheus)
    if args.prometheus_json:
        series += saved_series(args.prometheus_json)
    rows, reported = [], set()
    for labels in sorted(series, key=lambda s: (s.get("model", ""), server_name(s))):
        key, server = labels.get("model", ""), server_name(labels)
        if key not in vllm_models:
            notes.append(f"a server labelled model={key!r} ({server}) is not a vLLM model of this stack; skipped")
            continue
        reported.add(key)
        rows.append(judge(key, vllm_models[key], server, candidates[key], _int(labels.get("kv_cache_size_tokens")),
                          args.threshold))
    for key, path in _pairs(args.log, "--log", cfg.models):
        if key not in vllm_models:
            raise UsageError(f"--log {key}={path}: {key} runs on {cfg.models[key].engine}; only vLLM logs are read")
        try:
            reading = calibration.read_log(read_log_file(Path(path)), path)
        except calibration.CalibrationError as e:
            raise UsageError(str(e)) from None
        reported.add(key)
        rows.append(log_row(key, vllm_models[key], f"log {Path(path).name}", reading, candidates[key],
                            args.threshold))
    if args.kubectl_logs:
        for key, m in vllm_models.items():
            for pod, reading, unread in cluster_logs(args.kubectl, key, m):
                if reading is None:
                    notes.append(f"{key}: {pod}'s log was not read: {unread}")
                    continue
                reported.add(key)
                rows.append(log_row(key, m, f"{pod} (log)", reading, candidates[key], args.threshold))
    notes += [f"{k}: no server reported (scaled to zero, or not running)" for k in vllm_models if k not in reported]
    return Report(rows, notes, args.threshold)
