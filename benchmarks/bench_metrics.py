#!/usr/bin/env python
"""Times fidfast.prdc against prdc 0.2's compute_prdc on the same features, side by side in one run, and
what FID∞ and the bootstrap interval cost.

Features: seeded random float32, half-normal (non-negative, as Inception's pool3 features are), the fakes
spread 1% wider (so that none of the four values is 0 or 1). Both tools compute precision, recall, density
and coverage of the same N×d real and M×d fake features; the results must be equal (the run stops
otherwise). prdc holds three N×N float32
distance matrices (3 GB at 5000², 30 GB at 50k²): --skip-prdc times fidfast alone, for GPU runs at 50k.
Also timed on the same features: fidfast.fid_infinity (15 subset sizes) and fidfast.fid_bootstrap with a
few resamples, reported per resample (the interval's default is 100).

Then the ADM evaluator's precision and recall (k = 3, ≤) on N×d pool3-like features (non-negative, low-rank,
a common mean; --adm-offset raises the mean against the spread): fidfast.neighbours.improved_precision_recall
exact and with distances="fp16-blocks" (the evaluator's float16 arithmetic), their difference, and
torch-fidelity 0.4's prc on the same features (its float32 torch.cdist; skipped with --skip-prdc).

Writes benchmarks/results/prdc_<device-kind>.json and .md.

    python benchmarks/bench_metrics.py [--n 5000] [--dims 2048] [--device cpu|cuda] [--skip-prdc]
                                       [--adm-offset 0.4] [--adm-spread 0.3]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time
from pathlib import Path

import numpy as np
import torch
from core import RESULTS, _version, device_kind, machine_info, synchronize, time_passes, write_results

import fidfast
from fidfast.neighbours import improved_precision_recall

KEYS = ("precision", "recall", "density", "coverage")


def features(n: int, dims: int, seed: int) -> tuple:
    rng = np.random.default_rng(seed)
    real = np.abs(rng.standard_normal((n, dims))).astype(np.float32)
    fake = (np.abs(rng.standard_normal((n, dims))) * 1.01).astype(np.float32)  # all four values between 0 and 1
    return real, fake


def pool3_like(n: int, dims: int, seed: int, offset: float, spread: float, rank: int = 32) -> tuple:
    """Seeded float32 features shaped like Inception's pool_3: max(0, z·A + offset) with z of rank 32, the
    fakes' latent shifted by 0.1 and 5% wider (precision and recall strictly between 0 and 1)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((rank, dims)) / np.sqrt(rank) * spread
    real = np.maximum(rng.standard_normal((n, rank)) @ mix + offset, 0).astype(np.float32)
    fake = np.maximum((rng.standard_normal((n, rank)) * 1.05 + 0.1) @ mix + offset, 0).astype(np.float32)
    return real, fake


def norm_to_distance_ratio(x: np.ndarray) -> float:
    """Mean squared norm over the median squared distance (of the first 300 rows): how much of ‖u‖² − 2u·v
    + ‖v‖² cancels, which sets the float16 distances' error."""
    sub = x[:300].astype(np.float64)
    return float((x.astype(np.float64) ** 2).sum(1).mean() / np.median(((sub[:, None] - sub[None]) ** 2).sum(-1)))


def adm_precision_recall(args, device: torch.device) -> dict:
    """fidfast's exact and fp16-blocks improved precision and recall, and torch-fidelity's, timed."""
    real, fake = pool3_like(args.n, args.dims, 1, args.adm_offset, args.adm_spread)
    on_device = torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device)
    rows = []
    for distances in ("exact", "fp16-blocks"):
        t = time_passes(lambda: improved_precision_recall(*on_device, distances=distances), device, args.adm_repeat)
        rows.append({"tool": f"fidfast {distances} ({device.type})", "seconds": t["seconds"],
                     "all_seconds": t["all_seconds"], "values": t["result"]})
        print(f"improved_precision_recall {distances}: {t['seconds']:.2f} s {t['result']}", flush=True)
    exact, fp16 = rows[0]["values"], rows[1]["values"]
    out = {"norm_to_distance_ratio": norm_to_distance_ratio(real), "rows": rows,
           "fp16_minus_exact": {key: fp16[key] - exact[key] for key in exact}}
    if not args.skip_prdc:
        from torch_fidelity.metric_prc import calculate_precision_recall_part

        seconds, (precision, recall) = timed(lambda: calculate_precision_recall_part(on_device[1], on_device[0], 3),
                                             device)
        theirs = {"precision": precision, "recall": recall}
        rows.append({"tool": f"torch-fidelity {_version('torch-fidelity')} prc ({device.type})", "seconds": seconds,
                     "all_seconds": [seconds], "values": theirs})
        out["torch_fidelity_equal"] = all(abs(theirs[key] - exact[key]) <= 1e-6 for key in exact)
        print(f"torch-fidelity prc: {seconds:.2f} s {theirs}", flush=True)
    return out


def timed(fn, device: torch.device) -> tuple:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def markdown(info: dict, report: dict) -> str:
    a = report["args"]
    lines = [f"# prdc benchmark ({report['device']})", "",
             f"- machine: {info['cpu']}, {info['cpu_cores_usable']} usable cores"
             + (f", {info['gpu']['name']}" if info["gpu"] else "") + f", {info['ram_gib']} GiB",
             f"- load average at start: {', '.join(f'{x:.2f}' for x in info['load_average_at_start'])}",
             f"- torch {info['torch']} ({info['torch_threads']} threads), prdc {report['prdc_version']}, "
             f"scikit-learn {report['sklearn_version']}; commit {(info['git_commit'] or '?')[:10]}",
             f"- features: {a['n']} real × {a['n']} fake × {a['dims']} float32 (seeded half-normal), k = {a['k']}",
             "", "## precision, recall, density, coverage", "",
             "| tool | seconds | precision | recall | density | coverage |", "|---|---:|---:|---:|---:|---:|"]
    for row in report["prdc"]:
        v = row["values"]
        lines.append(f"| {row['tool']} | {row['seconds']:.2f} | {v['precision']:.6g} | {v['recall']:.6g} | "
                     f"{v['density']:.6g} | {v['coverage']:.6g} |")
    if report.get("speedup"):
        lines += ["", f"fidfast is **{report['speedup']:.1f}×** faster than prdc (medians: fidfast of "
                  f"{a['repeat']} runs, prdc of {a['prdc_repeat']}); largest difference of the four values: "
                  f"{report['max_abs_difference']:.1e}."]
    s = report["subsample"]
    per_resample = s["bootstrap_seconds_per_resample"]
    lines += ["", "## FID∞ and the bootstrap interval, on the same features", "",
              "| what | seconds |", "|---|---:|",
              f"| fid_infinity (15 subset sizes, min(5000, N/2) to N) | {s['fid_inf_seconds']:.2f} |",
              f"| fid_bootstrap, per resample ({s['bootstrap_resamples']} timed) | {per_resample:.2f} |",
              f"| fid_bootstrap, 100 resamples (the default), estimated | {100 * per_resample:.0f} |"]
    adm = report["adm"]
    lines += ["", "## The ADM evaluator's precision and recall (k = 3, ≤)", "",
              f"pool3-like features, {a['n']} real × {a['n']} fake × {a['dims']} (offset {a['adm_offset']}, spread "
              f"{a['adm_spread']}: mean squared norm {adm['norm_to_distance_ratio']:.2f}× the median squared "
              "distance)", "", "| tool | seconds | precision | recall |", "|---|---:|---:|---:|"]
    for row in adm["rows"]:
        v = row["values"]
        lines.append(f"| {row['tool']} | {row['seconds']:.2f} | {v['precision']:.6g} | {v['recall']:.6g} |")
    d = adm["fp16_minus_exact"]
    lines += ["", f"fp16-blocks − exact: precision {d['precision']:+.4f}, recall {d['recall']:+.4f}"
              + (f"; torch-fidelity equal to exact: {adm['torch_fidelity_equal']}" if "torch_fidelity_equal" in adm
                 else "") + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="real and fake features each")
    parser.add_argument("--dims", type=int, default=2048)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="fidfast runs (median)")
    parser.add_argument("--prdc-repeat", type=int, default=1, help="prdc runs (median); ~30 s each at 5000² on 2 cores")
    parser.add_argument("--skip-prdc", action="store_true", help="fidfast alone (prdc cannot hold 50k² matrices)")
    parser.add_argument("--bootstrap-resamples", type=int, default=3, help="resamples timed for fid_bootstrap")
    parser.add_argument("--adm-offset", type=float, default=0.4, help="pool3-like features' offset (common mean)")
    parser.add_argument("--adm-spread", type=float, default=0.3, help="pool3-like features' spread")
    parser.add_argument("--adm-repeat", type=int, default=1, help="improved_precision_recall runs (median)")
    parser.add_argument("--tag", default="", help="appended to the results' file names")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    args = parser.parse_args()
    device = torch.device(args.device)
    info = machine_info(device)
    real, fake = features(args.n, args.dims, seed=0)
    on_device = torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device)

    ours = time_passes(lambda: fidfast.prdc(*on_device, args.k), device, args.repeat)
    rows = [{"tool": f"fidfast {fidfast.__version__} ({device.type})", "seconds": ours["seconds"],
             "all_seconds": ours["all_seconds"], "values": ours["result"]}]
    print(f"fidfast: {ours['seconds']:.2f} s {ours['result']}", flush=True)
    report = {"device": device_kind(device), "args": {**vars(args), "out": str(args.out)},
              "prdc_version": _version("prdc"), "sklearn_version": _version("scikit-learn"), "prdc": rows}
    if not args.skip_prdc:
        from prdc import compute_prdc

        times = []
        for _ in range(args.prdc_repeat):
            with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the counts
                seconds, theirs = timed(lambda: compute_prdc(real, fake, nearest_k=args.k), torch.device("cpu"))
            times.append(seconds)
        theirs = {key: float(theirs[key]) for key in KEYS}
        rows.append({"tool": f"prdc {_version('prdc')} (CPU, sklearn)", "seconds": float(np.median(times)),
                     "all_seconds": times, "values": theirs})
        print(f"prdc: {np.median(times):.2f} s {theirs}", flush=True)
        report["max_abs_difference"] = max(abs(ours["result"][key] - theirs[key]) for key in KEYS)
        report["speedup"] = float(np.median(times)) / ours["seconds"]
        if report["max_abs_difference"] > 1e-9:
            raise SystemExit(f"fidfast and prdc differ: {ours['result']} against {theirs}")

    seconds, _ = timed(lambda: fidfast.fid_infinity(*on_device), device)
    boot, _ = timed(lambda: fidfast.fid_bootstrap(*on_device, num_resamples=args.bootstrap_resamples), device)
    report["subsample"] = {"fid_inf_seconds": seconds, "bootstrap_resamples": args.bootstrap_resamples,
                           # the FID of all the features, then one per resample
                           "bootstrap_seconds_per_resample": boot / (args.bootstrap_resamples + 1)}
    report["adm"] = adm_precision_recall(args, device)
    report["machine"] = info
    name = f"prdc_{device_kind(device)}" + (f"_{args.tag}" if args.tag else "")
    print(markdown(info, report))
    write_results(name, report, markdown(info, report), out=args.out)


if __name__ == "__main__":
    main()
