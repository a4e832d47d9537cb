"""Parse every replica router argument list that `llmctl plan` rendered with the router's own argument parser, then
start the router with it.

The parser is the one `vllm-router` runs (vllm_router.launch_router.parse_router_args, PyPI vllm-router, pinned in
requirements-dev.txt), followed by its own validation. The Rust router validates its configuration again when it
starts (it refuses, for one, discovery without a selector), so each list is also started, on loopback ports, with
discovery as rendered and no cluster to find (tests/replica_router_local.py), until it answers /liveness.
Usage: python -m tests.upstream.router_args PLAN_DIR [...]
Exit status 0 when every list parses to what the platform means and starts; 1 otherwise, naming the router and the
problem.
"""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr
from pathlib import Path

import yaml

from tests.replica_router_local import NO_CLUSTER, ROUTER, local_args
from tests.servers import StartupFailed, free_port, start

# A flag the router does not have: the self-check below must see the parser reject it.
UNKNOWN_FLAG = ["--routing-policy", "cache_aware"]


def router_arg_lists(plan_dir: Path) -> dict[str, tuple[list[str], dict]]:
    """{'<stack dir>/<deployment>': (args, pod template)} for every container whose command is `vllm-router`."""
    found = {}
    for path in sorted((plan_dir / "manifests").glob("deployment-*.yaml")):
        manifest = yaml.safe_load(path.read_text())
        for container in manifest["spec"]["template"]["spec"]["containers"]:
            if container.get("command") == ["vllm-router"]:
                found[f"{plan_dir.name}/{manifest['metadata']['name']}"] = (container["args"], manifest["spec"])
    return found


def parse(args: list[str]):
    """The router's namespace for `args`, or the parser's complaint as a string."""
    from vllm_router.launch_router import parse_router_args

    stderr = io.StringIO()
    try:
        with redirect_stderr(stderr):
            parsed = parse_router_args(args)
            parsed._validate_router_args()
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "rejected"
    except ValueError as error:
        return str(error)
    return parsed


def problems(args: list[str], deployment_spec: dict) -> list[str]:
    """What would keep the router from serving in a pod: it must listen beyond loopback (its defaults bind
    127.0.0.1 for both the API and the metrics), on the ports the pod declares, and discover pods in its own
    namespace on the servers' API port with a selector (its default port is 80)."""
    parsed = parse(args)
    if isinstance(parsed, str):
        return [parsed]
    ports = {p["name"]: p["containerPort"] for p in deployment_spec["template"]["spec"]["containers"][0]["ports"]}
    expected = {"host": "0.0.0.0", "prometheus_host": "0.0.0.0", "port": ports.get("http"),
                "prometheus_port": ports.get("metrics"), "service_discovery": True,
                "service_discovery_namespace": "llm-inference", "service_discovery_port": 8000}
    found = [f"{field} is {getattr(parsed, field)!r}, not {value!r}" for field, value in expected.items()
             if getattr(parsed, field) != value]
    if not parsed.selector:
        found.append("no --selector: the router would discover no pod")
    if parsed.worker_urls:
        found.append("static --worker-urls: the router would wait for them and exit if they are missing")
    return found


START_SECONDS = 30
WORK = Path(__file__).resolve().parents[2] / "build" / "upstream" / "router-starts"


def start_problem(args: list[str], name: str) -> str | None:
    """Why the router would not start with `args` (its log's last lines), or None once it answers /liveness."""
    port, metrics_port = free_port(), free_port()
    server = start(name, [str(ROUTER), *local_args(args, port, metrics_port, [])], WORK / name, port, NO_CLUSTER)
    try:
        server.wait_ready("/liveness", START_SECONDS)
        return None
    except StartupFailed as error:
        return str(error).splitlines()[0] + " | " + " ".join(server.tail(3).splitlines()[1:])
    finally:
        server.stop()


def main(plan_dirs: list[str]) -> int:
    lists = {}
    for plan_dir in plan_dirs:
        lists |= router_arg_lists(Path(plan_dir))
    if not lists:
        print("no replica router Deployment found in", ", ".join(plan_dirs), file=sys.stderr)
        return 1
    failed = 0
    for name, (args, spec) in lists.items():
        found = problems(args, spec)
        if not found and (problem := start_problem(args, name.replace("/", "-"))):
            found.append(f"does not start: {problem}")
        failed += bool(found)
        print(f"{'FAIL' if found else 'ok  '} {name}: {' '.join(args)}")
        for problem in found:
            print(f"     {problem}")
    first_args, first_spec = next(iter(lists.values()))
    if not problems(first_args + UNKNOWN_FLAG, first_spec):
        print(f"FAIL self-check: the parser accepted the unknown flag {UNKNOWN_FLAG[0]}")
        failed += 1
    # Guards the start check: discovery without a selector parses, but the router refuses to start with it.
    selector = first_args.index("--selector")
    after = next(i for i in range(selector + 1, len(first_args)) if first_args[i].startswith("--"))
    unselected = first_args[:selector] + first_args[after:]
    if start_problem(unselected, "self-check-no-selector") is None:
        print("FAIL self-check: the router started with discovery and no selector")
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
