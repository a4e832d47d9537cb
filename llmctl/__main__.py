"""llmctl command line. `python -m llmctl plan <stack> [--out DIR]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import config
from llmctl import plan as plan_cmd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plan", help="render a stack offline: manifests, Helm values, inventory, summary")
    p.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    p.add_argument("--out", type=Path, help="output directory (default build/plan/<stack>)")
    args = parser.parse_args(argv)

    if args.command == "plan":
        try:
            result = plan_cmd.run(args.stack)
        except config.ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        out = args.out or plan_cmd.PROJECT_DIR / "build" / "plan" / args.stack
        plan_cmd.write(result, out)
        print(plan_cmd.summary(result))
        print(f"\nwrote {out}/manifests, {out}/values, {out}/inventory.json, {out}/outputs.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
