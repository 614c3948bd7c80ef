"""Command lines timed side by side: pytorch-fid's and fidfast's, each a fresh process (imports, model
build and worker start-up count for both), interleaved round by round; and fidfast's fixed cost and
steady rate, from its end-to-end time at two sizes.

pytorch-fid 0.3.0 calls ``scipy.linalg.sqrtm(..., disp=False)``, an argument SciPy 1.18 removed. Where
the installed ``sqrtm`` lacks it, pytorch-fid runs through a ``python -c`` wrapper that first gives
``sqrtm`` its old signature (:func:`old_sqrtm_signature`; the results say so), then runs
``python -m pytorch_fid`` as it is.
"""
from __future__ import annotations

import inspect
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from core import DIMS, REPO


def subprocess_env(torch_home: Path) -> Dict[str, str]:
    env = dict(os.environ, TORCH_HOME=str(torch_home), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


# -- pytorch-fid on a SciPy without sqrtm(disp=...) -----------------------------------------------

def old_sqrtm_signature(sqrtm):
    """``sqrtm`` with SciPy < 1.18's signature, ``sqrtm(A, disp=True, blocksize=64)``: with ``disp=False``
    it returns ``(X, errest)``, errest computed as old SciPy did, ``‖X·X − A‖_F² / ‖A‖_F`` (its docstring
    says ‖X·X − A‖_F / ‖A‖_F, its code squares the numerator; pytorch-fid discards it). ``blocksize`` is
    ignored (newer SciPy chooses its own). Self-contained: its source is what the ``python -c`` wrapper runs."""
    import numpy as np

    def sqrtm_with_disp(A, disp=True, blocksize=64):
        X = sqrtm(A)
        if disp:
            return X
        try:
            errest = np.linalg.norm(X @ X - A, "fro") ** 2 / np.linalg.norm(A, "fro")
        except ValueError:  # NaNs in X
            errest = np.inf
        return X, errest

    return sqrtm_with_disp


def sqrtm_needs_shim() -> bool:
    """Whether the installed ``scipy.linalg.sqrtm`` lacks ``disp`` (SciPy ≥ 1.18), so pytorch-fid needs the shim."""
    import scipy.linalg

    return "disp" not in inspect.signature(scipy.linalg.sqrtm).parameters


def install_sqrtm_shim() -> bool:
    """Gives ``scipy.linalg.sqrtm`` its old signature in this process when it lacks ``disp`` (for
    pytorch-fid's ``calculate_frechet_distance`` called here); returns whether it did."""
    import scipy.linalg

    if not sqrtm_needs_shim():
        return False
    scipy.linalg.sqrtm = old_sqrtm_signature(scipy.linalg.sqrtm)
    return True


_PYTORCH_FID_WRAPPER = (inspect.getsource(old_sqrtm_signature) + "\nimport runpy, scipy.linalg\n"
                        "scipy.linalg.sqrtm = old_sqrtm_signature(scipy.linalg.sqrtm)\n"
                        "runpy.run_module('pytorch_fid', run_name='__main__', alter_sys=True)\n")


def pytorch_fid_command(args: Sequence[str]) -> List[str]:
    """``python -m pytorch_fid ARGS``, through the sqrtm shim where SciPy needs it."""
    if sqrtm_needs_shim():
        return [sys.executable, "-c", _PYTORCH_FID_WRAPPER, *args]
    return [sys.executable, "-m", "pytorch_fid", *args]


# -- timing one command ---------------------------------------------------------------------------

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
    "ValueError: Imaginary component ..."); the statistics case has no FID; a --compile run that fell back
    to TorchScript says so."""
    if run["rc"] != 0:
        return None, f"exit {run['rc']}: {_last_line(run['stderr'])[:300]}"
    note = "ahead-of-time compilation failed: ran TorchScript" if "compilation failed" in run["stderr"] else None
    if case == "stats":
        return None, note
    if variant == "pytorch-fid":
        match = re.search(r"FID:\s+(\S+)", run["stdout"])
        note = "printed 'singular product' (added eps to the diagonal)" if "singular product" in run["stdout"] else None
        return (float(match.group(1)), note) if match else (None, "no FID in its output")
    try:
        return float(json.loads(_last_line(run["stdout"]))["fid"]), note
    except (ValueError, KeyError) as exc:
        return None, f"unreadable --json output ({exc})"


# -- the variants ---------------------------------------------------------------------------------

def fidfast_variant(name: str) -> Tuple[str, bool]:
    """(precision, compiled) of a variant named 'fidfast fp16', 'fidfast fp16 compile', ..."""
    parts = name.split()
    return parts[1], parts[-1] == "compile"


def command_variants(case: str, a: Path, b: Path, out_dir: Path, device: str, names: Sequence[str]
                     ) -> Dict[str, List[str]]:
    """The command lines of one case (``stats``: one folder's statistics; otherwise end to end), by
    variant name: 'pytorch-fid', 'fidfast fp32', 'fidfast fp16', 'fidfast fp16 compile'."""
    variants: Dict[str, List[str]] = {}
    for name in names:
        if name == "pytorch-fid":
            args = ["--save-stats", str(a), str(out_dir / "pytorch_fid.npz")] if case == "stats" else [str(a), str(b)]
            variants[name] = pytorch_fid_command([*args, "--device", device, "--dims", str(DIMS)])
            continue
        precision, compiled = fidfast_variant(name)
        inputs = ([str(a), str(out_dir / f"{name.replace(' ', '_')}.npz"), "--save-stats"] if case == "stats"
                  else [str(a), str(b)])
        variants[name] = [sys.executable, "-m", "fidfast", *inputs, "--device", device, "--dims", str(DIMS),
                          "--precision", precision, "--no-cache", "--quiet", *(["--json"] if case != "stats" else []),
                          *(["--compile"] if compiled else [])]
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


def new_case(a: Path, b: Path, n_images: int) -> dict:
    """An empty case: its inputs, then runs and their summary as they are measured."""
    return {"n_images": n_images, "folders": [str(a), str(b)], "commands": {}, "runs": {}, "summary": {},
            "stats_agreement": {}}


def run_command(case: str, name: str, cmd: List[str], env: Dict[str, str]) -> dict:
    """One timed command, as a run record (its output's tail kept)."""
    run = time_command(cmd, env)
    fid, problem = outcome(case, name, run)
    print(f"  {case:11s} {name:22s} {run['seconds']:8.2f} s  rc={run['rc']}"
          + (f"  FID={fid:.6g}" if fid is not None else "") + (f"  ({problem})" if problem else ""),
          file=sys.stderr, flush=True)
    return {"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"], "rc": run["rc"], "fid": fid,
            "problem": problem, "stderr_tail": run["stderr"][-2000:]}


def bench_command_lines(found: dict, case: str, device: str, names: Sequence[str], repeat: int,
                        env: Dict[str, str], scratch: Path, measured: Callable[[], None] = lambda: None) -> dict:
    """Every variant in ``names`` of one case ``repeat`` times, interleaved (order reversed on odd rounds),
    added to ``found`` (a :func:`new_case`): its runs, commands and medians. ``measured()`` is called after
    every command (the caller writes its results)."""
    a, b = (Path(f) for f in found["folders"])
    for r in range(repeat):
        out_dir = scratch / f"{case}_{'_'.join(n.replace(' ', '-') for n in names)}_{r}"
        out_dir.mkdir(parents=True, exist_ok=True)
        variants = command_variants(case, a, b, out_dir, device, names)
        for name in (list(variants) if r % 2 == 0 else list(reversed(variants))):
            found["runs"].setdefault(name, []).append(run_command(case, name, variants[name], env))
            found["commands"][name] = variants[name]
            found["summary"] = summarise_case(found["runs"], found["n_images"])
            measured()
        if case == "stats" and r == 0:
            found["stats_agreement"] = compare_saved_stats(out_dir, list(variants))
            measured()
    return found


def fixed_cost(large: dict, small: dict) -> Dict[str, dict]:
    """Per fidfast variant timed at both sizes: T = F + n/r solved for the fixed cost F (s) and the steady
    rate r (images/s) from the median seconds at n = the large and the small case's images. None where
    the larger run was not slower (noise larger than the difference)."""
    found = {}
    for name, s in small["summary"].items():
        big = large["summary"].get(name)
        if big is None or name == "pytorch-fid":
            continue
        n1, t1, n2, t2 = large["n_images"], big["seconds"], small["n_images"], s["seconds"]
        rate = (n1 - n2) / (t1 - t2) if t1 > t2 and n1 > n2 else None
        found[name] = {"fixed_s": t1 - n1 / rate if rate else None, "images_per_s": rate,
                       "images": [n1, n2], "seconds": [t1, t2]}
    return found
