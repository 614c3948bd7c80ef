"""Command lines timed side by side: pytorch-fid's and fidfast's, each a fresh process (imports, model
build and worker start-up count for both), interleaved round by round."""
from __future__ import annotations

import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from core import DIMS, REPO


def subprocess_env(torch_home: Path) -> Dict[str, str]:
    env = dict(os.environ, TORCH_HOME=str(torch_home), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(cmd: List[str], env: Dict[str, str]) -> dict:
    """Wall time of one command line, its CPU time (with its worker processes), exit code and output."""
    cpu_start = _children_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": _children_cpu_seconds() - cpu_start, "rc": proc.returncode,
            "stdout": proc.stdout, "stderr": proc.stderr}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def outcome(case: str, variant: str, run: dict) -> Tuple[Optional[float], Optional[str]]:
    """(FID, problem) from a command's output: a failed run gives its last error line (pytorch-fid's
    "ValueError: Imaginary component ..."); the statistics case has no FID."""
    if run["rc"] != 0:
        return None, f"exit {run['rc']}: {_last_line(run['stderr'])[:300]}"
    if case == "stats":
        return None, None
    if variant == "pytorch-fid":
        match = re.search(r"FID:\s+(\S+)", run["stdout"])
        note = "printed 'singular product' (added eps to the diagonal)" if "singular product" in run["stdout"] else None
        return (float(match.group(1)), note) if match else (None, "no FID in its output")
    try:
        return float(json.loads(_last_line(run["stdout"]))["fid"]), None
    except (ValueError, KeyError) as exc:
        return None, f"unreadable --json output ({exc})"


def command_variants(case: str, a: Path, b: Path, out_dir: Path, device: str, precisions: Sequence[str],
                     with_pytorch_fid: bool) -> Dict[str, List[str]]:
    """The command lines of one case, by variant name ('pytorch-fid', 'fidfast fp32', ...)."""
    py = sys.executable
    variants: Dict[str, List[str]] = {}
    if case == "stats":
        if with_pytorch_fid:
            variants["pytorch-fid"] = [py, "-m", "pytorch_fid", "--save-stats", str(a),
                                       str(out_dir / "pytorch_fid.npz"), "--device", device, "--dims", str(DIMS)]
        for p in precisions:
            variants[f"fidfast {p}"] = [py, "-m", "fidfast", str(a), str(out_dir / f"fidfast_{p}.npz"),
                                        "--save-stats", "--device", device, "--dims", str(DIMS), "--precision", p,
                                        "--no-cache", "--quiet"]
    else:
        if with_pytorch_fid:
            variants["pytorch-fid"] = [py, "-m", "pytorch_fid", str(a), str(b), "--device", device,
                                       "--dims", str(DIMS)]
        for p in precisions:
            variants[f"fidfast {p}"] = [py, "-m", "fidfast", str(a), str(b), "--device", device,
                                        "--dims", str(DIMS), "--precision", p, "--no-cache", "--quiet", "--json"]
    return variants


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / np.linalg.norm(b))


def compare_saved_stats(out_dir: Path, variants: Sequence[str]) -> Dict[str, dict]:
    """Each fidfast .npz against pytorch-fid's: relative differences of mu and sigma."""
    ref_path = out_dir / "pytorch_fid.npz"
    if not ref_path.exists():
        return {}
    with np.load(ref_path) as ref:
        mu_ref, sigma_ref = ref["mu"], ref["sigma"]
    found = {}
    for name in variants:
        path = out_dir / f"{name.replace(' ', '_')}.npz"
        if name != "pytorch-fid" and path.exists():
            with np.load(path) as f:
                found[name] = {"mu_rel_diff": relative_difference(f["mu"], mu_ref),
                               "sigma_rel_diff": relative_difference(f["sigma"], sigma_ref)}
    return found


def summarise_case(runs: Dict[str, List[dict]], n_images: int) -> Dict[str, dict]:
    """Median seconds, images/s, speedup over pytorch-fid and FID difference, per variant."""
    summary: Dict[str, dict] = {}
    ref = runs.get("pytorch-fid")
    ref_seconds = statistics.median(r["seconds"] for r in ref) if ref else None
    ref_fid = ref[0]["fid"] if ref else None
    for name, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        fid = rs[0]["fid"]
        summary[name] = {
            "seconds": seconds, "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "images_per_s": n_images / seconds,
            "speedup": (ref_seconds / seconds) if ref_seconds else None,
            "fid": fid, "problem": next((r["problem"] for r in rs if r["problem"]), None),
            "all_ok": all(r["rc"] == 0 for r in rs),
            "fid_rel_diff": (abs(fid - ref_fid) / abs(ref_fid)
                             if name != "pytorch-fid" and fid is not None and ref_fid else None),
        }
    return summary


def bench_command_lines(case: str, a: Path, b: Path, n_images: int, device: str, precisions: Sequence[str],
                        with_pytorch_fid: bool, repeat: int, env: Dict[str, str], scratch: Path) -> dict:
    """Every variant of one case ``repeat`` times, interleaved (order reversed on odd rounds); medians."""
    runs: Dict[str, List[dict]] = {}
    commands: Dict[str, List[str]] = {}
    agreement: Dict[str, dict] = {}
    for r in range(repeat):
        out_dir = scratch / f"{case}_{r}"
        out_dir.mkdir(parents=True)
        variants = command_variants(case, a, b, out_dir, device, precisions, with_pytorch_fid)
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            run = time_command(variants[name], env)
            fid, problem = outcome(case, name, run)
            runs.setdefault(name, []).append({"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"],
                                              "rc": run["rc"], "fid": fid, "problem": problem,
                                              "stderr_tail": run["stderr"][-2000:]})
            print(f"  {case:5s} {name:14s} {run['seconds']:8.2f} s  rc={run['rc']}"
                  + (f"  FID={fid:.6g}" if fid is not None else "") + (f"  ({problem})" if problem else ""),
                  file=sys.stderr, flush=True)
        commands = dict(variants)
        if case == "stats" and r == 0:
            agreement = compare_saved_stats(out_dir, list(variants))
    return {"n_images": n_images, "commands": commands, "runs": runs,
            "summary": summarise_case(runs, n_images), "stats_agreement": agreement}
