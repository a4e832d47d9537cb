"""llmctl command line: `plan <stack> [--out DIR]` renders a stack offline; `size` runs the capacity planner;
`calibrate` turns vLLM start-up logs into the planner's calibration records; `verify` compares a running stack's
servers with the plan."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import config
from llmctl import calibrate as calibrate_cmd
from llmctl import plan as plan_cmd
from llmctl import size as size_cmd
from llmctl import verify as verify_cmd


def main(argv: list[str] | None = None, project_dir: Path = plan_cmd.PROJECT_DIR) -> int:
    parser = argparse.ArgumentParser(prog="llmctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plan", help="render a stack offline: manifests, Helm values, inventory, summary")
    p.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    p.add_argument("--out", type=Path, help="output directory (default build/plan/<stack>)")
    s = commands.add_parser("size", help="GPU memory, KV capacity and fit of one model server (capacity planner)")
    size_cmd.add_arguments(s)
    c = commands.add_parser("calibrate", help="vLLM start-up logs -> calibration records of the planner's overheads")
    calibrate_cmd.add_arguments(c)
    v = commands.add_parser("verify", help="compare each model's running servers with the plan (KV cache, memory)")
    verify_cmd.add_arguments(v)
    args = parser.parse_args(argv)

    if args.command in ("size", "calibrate"):
        command = size_cmd if args.command == "size" else calibrate_cmd
        try:
            print(command.run(args))
        except command.UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        return 0

    if args.command == "verify":
        try:
            report = verify_cmd.run(args, project_dir)
        except (verify_cmd.UsageError, config.ConfigError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(report.text)
        return 0 if report.ok else 1

    if args.command == "plan":
        try:
            result = plan_cmd.run(args.stack, project_dir)
        except config.ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        out = args.out or project_dir / "build" / "plan" / args.stack
        plan_cmd.write(result, out)
        print(plan_cmd.summary(result))
        print(f"\nwrote {out}/manifests, {out}/values, {out}/inventory.json, {out}/outputs.json, "
              f"{out}/policy.json, {out}/cost.json")
        if result.blocked:
            print("error: a mandatory policy fails (above); `pulumi preview --policy-pack policy` would fail too",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
