#!/usr/bin/env python
"""The record of one GPU run (issues #10, #21, #25): ``gpu_<device-kind>_<date>.{json,md}`` from what the
stages of ``gpu_check.sh`` left, their archives unpacked into one folder:

    kernels/  build.log, version.log, kernel_tests.xml, cpu_op_tests.xml, {memcheck,racecheck,initcheck,
              synccheck}.log, status.txt, seconds.txt, nvidia-smi.txt, source.txt
    suite/    cuda_tests.xml, network_*.json (bench_network.py), training_*.json (bench_training.py), status.txt
    bench/    fid_*.json (bench_fid.py), status.txt

    .venv/bin/python benchmarks/gpu_record.py /tmp/gpu --out benchmarks/results

Measures nothing: it reads the tests' JUnit files, the sanitizer logs and the benchmarks' JSON, and lists
what is missing (a file, or a value its file does not hold) rather than guessing it.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from core import REPO, RESULTS, file_name_part, write_results  # noqa: E402
from report import fp16_fid_shift, summary  # noqa: E402

SANITIZERS = ("memcheck", "racecheck", "initcheck", "synccheck")


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


def statuses(folder: Path, name: str = "status.txt") -> dict:
    """A stage's ``<step> <number>`` lines (exit codes in status.txt, seconds in seconds.txt)."""
    path = folder / name
    if not path.exists():
        return {}
    return {step: int(n) for step, n in (line.split() for line in path.read_text().splitlines() if line.strip())}


def one(folder: Path, pattern: str) -> Tuple[Optional[dict], Optional[str]]:
    """The newest file matching ``pattern`` in ``folder``, read as JSON, and its name."""
    found = sorted(folder.glob(pattern))
    return (json.loads(found[-1].read_text()), found[-1].name) if found else (None, None)


def record(root: Path) -> dict:
    kernels, suite, bench = (root / s for s in ("kernels", "suite", "bench"))
    missing: List[str] = []

    def need(value, what: str):
        """``value``, or None with ``what`` listed as missing."""
        if value is None:
            missing.append(what)
        return value

    k_status = statuses(kernels)
    tests = {name: junit(folder / f"{name}.xml") for folder, name in
             ((kernels, "kernel_tests"), (kernels, "cpu_op_tests"), (suite, "cuda_tests"))}
    for name, t in tests.items():
        need(t, f"{name} (no {name}.xml)")
    checks = {tool: sanitizer(kernels / f"{tool}.log", k_status) for tool in SANITIZERS}
    for tool, c in checks.items():
        need(c, f"{tool} (no kernels/{tool}.log)")
    fid, fid_file = one(bench, "fid_*.json")
    network, network_file = one(suite, "network_*.json")
    training, training_file = one(suite, "training_*.json")
    need(fid, "bench_fid (no bench/fid_*.json)")
    need(network, "bench_network (no suite/network_*.json)")
    need(training, "bench_training (no suite/training_*.json)")
    machine = next((r["machine"] for r in (fid, network, training) if r and r.get("machine")), None) or {}
    fid = fid or {}
    fixed = (fid.get("fixed_cost") or {})
    variants = (network or {}).get("variants") or {}
    build = (fid.get("command_lines") or {}).get("aot_build") or {}
    version = kernels / "version.log"
    native_cuda = version.exists() and "native_cuda: True" in version.read_text()
    source = kernels / "source.txt"
    if source.exists():
        commit = source.read_text().strip()
    else:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        commit = f"{head} (this checkout when recorded: the run did not say)"
    cuda_runs = (tests["kernel_tests"], tests["cuda_tests"])

    def passed(t: Optional[dict]) -> bool:
        return bool(t and t["failures"] == t["errors"] == 0 and t["passed"] > 0)

    fp16 = summary(fid, "e2e", "fidfast fp16") if fid else {}
    r = {
        "device": (machine.get("gpu") or {}).get("name"),
        "torch": machine.get("torch"), "cuda": machine.get("torch_cuda_build"), "cudnn": machine.get("cudnn"),
        "cpu_cores": machine.get("cpu_cores_usable"),
        "date": fid.get("date") or next((x.get("date") for x in (network, training) if x and x.get("date")), None),
        "commit": commit, "native_cuda": native_cuda,
        # both runs there, the CUDA kernels built (else every native-cuda test skips), nothing failed
        "cuda_tests_passed": native_cuda and all(passed(t) for t in cuda_runs),
        "cpu_op_tests_passed": passed(tests["cpu_op_tests"]),
        "sanitizer_clean": all(c and c["clean"] for c in checks.values()),
        "model_images_per_s": need((variants.get("ts_fp16") or {}).get("images_per_s"),
                                   "model_images_per_s (network_*.json: variants.ts_fp16)"),
        "model_aoti_images_per_s": need((variants.get("aoti_fp16") or {}).get("images_per_s"),
                                        "model_aoti_images_per_s (network_*.json: variants.aoti_fp16)"),
        "e2e_images_per_s": need(fp16.get("images_per_s"), "e2e_images_per_s (fid_*.json: e2e fidfast fp16)"),
        "steady_images_per_s": need((fixed.get("fidfast fp16") or {}).get("images_per_s"),
                                    "steady_images_per_s (fid_*.json: fixed_cost fidfast fp16)"),
        "fixed_cost_s": need((fixed.get("fidfast fp16") or {}).get("fixed_s"),
                             "fixed_cost_s (fid_*.json: fixed_cost fidfast fp16)"),
        "fp32_images_per_s": need(summary(fid, "e2e", "fidfast fp32").get("images_per_s") if fid else None,
                                  "fp32_images_per_s (fid_*.json: e2e fidfast fp32)"),
        "compile_images_per_s": need(summary(fid, "e2e", "fidfast fp16 compile").get("images_per_s") if fid else None,
                                     "compile_images_per_s (fid_*.json: e2e fidfast fp16 compile)"),
        "compile_steady_images_per_s": (fixed.get("fidfast fp16 compile") or {}).get("images_per_s"),
        "aot_build_s": need(build.get("aot_build_s"),
                            "aot_build_s (fid_*.json: " + ("the compiled network was already in the cache)"
                                                           if build.get("cache_warm_before") else "no aot_build run)")),
        "speedup_vs_pytorch_fid": need(fp16.get("speedup"), "speedup_vs_pytorch_fid (fid_*.json: e2e pytorch-fid)"),
        "pytorch_fid_sqrtm_shim": (fid.get("config") or {}).get("pytorch_fid_sqrtm_shim"),
        "training_speedup_vs_torchmetrics": need((training or {}).get("speedup"),
                                                 "training_speedup_vs_torchmetrics (training_*.json)"),
        "training_update_speedup": (training or {}).get("update_speedup"),
        "training_fp16_update_speedup": (((training or {}).get("variants") or {}).get("fidfast fp16") or {}).get(
            "update_speedup"),
        "fp16_fid_rel_diff": need(fp16_fid_shift(fid) if fid else None,
                                  "fp16_fid_rel_diff (fid_*.json: e2e fidfast fp16 and fp32 FIDs)"),
        "tests": tests, "sanitizer": checks,
        "steps": {stage: {"exit_codes": statuses(folder), "seconds": statuses(folder, "seconds.txt")}
                  for stage, folder in (("kernels", kernels), ("suite", suite), ("bench", bench))},
        "targets": fid.get("targets"),
        "sources": {"bench_fid": fid_file, "bench_network": network_file, "bench_training": training_file},
    }
    r["missing"] = missing
    return r


def fmt(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2e}" if 0 < abs(value) < 0.01 else f"{value:.3g}"
    return "—" if value is None else str(value)


KEYS = ("cuda_tests_passed", "cpu_op_tests_passed", "sanitizer_clean", "model_images_per_s",
        "model_aoti_images_per_s", "e2e_images_per_s", "steady_images_per_s", "fixed_cost_s", "fp32_images_per_s",
        "compile_images_per_s", "compile_steady_images_per_s", "aot_build_s", "speedup_vs_pytorch_fid",
        "pytorch_fid_sqrtm_shim", "training_speedup_vs_torchmetrics", "training_update_speedup",
        "training_fp16_update_speedup", "fp16_fid_rel_diff")


def markdown(r: dict) -> str:
    lines: List[str] = [f"# fidfast on a GPU: {r['device'] or 'unknown device'}, {r['date']}", "",
                        f"torch {r['torch']} (CUDA {r['cuda']}, cuDNN {r['cudnn']}), {fmt(r['cpu_cores'])} CPU "
                        f"cores; commit {r['commit']}", "", "| what | value |", "| --- | ---: |"]
    lines += [f"| {key} | {fmt(r[key])} |" for key in KEYS]
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
    steps: Dict[str, dict] = r["steps"]
    ran = [f"{stage}/{step} {fmt(s['seconds'].get(step))} s (exit {rc})" for stage, s in steps.items()
           for step, rc in s["exit_codes"].items()]
    if ran:
        lines += ["", "Steps: " + "; ".join(ran) + "."]
    if r["targets"]:
        lines += ["", "| target | goal | measured | status |", "| --- | ---: | ---: | --- |"]
        lines += [f"| {t['target']} | {t['goal']:g} | {fmt(t['value'])} | {t['status']} |" for t in r["targets"]]
    if r["missing"]:
        lines += ["", "Missing: " + "; ".join(r["missing"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the folder holding kernels/, suite/, bench/")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    r = record(args.root)
    stem = f"gpu_{file_name_part(r['device'] or 'gpu')}_{(r['date'] or 'undated').replace('-', '')}"
    write_results(stem, r, markdown(r), args.out)
    print(markdown(r))


if __name__ == "__main__":
    main()
