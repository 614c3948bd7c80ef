#!/usr/bin/env python
"""Issue #10's record of one GPU run: ``gpu_<device-kind>_<date>.{json,md}`` from what the stages of
``gpu_check.sh`` left (their archives unpacked into one folder: kernels/, suite/, bench/, more/).

    .venv/bin/python benchmarks/gpu_record.py /tmp/gpu --out benchmarks/results

Measures nothing: it reads the tests' JUnit files, the sanitizer logs and the benchmarks' JSON, and says
what is missing rather than guessing it.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core import REPO, RESULTS, file_name_part, write_results  # noqa: E402
from report import fp16_fid_shift  # noqa: E402


def junit(path: Path) -> Optional[dict]:
    """Counts and the failing tests' names of one pytest --junitxml file (None if it is missing)."""
    if not path.exists():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in root.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": failed}


def sanitizer(log: Path, status: dict) -> Optional[dict]:
    """compute-sanitizer's verdict: the errors of every ERROR SUMMARY in its log (one per process) and its
    exit code (99: errors found; 124: cut off by the time limit). A test failing under it is the tests'
    business, not the sanitizer's."""
    if not log.exists():
        return None
    summaries = [int(n) for n in re.findall(r"ERROR SUMMARY: (\d+) error", log.read_text(errors="replace"))]
    rc = status.get(log.stem)
    errors = sum(summaries) if summaries else None
    return {"exit_code": rc, "errors": errors, "clean": errors == 0 and rc not in (None, 99, 124, 137)}


def statuses(folder: Path) -> dict:
    path = folder / "status.txt"
    if not path.exists():
        return {}
    return {name: int(rc) for name, rc in (line.split() for line in path.read_text().splitlines() if line.strip())}


def one(folder: Path, pattern: str) -> Optional[dict]:
    found = sorted(folder.glob(pattern))
    return json.loads(found[-1].read_text()) if found else None


def record(root: Path) -> dict:
    kernels, suite, bench, more = (root / s for s in ("kernels", "suite", "bench", "more"))
    k_status = statuses(kernels)
    tests = {"kernel_tests": junit(kernels / "kernel_tests.xml"), "cuda_tests": junit(suite / "cuda_tests.xml"),
             "other_tests": junit(suite / "other_tests.xml")}
    checks = {tool: sanitizer(kernels / f"{tool}.log", k_status) for tool in ("memcheck", "racecheck")}
    fid = one(bench, "fid_*.json")
    ops, prdc, training = one(more, "ops_*.json"), one(more, "prdc_*.json"), one(more, "training_*.json")
    machine = next((r["machine"] for r in (fid, ops, prdc, training) if r), None) or {}
    e2e = ((fid or {}).get("command_lines", {}).get("e2e", {}).get("summary", {})).get("fidfast fp16", {})
    model = ((fid or {}).get("stages") or {}).get("model fp16") or {}
    version = kernels / "version.log"
    native_cuda = version.exists() and "native_cuda: True" in version.read_text()
    source = kernels / "source.txt"
    if source.exists():
        commit = source.read_text().strip()
    else:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        commit = f"{head} (this checkout when recorded: the run did not say)"
    cuda_runs = (tests["kernel_tests"], tests["cuda_tests"])
    return {
        "device": (machine.get("gpu") or {}).get("name"),
        "torch": machine.get("torch"), "cuda": machine.get("torch_cuda_build"), "cudnn": machine.get("cudnn"),
        "date": (fid or {}).get("date"),
        "commit": commit, "native_cuda": native_cuda,
        # both runs there, the CUDA kernels built (else every native-cuda test skips), nothing failed
        "cuda_tests_passed": native_cuda and all(t and t["failures"] == t["errors"] == 0 and t["passed"] > 0
                                                 for t in cuda_runs),
        "sanitizer_clean": all(c and c["clean"] for c in checks.values()),
        "model_images_per_s": model.get("images_per_s"),
        "e2e_images_per_s": e2e.get("images_per_s"),
        "speedup_vs_pytorch_fid": e2e.get("speedup"),
        "fp16_fid_rel_diff": fp16_fid_shift(fid) if fid else None,
        "tests": tests, "sanitizer": checks, "build_and_steps": k_status | statuses(suite) | statuses(bench)
        | statuses(more),
        "targets": (fid or {}).get("targets"),
        "prdc_seconds": prdc["prdc"][0]["seconds"] if prdc else None,
        "prdc_n": prdc["args"]["n"] if prdc else None,
        "training_speedup_vs_torchmetrics": (training or {}).get("speedup"),
        "missing": [name for name, v in (("bench_fid", fid), ("bench_ops", ops), ("bench_metrics", prdc),
                                         ("bench_training", training)) if v is None],
    }


def fmt(value, spec: str = ".3g") -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "—" if value is None else format(value, spec) if isinstance(value, (int, float)) else str(value)


def markdown(r: dict) -> str:
    lines: List[str] = [f"# fidfast on a GPU: {r['device'] or 'unknown device'}, {r['date']}", "",
                        f"torch {r['torch']} (CUDA {r['cuda']}, cuDNN {r['cudnn']}); commit {r['commit']}", "",
                        "| what | value |", "| --- | ---: |"]
    for key in ("cuda_tests_passed", "sanitizer_clean", "model_images_per_s", "e2e_images_per_s",
                "speedup_vs_pytorch_fid", "fp16_fid_rel_diff", "training_speedup_vs_torchmetrics"):
        lines.append(f"| {key} | {fmt(r[key])} |")
    lines += ["", "| tests | passed | failed | skipped |", "| --- | ---: | ---: | ---: |"]
    for name, t in r["tests"].items():
        lines.append(f"| {name} | " + (f"{t['passed']} | {t['failures'] + t['errors']} | {t['skipped']} |" if t
                                       else "not run | | |"))
    failed = [f for t in r["tests"].values() if t for f in t["failed"]]
    if failed:
        lines += ["", "Failed: " + ", ".join(f"`{f}`" for f in failed)]
    lines.append("")
    for tool, c in r["sanitizer"].items():
        lines.append(f"- {tool}: " + ("not run" if not c else f"exit {c['exit_code']}, {fmt(c['errors'])} errors"))
    if r["targets"]:
        lines += ["", "| target | goal | measured | status |", "| --- | ---: | ---: | --- |"]
        lines += [f"| {t['target']} | {t['goal']:g} | {fmt(t['value'])} | {t['status']} |" for t in r["targets"]]
    if r["missing"]:
        lines += ["", "Not measured: " + ", ".join(r["missing"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the folder holding kernels/, suite/, bench/, more/")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    r = record(args.root)
    stem = f"gpu_{file_name_part(r['device'] or 'gpu')}_{(r['date'] or 'undated').replace('-', '')}"
    write_results(stem, r, markdown(r), args.out)
    print(markdown(r))


if __name__ == "__main__":
    main()
