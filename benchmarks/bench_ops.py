"""Times fidfast's native ops against their PyTorch twins, and Fréchet-style matrix square roots.

Ops (median of --repeats after --warmup runs, per device):
    resize_normalize   a batch of decoded JPEG-sized images -> 299×299 Inception input
    cov_update_        one batch of 2048-d features into the streaming statistics
    cov_merge_         merging two 2048-d states
    sqrtm_newton_schulz

tr √(Σ₁Σ₂) for d = 2048 (each method once: several take tens of seconds on a laptop-class CPU),
on a full-rank pair (N > d samples) and a rank-deficient pair (N = 300 < d, as for small FID runs):
    scipy           scipy.linalg.sqrtm(Σ₁Σ₂), what pytorch-fid 0.3.0 does (CPU only; --skip-scipy)
    eigh            √Σ₁ by eigh, then eigvalsh(√Σ₁ Σ₂ √Σ₁)
    cholesky        Σ₁ = LLᵀ, then eigvalsh(Lᵀ Σ₂ L) (needs Σ₁ positive definite)
    newton_schulz   √Σ₁ and √(√Σ₁ Σ₂ √Σ₁) by sqrtm_newton_schulz
The error column is relative to the eigh value.

Writes benchmarks/results/ops_<device>.json and .md.

    python benchmarks/bench_ops.py [--device cpu|cuda|all] [--skip-scipy]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from fidfast import _ops

RESULTS = Path(__file__).resolve().parent / "results"
D = 2048


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str) -> dict:
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "native": _ops.NATIVE,
        "native_cuda": _ops.native_cuda(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], device: str, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- ops ------------------------------------------------------------------------------------------

def bench_ops(device: str, warmup: int, repeats: int) -> list:
    rng = np.random.default_rng(0)
    impls = {"torch": (_ops._resize_normalize_torch, _ops._cov_update_torch, _ops._cov_merge_torch,
                       _ops._sqrtm_newton_schulz_torch)}
    if _ops.NATIVE and (device == "cpu" or _ops.native_cuda()):
        ops = torch.ops.fidfast
        impls["native"] = (ops.resize_normalize, ops.cov_update_, ops.cov_merge_, ops.sqrtm_newton_schulz)

    images = [rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8) for _ in range(50)]
    data, meta = _ops.pack_images(images)
    data, meta = data.to(device), meta.to(device)
    batch = torch.from_numpy(np.abs(rng.standard_normal((256, D)))).float().to(device)
    state = (torch.rand(D, dtype=torch.float64, device=device), torch.eye(D, dtype=torch.float64, device=device))
    other = (torch.rand(D, dtype=torch.float64, device=device), torch.eye(D, dtype=torch.float64, device=device))
    k = 512
    spd = torch.from_numpy(np.cov(rng.standard_normal((4 * k, k)), rowvar=False)).to(device)

    rows = []
    for name, (resize, update, merge, sqrtm) in impls.items():
        cases = [
            ("resize_normalize", "50 × 375×500×3 uint8 → 50×3×299×299 fp32",
             lambda: resize(data, meta, 299, torch.float32, False), 50),
            ("cov_update_", f"256×{D} fp32 batch into d={D}",
             lambda: update(*state, 1000, batch), None),
            ("cov_merge_", f"d={D}", lambda: merge(*state, 1000, *other, 500), None),
            ("sqrtm_newton_schulz", f"{k}×{k} SPD, tol 1e-14", lambda: sqrtm(spd, 100, 1e-14), None),
        ]
        for op, shape, fn, items in cases:
            seconds = median_seconds(fn, device, warmup, repeats)
            row = {"op": op, "impl": name, "device": device, "shape": shape, "median_ms": 1e3 * seconds,
                   "repeats": repeats}
            if items:
                row["items_per_s"] = items / seconds
            rows.append(row)
            print(f"{op:22s} {name:7s} {device:5s} {1e3 * seconds:10.2f} ms  {shape}", flush=True)
    return rows


# -- tr sqrt(Σ1 Σ2) -------------------------------------------------------------------------------

def covariances(rng: np.random.Generator, n: int) -> tuple:
    """Two d×d covariances of n non-negative, correlated, Inception-like feature rows."""
    out = []
    for _ in range(2):
        q = np.linalg.qr(rng.standard_normal((D, D)))[0]
        x = np.abs(rng.standard_normal((n, D)) * np.geomspace(1.0, 1e-3, D) @ q.T)
        out.append(np.cov(x, rowvar=False))
    return tuple(out)


def trace_sqrt_scipy(s1: np.ndarray, s2: np.ndarray) -> float:
    import scipy.linalg

    return float(np.real(np.trace(scipy.linalg.sqrtm(s1 @ s2))))


def trace_sqrt_eigh(s1: torch.Tensor, s2: torch.Tensor) -> float:
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp_min(0).sqrt()) @ v.T
    m = root1 @ s2 @ root1
    return float(torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum())


def trace_sqrt_cholesky(s1: torch.Tensor, s2: torch.Tensor) -> Optional[float]:
    factor, info = torch.linalg.cholesky_ex(s1)
    if int(info) != 0:
        return None  # Σ₁ singular: no Cholesky factor
    m = factor.T @ s2 @ factor
    return float(torch.linalg.eigvalsh(0.5 * (m + m.T)).clamp_min(0).sqrt().sum())


def trace_sqrt_newton_schulz(s1: torch.Tensor, s2: torch.Tensor) -> float:
    root1, _, _ = _ops.sqrtm_newton_schulz(s1)
    m = root1 @ s2 @ root1
    root, _, _ = _ops.sqrtm_newton_schulz(0.5 * (m + m.T))
    return float(torch.trace(root))


def bench_frechet(device: str, skip_scipy: bool, n_full: int, n_small: int) -> list:
    rng = np.random.default_rng(1)
    rows = []
    for case, n in (("full rank", n_full), ("rank-deficient", n_small)):
        s1, s2 = covariances(rng, n)
        t1, t2 = torch.from_numpy(s1).to(device), torch.from_numpy(s2).to(device)
        methods = [("eigh", lambda: trace_sqrt_eigh(t1, t2)), ("cholesky", lambda: trace_sqrt_cholesky(t1, t2)),
                   ("newton_schulz", lambda: trace_sqrt_newton_schulz(t1, t2))]
        if device == "cpu" and not skip_scipy:
            methods.insert(0, ("scipy", lambda: trace_sqrt_scipy(s1, s2)))
        results = {}
        for name, fn in methods:
            sync(device)
            start = time.perf_counter()
            value = fn()
            sync(device)
            results[name] = (time.perf_counter() - start, value)
        reference = results["eigh"][1]
        for name, (seconds, value) in results.items():
            error = None if value is None else abs(value - reference) / abs(reference)
            rows.append({"case": f"{case} (N={n}, d={D})", "method": name, "device": device, "seconds": seconds,
                         "trace_sqrt": value, "rel_error_vs_eigh": error})
            shown = "n/a" if error is None else f"{error:.1e}"
            print(f"{case:15s} {name:14s} {device:5s} {seconds:8.2f} s  rel.err {shown}", flush=True)
    return rows


# -- report ---------------------------------------------------------------------------------------

def markdown(info: dict, ops: list, frechet: list) -> str:
    lines = [f"# fidfast ops benchmark ({ops[0]['device'] if ops else ''})", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Ops (median)", "", "| op | impl | shape | median ms | items/s |", "|---|---|---|---:|---:|"]
    for r in ops:
        items = f"{r['items_per_s']:.0f}" if "items_per_s" in r else ""
        lines.append(f"| {r['op']} | {r['impl']} | {r['shape']} | {r['median_ms']:.2f} | {items} |")
    lines += ["", "## tr √(Σ₁Σ₂), one run each", "", "| case | method | seconds | rel. error vs eigh |",
              "|---|---|---:|---:|"]
    for r in frechet:
        error = "n/a (Σ₁ singular)" if r["rel_error_vs_eigh"] is None else f"{r['rel_error_vs_eigh']:.1e}"
        lines.append(f"| {r['case']} | {r['method']} | {r['seconds']:.2f} | {error} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="'all': the CPU, and CUDA when available")
    parser.add_argument("--skip-scipy", action="store_true", help="skip scipy.linalg.sqrtm (about 8 s at d=2048 on 2 cores)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-full", type=int, default=4096, help="samples behind the full-rank covariances")
    parser.add_argument("--n-small", type=int, default=300, help="samples behind the rank-deficient covariances")
    args = parser.parse_args()

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("no CUDA device")
        devices.remove("cuda")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for device in devices:
        info = machine(device)
        ops = bench_ops(device, args.warmup, args.repeats)
        frechet = bench_frechet(device, args.skip_scipy, args.n_full, args.n_small)
        report = {"machine": info, "ops": ops, "frechet_trace_sqrt": frechet}
        (RESULTS / f"ops_{device}.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / f"ops_{device}.md").write_text(markdown(info, ops, frechet))
        print(f"wrote {RESULTS / f'ops_{device}.json'} and .md")


if __name__ == "__main__":
    main()
