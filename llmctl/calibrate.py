"""`llmctl calibrate`: read vLLM start-up logs and turn each into a calibration record (planning/calibration.py).

Prints the records as YAML; `--write FILE` also adds them to a calibrations file (catalog/calibrations.yaml is the
one the planner reads), replacing records with the same id. Each log names the GPU it ran on with `--gpu`, or with a
`# gpu: NAME` line at its top (the excerpts in tests/data/vllm_logs/ have one, and `# source: URL`).
"""

from __future__ import annotations

import argparse
import datetime
import re
from pathlib import Path

import yaml

from catalog.gpus import GPUS
from catalog.models import ModelConfigError, load_model
from planning import calibration

MAX_LOG_BYTES = 64 * 1024 * 1024
"""A start-up log is a few MB at DEBUG; a larger file is not one (and is not read into memory)."""


class UsageError(ValueError):
    """Bad command-line input or an unreadable log; the message says which and why."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="+", type=Path, help="vLLM start-up logs (kubectl logs <pod> > file)")
    p.add_argument("--gpu", help=f"catalog GPU the logs ran on: {', '.join(GPUS)} (default: the log's '# gpu:' line)")
    p.add_argument("--model", help="catalog model name, when the log's model= is not a catalog model's Hugging Face "
                                   "id (a fine-tune of one, a local path)")
    p.add_argument("--source", help="where the logs come from, recorded with each (default: the log's '# source:' "
                                    "line, else its path)")
    p.add_argument("--write", type=Path, help="add the records to this calibrations file (e.g. "
                                              "catalog/calibrations.yaml), replacing those with the same id")


def header(text: str, key: str) -> str | None:
    found = re.search(rf"^# {key}: (.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else None


def read(path: Path) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(MAX_LOG_BYTES + 1)
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror})") from None
    if len(data) > MAX_LOG_BYTES:
        raise UsageError(f"{path}: larger than {MAX_LOG_BYTES // 2**20} MiB; is it a vLLM start-up log?")
    return data.decode("utf-8", errors="replace")


def records(args: argparse.Namespace, today: str | None = None) -> list[calibration.Calibration]:
    """One record per log; every log's problems are collected before any is refused."""
    today = today or datetime.date.today().isoformat()
    out, problems = [], []
    for path in args.logs:
        try:
            text = read(path)
            reading = calibration.read_log(text, str(path))
            gpu = args.gpu or header(text, "gpu")
            if gpu is None:
                raise calibration.CalibrationError(f"{path}: which GPU did it run on? give --gpu NAME "
                                                   f"({', '.join(GPUS)})")
            if args.model:
                model = load_model(args.model)
            else:
                model = calibration.catalog_model(reading.model_id)
                if model is None:
                    raise calibration.CalibrationError(
                        f"{path}: its model {reading.model_id!r} is not a catalog model's Hugging Face id; give "
                        "--model NAME (the catalog model it is, or a fine-tune of)")
            source = args.source or header(text, "source") or str(path)
            out.append(calibration.record(reading, gpu, model, id=path.stem, source=source, checked=today,
                                          where=str(path)))
        except (calibration.CalibrationError, UsageError) as e:
            problems.append(str(e))
        except ModelConfigError as e:
            problems.append(f"--model: {e}")
    if problems:
        raise UsageError("\n".join(problems))
    return out


def write(path: Path, new: list[calibration.Calibration]) -> None:
    """Merge `new` into the file by id. A file that is not a calibrations file is refused, not overwritten."""
    try:
        existing = list(calibration.load(path)) if path.exists() else []
        ids = {r.id for r in new}
        merged = [r for r in existing if r.id not in ids] + new
        head = ("# Calibration records: what real vLLM start-ups measured, per GPU, tensor-parallel size and vLLM "
                "release\n# (planning/calibration.py). Written by `llmctl calibrate --write`; review each like a "
                "catalog entry.\n")
        path.write_text(head + calibration.as_yaml(merged))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise UsageError(f"--write {path}: cannot update it ({getattr(e, 'strerror', None) or e})") from None
    except calibration.CalibrationError as e:
        raise UsageError(f"--write {path}: not a calibrations file, left as it is ({e})") from None


def run(args: argparse.Namespace) -> str:
    found = records(args)
    if args.write:
        write(args.write, found)
    return calibration.as_yaml(found).rstrip()
