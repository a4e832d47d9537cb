"""`make scan`'s verdict: checkov's findings on the rendered stacks, less the waivers in security/waivers.yaml.

Usage: python -m tests.scan WAIVERS PLAN_DIR [PLAN_DIR ...], where each PLAN_DIR holds checkov-kubernetes.json
(manifests) and checkov-secrets.json (manifests, Helm values, inventory and outputs). Prints each stack's totals
before and after the waivers, every unwaived finding, and every waiver that matched nothing; exits 1 if there is
either of the last two.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPORTS = ("checkov-kubernetes.json", "checkov-secrets.json")
MIN_REASON_CHARS = 40


@dataclass(frozen=True)
class Finding:
    stack: str
    check: str
    resource: str
    name: str
    file: str


@dataclass(frozen=True)
class Waiver:
    check: str
    resources: tuple[str, ...]
    reason: str

    def covers(self, finding: Finding) -> bool:
        return finding.check == self.check and any(fnmatch.fnmatchcase(finding.resource, p) for p in self.resources)


def load_waivers(path: Path) -> list[Waiver]:
    waivers = [Waiver(w["check"], tuple(w["resources"]), " ".join(str(w.get("reason", "")).split()))
               for w in yaml.safe_load(path.read_text())["waivers"]]
    short = [w.check for w in waivers if len(w.reason) < MIN_REASON_CHARS]
    if short:
        raise ValueError(f"{path}: waivers without a reason of at least {MIN_REASON_CHARS} characters: {short}")
    return waivers


def read_report(path: Path, stack: str) -> tuple[int, list[Finding]]:
    """checkov's JSON: one report, or a list of them (one per framework); returns (passed, failed findings)."""
    data = json.loads(path.read_text())
    passed, failed = 0, []
    for report in data if isinstance(data, list) else [data]:
        if "results" not in report:  # checkov writes a bare summary when a framework found nothing to scan
            passed += report.get("passed", 0)
            continue
        passed += report["summary"]["passed"]
        failed += [Finding(stack, f["check_id"], f["resource"], f["check_name"], f["file_path"])
                   for f in report["results"]["failed_checks"]]
    return passed, failed


def verdict(findings: list[Finding], waivers: list[Waiver]) -> tuple[list[Finding], list[Waiver]]:
    """Findings no waiver covers, and waivers that cover no finding."""
    unwaived = [f for f in findings if not any(w.covers(f) for w in waivers)]
    stale = [w for w in waivers if not any(w.covers(f) for f in findings)]
    return unwaived, stale


def main(argv: list[str]) -> int:
    waivers = load_waivers(Path(argv[0]))
    findings: list[Finding] = []
    for plan in map(Path, argv[1:]):
        stack = plan.name
        for report in REPORTS:
            passed, failed = read_report(plan / report, stack)
            waived = sum(1 for f in failed if any(w.covers(f) for w in waivers))
            print(f"scan {stack} {report}: {passed} passed, {len(failed)} failed, {waived} of them waived")
            findings += failed
    unwaived, stale = verdict(findings, waivers)
    for f in unwaived:
        print(f"  unwaived: {f.stack} {f.check} {f.resource} ({f.name}) in {f.file}")
    for w in stale:
        print(f"  stale waiver: {w.check} {list(w.resources)} matches no finding; remove it")
    print(f"scan: {len(findings)} findings, {len(findings) - len(unwaived)} waived "
          f"({len(waivers)} waivers), {len(unwaived)} unwaived, {len(stale)} stale waivers")
    return 1 if unwaived or stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
