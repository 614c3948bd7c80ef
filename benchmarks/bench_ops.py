#!/usr/bin/env python
"""Times fidfast's native ops against their PyTorch twins, and each Fréchet method's tr √(Σ₁Σ₂).

Ops (median of --repeats after --warmup runs, per device):
    resize_normalize   a batch of decoded JPEG-sized images → 299×299 network input
                       (native op against preprocess.resize_normalize_reference, pytorch-fid's own arithmetic),
                       and on the CPU each protocol's against the tool it comes from (torch-fidelity's TF1
                       bilinear, clean-fid's PIL bicubic, F.interpolate with and without antialias)
    cov_update_        one batch of 2048-d features into the streaming statistics
    cov_merge_         merging two 2048-d states
    sqrtm_newton_schulz

tr √(Σ₁Σ₂) for d = 2048 by fidfast.frechet.trace_sqrt, each method once (several take seconds on a CPU),
on a full-rank pair (N > d samples) and a rank-deficient pair (N = 300 < d, as small FID runs give):
    scipy           scipy.linalg.sqrtm(Σ₁Σ₂), what pytorch-fid 0.3.0 does (CPU only; --skip-scipy)
    eigh            Σ₁ = V Λ Vᵀ, then eigvalsh((V√Λ)ᵀ Σ₂ V√Λ)
    cholesky        Σ₁ = LLᵀ, then eigvalsh(Lᵀ Σ₂ L) (eigh when Σ₁ is singular: what method="auto" does)
    newton_schulz   √Σ₁ and √(√Σ₁ Σ₂ √Σ₁) by sqrtm_newton_schulz
The error column is relative to the eigh value.

Writes ops_<device-kind>.json and .md under --out (default benchmarks/results/).

    python benchmarks/bench_ops.py [--device cpu|cuda|all] [--skip-scipy]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from core import RESULTS, device_kind, machine_info, synchronize, time_passes, write_results

from fidfast import frechet, native, stats
from fidfast.preprocess import (PROTOCOLS, PackedBatch, pack, protocols_of, resize_normalize,
                                resize_normalize_reference)

D = 2048


def bench_ops(device: torch.device, warmup: int, repeats: int) -> list:
    rng = np.random.default_rng(0)
    twins = {"torch": (resize_normalize_reference, stats._cov_update_torch, stats._cov_merge_torch,
                       frechet._sqrtm_newton_schulz_torch)}
    if native.has_kernel(device):
        ops = torch.ops.fidfast
        twins["native"] = (resize_normalize, ops.cov_update_, ops.cov_merge_, frechet.sqrtm_newton_schulz)

    packed = pack([rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8) for _ in range(50)])
    batch_on_device = PackedBatch(packed.data.to(device), packed.meta)
    features = torch.from_numpy(np.abs(rng.standard_normal((256, D)))).float().to(device)
    state = (torch.rand(D, dtype=torch.float64, device=device), torch.eye(D, dtype=torch.float64, device=device))
    other = (torch.rand(D, dtype=torch.float64, device=device), torch.eye(D, dtype=torch.float64, device=device))
    k = 512
    spd = torch.from_numpy(np.cov(rng.standard_normal((4 * k, k)), rowvar=False)).to(device)

    rows = []
    for name, (resize, update, merge, sqrtm) in twins.items():
        cases = [
            ("resize_normalize", "50 × 375×500×3 uint8 → 50×3×299×299 fp32",
             lambda: resize(batch_on_device, 299, torch.float32, False), 50),
            ("cov_update_", f"256×{D} fp32 batch into d={D}", lambda: update(*state, 1000, features), None),
            ("cov_merge_", f"d={D}", lambda: merge(*state, 1000, *other, 500), None),
            ("sqrtm_newton_schulz", f"{k}×{k} SPD, tol 1e-14", lambda: sqrtm(spd, 100, 1e-14), None),
        ]
        for op, shape, fn, items in cases:
            for _ in range(max(0, warmup - 1)):
                fn()
            seconds = time_passes(fn, device, repeats)["seconds"]
            row = {"op": op, "impl": name, "device": device.type, "shape": shape, "median_ms": 1e3 * seconds,
                   "repeats": repeats}
            if items:
                row["items_per_s"] = items / seconds
            rows.append(row)
            print(f"{op:22s} {name:7s} {device.type:5s} {1e3 * seconds:10.2f} ms  {shape}", flush=True)
    return rows


def anchors() -> dict:
    """Each protocol's own preprocessing in the tool it comes from, on a uint8 N×H×W×3 batch (the float
    conversion included, as each tool does it); None where the tool is not installed."""
    import torch.nn.functional as F

    def pytorch_fid(x):
        return F.interpolate(x.permute(0, 3, 1, 2).float() / 255, size=(299, 299), mode="bilinear",
                             align_corners=False) * 2 - 1

    def torchmetrics(x):
        return (F.interpolate(x.permute(0, 3, 1, 2).float(), size=(299, 299), mode="bilinear", align_corners=False,
                              antialias=True) - 128) / 128

    found = {"pytorch-fid": ("F.interpolate (pytorch-fid)", pytorch_fid),
             "torchmetrics": ("F.interpolate, antialias (torchmetrics)", torchmetrics)}
    try:
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        found["tf"] = ("torch-fidelity's TF1 bilinear", lambda x: (interpolate_bilinear_2d_like_tensorflow1x(
            x.permute(0, 3, 1, 2).float(), size=(299, 299), align_corners=False) - 128) / 128)
    except ImportError:
        found["tf"] = None
    try:
        from cleanfid.resize import build_resizer

        resize = build_resizer("clean")
        found["clean"] = ("clean-fid's PIL bicubic, per image", lambda x: [(resize(img) - 128) / 128
                                                                            for img in x.numpy()])
    except ImportError:
        found["clean"] = None
    return found


def bench_protocols(warmup: int, repeats: int) -> list:
    """Each protocol's preprocessing: fidfast's native op against the tool's own, on the CPU."""
    rng = np.random.default_rng(2)
    images = torch.from_numpy(np.stack([rng.integers(0, 256, size=(375, 500, 3), dtype=np.uint8) for _ in range(50)]))
    batch = pack(images)
    cpu = torch.device("cpu")
    rows = []
    for name, protocol in ((n, PROTOCOLS[n]) for n in protocols_of("inception")):
        timings = {"fidfast": ("native resize_normalize", lambda: resize_normalize(batch, protocol=protocol))}
        if anchors()[name] is not None:
            label, fn = anchors()[name]
            timings["anchor"] = (label, lambda fn=fn: fn(images))
        for impl, (label, fn) in timings.items():
            for _ in range(max(0, warmup - 1)):
                fn()
            seconds = time_passes(fn, cpu, repeats)["seconds"]
            rows.append({"protocol": name, "impl": impl, "what": label, "images_per_s": len(images) / seconds,
                         "median_ms": 1e3 * seconds})
            print(f"{name:13s} {impl:8s} {len(images) / seconds:9.0f} img/s  {label}", flush=True)
    return rows


def covariances(rng: np.random.Generator, n: int) -> tuple:
    """Two d×d covariances of n non-negative, correlated, Inception-like feature rows."""
    out = []
    for _ in range(2):
        q = np.linalg.qr(rng.standard_normal((D, D)))[0]
        x = np.abs(rng.standard_normal((n, D)) * np.geomspace(1.0, 1e-3, D) @ q.T)
        out.append(np.cov(x, rowvar=False))
    return tuple(out)


def bench_frechet(device: torch.device, skip_scipy: bool, n_full: int, n_small: int) -> list:
    rng = np.random.default_rng(1)
    rows = []
    for case, n in (("full rank", n_full), ("rank-deficient", n_small)):
        s1, s2 = (torch.from_numpy(s).to(device) for s in covariances(rng, n))
        methods = ["eigh", "cholesky", "newton_schulz"]
        if device.type == "cpu" and not skip_scipy:
            methods.insert(0, "scipy")
        results = {}
        for method in methods:
            synchronize(device)
            start = time.perf_counter()
            value = frechet.trace_sqrt(s1, s2, method)
            synchronize(device)
            results[method] = (time.perf_counter() - start, value)
        reference = results["eigh"][1]
        for method, (seconds, value) in results.items():
            error = abs(value - reference) / abs(reference)
            rows.append({"case": f"{case} (N={n}, d={D})", "method": method, "device": device.type,
                         "seconds": seconds, "trace_sqrt": value, "rel_error_vs_eigh": error})
            print(f"{case:15s} {method:14s} {device.type:5s} {seconds:8.2f} s  rel.err {error:.1e}", flush=True)
    return rows


def markdown(info: dict, device: str, ops: list, frechet_rows: list, protocol_rows: list) -> str:
    gpu = (info.get("gpu") or {}).get("name")
    lines = [f"# fidfast ops benchmark ({device})", "",
             f"- machine: {gpu + ', ' if gpu else ''}{info['cpu']}, {info['cpu_cores_usable']} usable cores",
             f"- torch {info['torch']} ({info['torch_threads']} threads), Python {info['python']}",
             f"- fidfast native ops: CPU {info['fidfast']['native_cpu']}, CUDA {info['fidfast']['native_cuda']}; "
             f"commit {(info['git_commit'] or 'unknown')[:10]}{' + uncommitted changes' if info['git_dirty'] else ''}",
             "", "## Ops (median)", "", "| op | impl | shape | median ms | items/s |", "|---|---|---|---:|---:|"]
    for r in ops:
        items = f"{r['items_per_s']:.0f}" if "items_per_s" in r else ""
        lines.append(f"| {r['op']} | {r['impl']} | {r['shape']} | {r['median_ms']:.2f} | {items} |")
    if protocol_rows:
        lines += ["", "## Each protocol's preprocessing, 50 × 375×500×3 uint8 → 50×3×299×299 (median)", "",
                  "| protocol | fidfast (native op) | the tool's own | speedup |", "|---|---:|---:|---:|"]
        for name in protocols_of("inception"):
            ours = next(r for r in protocol_rows if r["protocol"] == name and r["impl"] == "fidfast")
            theirs = next((r for r in protocol_rows if r["protocol"] == name and r["impl"] == "anchor"), None)
            lines.append(f"| {name} | {ours['images_per_s']:.0f} img/s | " + (
                f"{theirs['images_per_s']:.0f} img/s ({theirs['what']}) | "
                f"{ours['images_per_s'] / theirs['images_per_s']:.1f}× |" if theirs else "not installed | |"))
    lines += ["", "## tr √(Σ₁Σ₂), one run each", "", "| case | method | seconds | rel. error vs eigh |",
              "|---|---|---:|---:|"]
    for r in frechet_rows:
        lines.append(f"| {r['case']} | {r['method']} | {r['seconds']:.2f} | {r['rel_error_vs_eigh']:.1e} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="'all': the CPU, and CUDA when available")
    parser.add_argument("--skip-scipy", action="store_true",
                        help="skip scipy.linalg.sqrtm (about 8 s at d=2048 on 2 cores)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-full", type=int, default=4096, help="samples behind the full-rank covariances")
    parser.add_argument("--n-small", type=int, default=300, help="samples behind the rank-deficient covariances")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    args = parser.parse_args()

    devices = ["cpu", "cuda"] if args.device == "all" else [args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        if args.device == "cuda":
            parser.error("no CUDA device")
        devices.remove("cuda")
    for name in devices:
        device = torch.device(name)
        info = machine_info(device)
        ops = bench_ops(device, args.warmup, args.repeats)
        protocol_rows = bench_protocols(args.warmup, args.repeats) if name == "cpu" else []
        frechet_rows = bench_frechet(device, args.skip_scipy, args.n_full, args.n_small)
        report = {"machine": info, "ops": ops, "protocols": protocol_rows, "frechet_trace_sqrt": frechet_rows}
        write_results(f"ops_{device_kind(device)}", report, markdown(info, name, ops, frechet_rows, protocol_rows),
                      args.out)


if __name__ == "__main__":
    main()
