"""The model servers' pods and start-up logs, read with the user's own kubectl (its current context and credentials:
llmctl holds none of its own). Every call is bounded: kubectl's --request-timeout, a process timeout above it, and
--limit-bytes on logs, which keeps a log's beginning, where vLLM prints its start-up lines."""

from __future__ import annotations

import json
import re
import subprocess

REQUEST_TIMEOUT_SECONDS = 30
PROCESS_TIMEOUT_SECONDS = REQUEST_TIMEOUT_SECONDS + 15
"""kubectl's own timeout first, so its message (which names the API server) is the one the user sees."""
MAX_PODS_JSON_BYTES = 64 * 1024 * 1024
POD_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
"""A DNS-1123 subdomain, as Kubernetes names pods: never starts with '-', so never read as a flag."""


class KubectlError(RuntimeError):
    """kubectl could not be run or failed; the message names the command and says why."""


def _run(kubectl: str, args: list[str]) -> bytes:
    argv = [kubectl, *args, f"--request-timeout={REQUEST_TIMEOUT_SECONDS}s"]
    shown = " ".join(["kubectl", *args])
    try:
        done = subprocess.run(argv, capture_output=True, stdin=subprocess.DEVNULL, timeout=PROCESS_TIMEOUT_SECONDS,
                              check=False)
    except FileNotFoundError:
        raise KubectlError(f"--kubectl {kubectl!r}: not found; install kubectl or give its path") from None
    except PermissionError:
        raise KubectlError(f"--kubectl {kubectl!r}: not executable") from None
    except OSError as e:
        raise KubectlError(f"--kubectl {kubectl!r}: cannot run it ({e})") from None
    except subprocess.TimeoutExpired:
        raise KubectlError(f"`{shown}` did not finish within {PROCESS_TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise KubectlError(f"`{shown}` failed (exit {done.returncode}): {said[-1][:300] if said else 'no message'}")
    return done.stdout


def running_pods(kubectl: str, namespace: str, selector: dict[str, str]) -> list[str]:
    """The names of the Running pods in `namespace` that carry every label of `selector`, sorted."""
    labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    shown = f"kubectl get pods -n {namespace} -l {labels}"
    out = _run(kubectl, ["get", "pods", "-n", namespace, "-l", labels, "-o", "json"])
    if len(out) > MAX_PODS_JSON_BYTES:
        raise KubectlError(f"`{shown}`: the answer is larger than {MAX_PODS_JSON_BYTES // 2**20} MiB")
    try:
        items = json.loads(out)["items"]
        pods = [(p["metadata"]["name"], p.get("status", {}).get("phase")) for p in items]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KubectlError(f"`{shown}`: not a pod list ({out[:120].decode(errors='replace')!r})") from None
    bad = [name for name, _ in pods if not isinstance(name, str) or not POD_NAME.fullmatch(name)]
    if bad:
        raise KubectlError(f"`{shown}`: not pod names: {bad[:3]!r}")
    return sorted(name for name, phase in pods if phase == "Running")


def log(kubectl: str, namespace: str, pod: str, container: str, limit_bytes: int) -> str:
    """The first `limit_bytes` of the current log of `container` in `pod`."""
    if not POD_NAME.fullmatch(pod):
        raise KubectlError(f"{pod!r} is not a pod name")
    out = _run(kubectl, ["logs", "-n", namespace, pod, "-c", container, f"--limit-bytes={limit_bytes}"])
    return out[:limit_bytes].decode("utf-8", errors="replace")
