"""Fréchet distance: every method against scipy (pytorch-fid's computation) and an independent float64 one."""
import numpy as np
import pytest
from scipy import linalg

from fidfast import FidfastError, frechet_distance
from fidfast.fid_score import calculate_frechet_distance


def moments(rng, n, d, scale=1.0, offset=0.0):
    """Mean and covariance of n non-negative, correlated 'features' in d dims (like Inception pool3)."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = np.abs(rng.normal(size=(n, d)) @ mix) * scale + offset
    return x.mean(0), np.cov(x, rowvar=False)


def reference_fid(mu1, s1, mu2, s2):
    """Independent float64 route: √Σ₁ from numpy's eigh, then eigenvalues of √Σ₁ Σ₂ √Σ₁."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ s2 @ root)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum()


def scipy_fid(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def rel(a, b):
    assert np.isfinite(a) and np.isfinite(b)
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("method", ["auto", "cholesky", "eigh", "newton_schulz", "scipy"])
def test_full_rank_matches_scipy_and_eigen_reference(rng, method):
    d = 96
    mu1, s1 = moments(rng, 400, d)
    mu2, s2 = moments(rng, 500, d, scale=1.3, offset=0.1)
    fid = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert rel(fid, scipy_fid(mu1, s1, mu2, s2)) < 1e-9
    assert rel(fid, reference_fid(mu1, s1, mu2, s2)) < 1e-9


@pytest.mark.parametrize("method", ["auto", "cholesky", "eigh", "newton_schulz"])
def test_rank_deficient_is_finite_and_correct(rng, method):
    # N < d: Σ₁Σ₂ is singular, where pytorch-fid's sqrtm can fail with "imaginary component".
    d = 256
    mu1, s1 = moments(rng, 60, d)
    mu2, s2 = moments(rng, 70, d, scale=1.2)
    fid = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert rel(fid, reference_fid(mu1, s1, mu2, s2)) < 1e-6


@pytest.mark.parametrize("method", ["auto", "eigh", "newton_schulz"])
def test_near_identical_distributions(rng, method):
    # A tiny FID is a difference of large traces: the hardest case for relative accuracy.
    d = 64
    mu1, s1 = moments(rng, 2000, d)
    mu2, s2 = mu1 + 1e-3 * rng.normal(size=d), s1 * (1 + 1e-3)
    fid = frechet_distance(mu1, s1, mu2, s2, method=method)
    assert rel(fid, reference_fid(mu1, s1, mu2, s2)) < 1e-7  # issue #3's bound


def test_identical_statistics_give_zero(rng):
    mu, s = moments(rng, 300, 48)
    fid = frechet_distance(mu, s, mu, s)
    assert 0.0 <= fid < 1e-9 * np.trace(s)  # rounding never makes a distance negative


def test_drop_in_signature_matches_pytorch_fid(rng):
    from pytorch_fid.fid_score import calculate_frechet_distance as reference

    mu1, s1 = moments(rng, 300, 32)
    mu2, s2 = moments(rng, 300, 32, scale=0.8)
    assert rel(calculate_frechet_distance(mu1, s1, mu2, s2), reference(mu1, s1, mu2, s2)) < 1e-9
    assert isinstance(calculate_frechet_distance(mu1, s1, mu2, s2, eps=1e-6), float)


@pytest.mark.parametrize("bad", ["dims", "nan", "shape", "method"])
def test_bad_statistics_are_clear_errors(rng, bad):
    mu1, s1 = moments(rng, 100, 16)
    mu2, s2 = moments(rng, 100, 16)
    kwargs = {}
    if bad == "dims":
        mu2, s2 = moments(rng, 100, 8)
    elif bad == "nan":
        s2 = s2.copy()
        s2[3, 4] = np.nan
    elif bad == "shape":
        s1 = s1[:, :-1]
    else:
        kwargs["method"] = "sqrtm"
    with pytest.raises(FidfastError):
        frechet_distance(mu1, s1, mu2, s2, **kwargs)


def test_rank_deficient_at_full_size(rng):
    """Issue #3's case: N = 300 images at d = 2048 (Newton–Schulz on singular input), ≤ 1e-6."""
    d = 2048
    mu1, s1 = moments(rng, 300, d)
    mu2, s2 = moments(rng, 300, d, scale=1.2)
    reference = reference_fid(mu1, s1, mu2, s2)
    for method in ("auto", "newton_schulz"):
        assert rel(frechet_distance(mu1, s1, mu2, s2, method=method), reference) <= 1e-6, method
