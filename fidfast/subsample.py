"""FIDs of subsamples of the features: FID∞ (Chong & Forsyth 2020) and a bootstrap confidence interval.

A FID computed from N images is biased upwards: its expectation is about FID∞ + c/N, with FID∞ the
Fréchet distance between the two image distributions and c depending on the model, so FIDs of different
N are not comparable. Both functions estimate FID∞ itself, or an interval for it, from features
(:func:`fidfast.compute_features`); each subsample's statistics come from :class:`fidfast.FeatureStats`
and each Fréchet distance from :mod:`fidfast.frechet`, as for the FID itself.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

from fidfast.errors import FidfastError, warn
from fidfast.frechet import check_method, covariance_factor, frechet_distance, frechet_distance_to_factored
from fidfast.stats import FeatureStats

ArrayLike = Union[np.ndarray, torch.Tensor]


def _check_pair(features1: ArrayLike, features2: ArrayLike, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both feature sets as float64 tensors on the first one's device (an array's: the CPU), checked."""
    x = torch.as_tensor(features1).detach().to(torch.float64)
    y = torch.as_tensor(features2).detach().to(device=x.device, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise FidfastError(f"{what} needs two N×d feature sets of equal d, got {tuple(x.shape)} and "
                           f"{tuple(y.shape)}")
    for name, t in (("first", x), ("second", y)):
        if not bool(torch.isfinite(t).all()):
            raise FidfastError(f"{what}: the {name} features hold non-finite values (NaN or inf)")
    return x, y


def _stats(x: torch.Tensor) -> FeatureStats:
    return FeatureStats(x.shape[1], device=x.device).update(x)


def fid_infinity(features1: ArrayLike, features2: ArrayLike, num_points: int = 15, min_size: int = 5000,
                 seed: int = 0) -> float:
    """FID∞: the FID extrapolated to infinitely many images of the second set (Chong & Forsyth 2020,
    ``calculate_FID_infinity``).

    FIDs of the first set's full statistics against ``num_points`` random subsets of the second (without
    replacement, seeded; a new draw each), of sizes evenly spaced from ``min(min_size, N₂ // 2)`` to all
    N₂ rows, are fitted by least squares as a + b/N; FID∞ is the intercept a.

    Assumes FID_N is linear in 1/N over those sizes, as Chong & Forsyth found for N ≥ 5000 at d = 2048
    (their default sizes, which these are for N₂ ≥ 10000); below d images a covariance is rank-deficient
    and FID_N leaves that line (a warning says so). Only the second set's bias is removed: the first set's
    statistics are taken as exact, so it should be the large one (a reference of 50k images). Cost:
    ``num_points`` covariances of up to N₂ rows (≈ N₂·d² multiply-adds each, ~15× one FID's statistics at
    the default) and ``num_points`` d×d symmetric eigenvalue solves (the first set's factorisation once).

    Args:
        features1: N₁×d reference features (float; an array is computed on the CPU, a tensor on its device).
        features2: N₂×d features whose FID is extrapolated, N₂ ≥ 4.
        num_points: how many subset sizes, ≥ 2.
        min_size: the smallest subset, unless N₂ // 2 is smaller.
        seed: seeds the subsets.
    Returns:
        FID∞ as a Python float (it may fall below 0 when the FID is near 0: the fit's noise).
    """
    x, y = _check_pair(features1, features2, "fid_infinity")
    if isinstance(num_points, bool) or not isinstance(num_points, int) or num_points < 2:
        raise FidfastError(f"fid_infinity: num_points must be a whole number ≥ 2, got {num_points!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 2:
        raise FidfastError(f"fid_infinity: min_size must be a whole number ≥ 2, got {min_size!r}")
    n = y.shape[0]
    if x.shape[0] < 2 or n < 4:
        raise FidfastError(f"fid_infinity needs at least 2 features in the first set and 4 in the second, got "
                           f"{x.shape[0]} and {n}")
    sizes = np.unique(np.linspace(min(min_size, n // 2), n, num_points).astype(np.int64))
    if sizes[0] < x.shape[1]:
        warn(f"fidfast: fid_infinity: subsets of {sizes[0]} features, fewer than d={x.shape[1]}: their "
             "covariances are rank-deficient and the fit in 1/N is off (use ≥ 2·d features)")
    reference = _stats(x)
    cov1 = reference.covariance
    factor, trace = covariance_factor(cov1), float(torch.trace(cov1))  # the first set's, once
    gen = torch.Generator().manual_seed(seed)
    fids = []
    for size in sizes:
        s = _stats(y[torch.randperm(n, generator=gen)[:size].to(y.device)])
        fids.append(frechet_distance_to_factored(reference.mean, trace, factor, s.mean, s.covariance))
    _, intercept = np.polyfit(1.0 / sizes, np.asarray(fids), 1)
    return float(intercept)


def fid_bootstrap(features1: ArrayLike, features2: ArrayLike, num_resamples: int = 100, level: float = 0.95,
                  seed: int = 0, method: str = "auto") -> Tuple[float, float]:
    """A confidence interval for the Fréchet distance between the two feature distributions, by the
    bootstrap: both sets resampled with replacement (seeded) ``num_resamples`` times.

    The interval is the basic (reverse-percentile) one, [2F − q_high, 2F − q_low] with F the FID of all the
    features and q the resampled FIDs' quantiles, clipped at 0. It assumes that the resampled FIDs scatter
    about F as F scatters about the true distance, bias included: FID's upward bias moves the resampled
    FIDs up once more, and the basic interval subtracts it, where the plain percentile interval
    [q_low, q_high] sits above the truth (on 8-d Gaussians with 500 samples a side, which test_subsample.py
    uses, it covered the true distance in 38% of 200 trials against the basic interval's 96%:
    benchmarks/results/fid_ci_coverage_cpu.md). It reflects
    the sampling of these images only, not the choice of network or preprocessing; it needs N well above
    d for the bias to be about the same at N as in the resamples.

    Cost: ``num_resamples`` times one FID's statistics of both sets (≈ (N₁ + N₂)·d² multiply-adds) and one
    Fréchet distance (a d×d factorisation and eigenvalue solve): about 100 FIDs from features, which on a
    GPU is seconds at 50k × 2048 and on a 2-core CPU tens of minutes.

    Args:
        features1, features2: N₁×d and N₂×d features (float; arrays on the CPU, tensors on their device).
        num_resamples: bootstrap resamples, ≥ 2 (100 gives the 2.5% and 97.5% quantiles from ~3 values
            each side; more narrows the interval's own noise).
        level: the interval's confidence, in (0, 1).
        seed: seeds the resamples.
        method: the Fréchet distance's method (:func:`fidfast.frechet_distance`).
    Returns:
        (low, high) as Python floats.
    """
    check_method(method)
    x, y = _check_pair(features1, features2, "fid_bootstrap")
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int) or num_resamples < 2:
        raise FidfastError(f"fid_bootstrap: num_resamples must be a whole number ≥ 2, got {num_resamples!r}")
    if not 0 < level < 1:
        raise FidfastError(f"fid_bootstrap: level must lie between 0 and 1, got {level!r}")
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise FidfastError(f"fid_bootstrap needs at least 2 features in each set, got {x.shape[0]} and {y.shape[0]}")

    return basic_interval(*bootstrap_fids(x, y, num_resamples, seed, method), level)


def basic_interval(full: float, resampled: np.ndarray, level: float) -> Tuple[float, float]:
    """[2F − q_high, 2F − q_low], clipped at 0: the resampled FIDs' spread about F, reflected."""
    q_low, q_high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
    return max(0.0, 2 * full - q_high), max(0.0, 2 * full - q_low)


def bootstrap_fids(x: torch.Tensor, y: torch.Tensor, num_resamples: int, seed: int, method: str
                   ) -> Tuple[float, np.ndarray]:
    """The FID of two checked feature sets and ``num_resamples`` FIDs of both resampled with replacement
    (seeded): what :func:`fid_bootstrap`'s interval is made from (benchmarks/bench_interval.py compares it
    with the percentile interval of the same resamples)."""
    def fid(a: torch.Tensor, b: torch.Tensor) -> float:
        s1, s2 = _stats(a), _stats(b)
        return frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance, method=method, device=a.device)

    gen = torch.Generator().manual_seed(seed)

    def resample(t: torch.Tensor) -> torch.Tensor:
        return t[torch.randint(t.shape[0], (t.shape[0],), generator=gen).to(t.device)]

    return fid(x, y), np.asarray([fid(resample(x), resample(y)) for _ in range(num_resamples)])
