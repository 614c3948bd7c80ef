"""FID∞ and the bootstrap interval, on Gaussian samples whose exact Fréchet distance is known."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fidfast
from fidfast import FidfastError, fid_bootstrap, fid_infinity

from .helpers import reference_fid


def gaussian_pair(rng, d, scale=0.3, shift=0.1):
    """A second Gaussian N(μ, Σ) against N(0, I) in d dims, and their exact Fréchet distance."""
    a = rng.normal(size=(d, d)) * scale
    sigma, mu = np.eye(d) * 0.8 + a @ a.T, np.full(d, shift)
    return mu, np.linalg.cholesky(sigma), reference_fid(np.zeros(d), np.eye(d), mu, sigma)


def test_fid_infinity_is_closer_to_the_exact_distance_than_the_fid(rng):
    # At N = 2000 in 32 dims the FID's bias is ~50% of the distance, several times its spread; the first
    # set is large (its own bias small).
    mu, chol, exact = gaussian_pair(rng, 32, scale=0.07, shift=0.05)
    errors_inf, errors_fid = [], []
    for trial in range(4):
        x = rng.normal(size=(20000, 32))
        y = rng.normal(size=(2000, 32)) @ chol.T + mu
        errors_inf.append(abs(fid_infinity(x, y, seed=trial) - exact))
        fid = fidfast.frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
        errors_fid.append(abs(fid - exact))
    assert np.isfinite(errors_inf).all() and np.mean(errors_inf) < 0.5 * np.mean(errors_fid), (errors_inf, errors_fid)


def test_fid_infinity_is_the_intercept_of_the_subsets_fit(rng):
    # Its definition, step by step: sizes evenly spaced from min(min_size, N // 2), a fresh permutation each.
    x, y = rng.normal(size=(300, 6)), rng.normal(size=(240, 6)) + 0.2
    sizes = np.unique(np.linspace(120, 240, 5).astype(np.int64))
    gen = torch.Generator().manual_seed(3)
    fids = []
    for size in sizes:
        sub = y[torch.randperm(240, generator=gen)[:size].numpy()]
        fids.append(reference_fid(x.mean(0), np.cov(x, rowvar=False), sub.mean(0), np.cov(sub, rowvar=False)))
    expected = np.polyfit(1.0 / sizes, fids, 1)[1]
    got = fid_infinity(x, y, num_points=5, seed=3)
    assert abs(got - expected) <= 1e-9 * abs(expected)
    assert fid_infinity(torch.from_numpy(x), torch.from_numpy(y), num_points=5, seed=3) == got
    assert fid_infinity(x, y, num_points=5, seed=4) != got


def test_fid_infinity_warns_when_subsets_are_smaller_than_d(rng):
    x, y = rng.normal(size=(100, 40)), rng.normal(size=(60, 40))
    with pytest.warns(UserWarning, match="fewer than d=40"):
        assert np.isfinite(fid_infinity(x, y, num_points=3))


def test_bootstrap_interval_covers_the_exact_distance(rng):
    # 95% intervals from 500 samples a side in 8 dims: they should hold the exact distance in ~95% of
    # trials (the percentile interval, biased like the FID, held it in 38%: results/fid_ci_coverage_cpu.md).
    mu, chol, exact = gaussian_pair(rng, 8)
    trials, hits, widths = 100, 0, []
    for trial in range(trials):
        x = rng.normal(size=(500, 8))
        y = rng.normal(size=(500, 8)) @ chol.T + mu
        low, high = fid_bootstrap(x, y, seed=trial)
        assert 0 <= low <= high
        hits += low <= exact <= high
        widths.append(high - low)
    assert hits >= 0.85 * trials, hits
    assert np.mean(widths) < exact  # informative: not an interval that holds everything


def test_bootstrap_is_seeded(rng):
    x, y = rng.normal(size=(50, 3)), rng.normal(size=(40, 3)) + 1
    first = fid_bootstrap(x, y, num_resamples=20, level=0.9, seed=5)
    assert fid_bootstrap(x, y, num_resamples=20, level=0.9, seed=5) == first
    assert fid_bootstrap(x, y, num_resamples=20, level=0.9, seed=6) != first


@pytest.mark.parametrize("call, message", [
    (lambda x, y: fid_infinity(x, y[:, :3]), "equal d"),
    (lambda x, y: fid_infinity(x, y[:3]), "4 in the second"),
    (lambda x, y: fid_infinity(x, y, num_points=1), "num_points"),
    (lambda x, y: fid_bootstrap(x, y, level=1.0), "level"),
    (lambda x, y: fid_bootstrap(x, y, num_resamples=1), "num_resamples"),
    (lambda x, y: fid_bootstrap(x, y, method="sqrtm"), "Fréchet method"),
    (lambda x, y: fid_bootstrap(x, np.where(y > 1, np.nan, y)), "second features hold non-finite"),
])
def test_bad_input_is_one_clear_error(rng, call, message):
    with pytest.raises(FidfastError, match=message):
        call(rng.normal(size=(30, 4)), rng.normal(size=(30, 4)))
