"""The end-to-end run's report (`make e2e` loads this plugin with -p): a table of every check with its result and
what it measured, then the performance section, printed at the end and written to build/e2e/report.md. A check's
line is its docstring's first line; it records what it measured with `record_property("measured", text)`, and the
performance check its rows with `record_property("performance", rows)`."""

from __future__ import annotations

from tests.conftest import ROOT

REPORT = ROOT / "build" / "e2e" / "report.md"
RESULTS: list[dict] = []
STARTUP: dict[str, float] = {}
"""Seconds each server took to become ready; the platform fixture fills it."""


def pytest_collection_modifyitems(items):
    for item in items:
        doc = (getattr(item.function, "__doc__", None) or item.name).strip().splitlines()[0]
        item.user_properties.append(("check", doc))


def pytest_runtest_logreport(report):
    failed_setup = report.when == "setup" and report.outcome != "passed"
    if report.when == "call" or failed_setup:
        properties = dict(report.user_properties)
        RESULTS.append({"check": properties.get("check", report.nodeid), "outcome": report.outcome,
                        "measured": properties.get("measured", ""), "performance": properties.get("performance"),
                        "seconds": report.duration})


def _performance(rows: list[dict]) -> list[str]:
    lines = ["", "## Performance", "",
             "This run, this machine: a tiny random model on two shared CPU cores; each request asks for 16 tokens.",
             "", "| path | concurrency | requests | req/s | p50 ms | p99 ms |", "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['path']} | {p['concurrency']} | {p['requests']} | {p['rps']:.1f} | {p['p50_ms']:.0f} | "
              f"{p['p99_ms']:.0f} |" for p in rows]
    by = {(p["path"], p["concurrency"]): p for p in rows}
    for concurrency in sorted({p["concurrency"] for p in rows}):
        direct, through = by.get(("vLLM direct", concurrency)), by.get(("through gateway", concurrency))
        if direct and through:
            p50, p99 = (through[p] / direct[p] for p in ("p50_ms", "p99_ms"))
            lines.append(f"\nGateway latency / direct latency at concurrency {concurrency}: p50 {p50:.1f}x, "
                         f"p99 {p99:.1f}x")
    return lines


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    lines = ["", "## Checks", "", "| check | result | measured | s |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['check']} | {r['outcome'].upper()} | {r['measured']} | {r['seconds']:.1f} |" for r in RESULTS]
    if STARTUP:
        lines += ["", "Ready after (s): " + ", ".join(f"{name} {seconds:g}" for name, seconds in STARTUP.items())]
    rows = [row for r in RESULTS for row in (r["performance"] or [])]
    if rows:
        lines += _performance(rows)
    text = "\n".join(lines) + "\n"
    terminalreporter.write(text)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("# make e2e\n" + text)
