#!/usr/bin/env python
"""How often fidfast.fid_bootstrap's interval holds the true Fréchet distance, beside the plain percentile
interval of the same resamples.

Samples: N(0, I) against N(μ, Σ) in d dims (μ = 0.1, Σ = 0.8 I + AAᵀ with A ~ 0.3·N(0, 1)), whose
Fréchet distance is known exactly; each trial draws fresh samples (seeded), resamples both sets 100
times, and checks whether the basic interval [2F − q₉₇.₅, 2F − q₂.₅] (fidfast's) and the percentile
interval [q₂.₅, q₉₇.₅] hold it.

Writes benchmarks/results/fid_ci_coverage_<device-kind>.json and .md.

    python benchmarks/bench_interval.py [--trials 200] [--resamples 100]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from core import RESULTS, device_kind, machine_info, write_results

from fidfast import frechet_distance
from fidfast.subsample import basic_interval, bootstrap_fids

CASES = [(8, 500), (32, 2000)]  # (d, samples a side); the first is test_subsample.py's


def coverage(d: int, n: int, trials: int, resamples: int, level: float, seed: int) -> dict:
    rng = np.random.default_rng([seed, d, n])
    a = rng.normal(size=(d, d)) * 0.3
    sigma, mu = np.eye(d) * 0.8 + a @ a.T, np.full(d, 0.1)
    exact = frechet_distance(np.zeros(d), np.eye(d), mu, sigma)
    chol = np.linalg.cholesky(sigma)
    hits = {"basic (fidfast)": 0, "percentile": 0}
    fids, widths = [], []
    for trial in range(trials):
        x = torch.from_numpy(rng.normal(size=(n, d)))
        y = torch.from_numpy(rng.normal(size=(n, d)) @ chol.T + mu)
        full, resampled = bootstrap_fids(x, y, resamples, trial, "auto")
        basic = basic_interval(full, resampled, level)
        q_low, q_high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])  # the percentile interval
        hits["basic (fidfast)"] += basic[0] <= exact <= basic[1]
        hits["percentile"] += q_low <= exact <= q_high
        fids.append(full)
        widths.append(basic[1] - basic[0])
    return {"d": d, "n": n, "exact": exact, "mean_fid": float(np.mean(fids)), "mean_width": float(np.mean(widths)),
            "coverage": {k: v / trials for k, v in hits.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--resamples", type=int, default=100)
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    device = torch.device("cpu")
    rows = [coverage(d, n, args.trials, args.resamples, args.level, args.seed) for d, n in CASES]
    report = {"args": {**vars(args), "out": str(args.out)}, "cases": rows, "machine": machine_info(device)}
    md = [f"# fid_bootstrap's {args.level:.0%} interval: how often it holds the true distance", "",
          f"{args.trials} trials per case, each with fresh Gaussian samples (seed {args.seed}) and "
          f"{args.resamples} resamples; `benchmarks/bench_interval.py`.", "",
          "| d | samples a side | exact distance | mean FID | basic (fidfast) | percentile | mean width |",
          "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["coverage"]
        md.append(f"| {r['d']} | {r['n']} | {r['exact']:.4f} | {r['mean_fid']:.4f} | {c['basic (fidfast)']:.0%} | "
                  f"{c['percentile']:.0%} | {r['mean_width']:.4f} |")
    md.append("")
    write_results(f"fid_ci_coverage_{device_kind(device)}", report, "\n".join(md), args.out)
    print("\n".join(md))


if __name__ == "__main__":
    main()
