"""Fréchet distance: every method against scipy (pytorch-fid's computation) and an independent float64
one; the sqrtm_newton_schulz op (native and PyTorch twin) against eigh and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import linalg

from fidfast import FidfastError, frechet, frechet_distance
from fidfast.frechet import sqrtm_newton_schulz

from .helpers import NATIVE_AND_TWIN, busy_stream, cuda_kernels, needs_native, on_gpu, reference_fid, rel


@pytest.fixture(params=NATIVE_AND_TWIN)
def impl(request):
    """(sqrtm function, device): the native op through frechet.sqrtm_newton_schulz, or the twin."""
    kind, device = request.param
    return (sqrtm_newton_schulz if kind == "native" else frechet._sqrtm_newton_schulz_torch), device


def moments(rng, n, d, scale=1.0, offset=0.0):
    """Mean and covariance of n non-negative, correlated 'features' in d dims (like Inception pool3)."""
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    x = np.abs(rng.normal(size=(n, d)) @ mix) * scale + offset
    return x.mean(0), np.cov(x, rowvar=False)


def scipy_fid(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


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


# -- the op: sqrtm_newton_schulz ----------------------------------------------------------------------

def sqrt_eigh(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_sqrtm_full_rank(impl, rng):
    # covariance with a spectrum spanning 1e4 (accuracy of any sqrt degrades with the condition number)
    d = 96
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    a = np.cov(rng.standard_normal((4 * d, d)) * np.geomspace(1, 1e-2, d) @ q.T * 7.0, rowvar=False)
    x, res, iters = impl[0](torch.from_numpy(a).to(impl[1]), 100, 1e-14)
    assert isinstance(res, float) and isinstance(iters, int) and 0 < iters <= 100
    assert x.dtype == torch.float64 and x.shape == (d, d)
    assert res <= 1e-12
    assert rel(x @ x, a) <= 2e-12
    assert rel(x, sqrt_eigh(a)) <= 1e-12
    assert rel(x, np.real(scipy.linalg.sqrtm(a))) <= 1e-12


def test_sqrtm_rank_deficient(impl, rng):
    # covariance of 60 samples in 160 dims: rank 59, where plain Newton-Schulz ends in NaN
    d = 160
    a = np.cov(rng.standard_normal((60, d)), rowvar=False)
    x, res, iters = impl[0](torch.from_numpy(a).to(impl[1]), 100, 1e-14)
    ref = sqrt_eigh(a)
    assert res <= 1e-10
    assert rel(x, ref) <= 1e-6
    assert abs(float(torch.trace(x)) - np.trace(ref)) <= 1e-7 * np.trace(ref)
    # running to max_iter without a usable tol still returns the best (finite) iterate
    x2, res2, _ = impl[0](torch.from_numpy(a).to(impl[1]), 100, 0.0)
    assert res2 <= 1e-10 and rel(x2, ref) <= 1e-6


def test_sqrtm_small_and_edge_cases(impl, rng):
    v = 0.5 + rng.random()
    x, res, _ = impl[0](torch.tensor([[v]], dtype=torch.float64, device=impl[1]), 100, 1e-14)
    assert abs(float(x) - np.sqrt(v)) <= 1e-15 and res <= 1e-15
    a = torch.from_numpy(np.cov(rng.standard_normal((50, 5)), rowvar=False)).to(impl[1])
    x, res, iters = impl[0](a, 0, 1e-14)  # no iterations: the scaled input itself
    assert iters == 0 and rel(x, a / a.norm().sqrt()) <= 1e-15


@needs_native
def test_sqrtm_native_equals_twin(rng):
    a = torch.from_numpy(np.cov(rng.standard_normal((100, 70)), rowvar=False))
    xa, ra, ia = sqrtm_newton_schulz(a, 100, 1e-14)
    xb, rb, ib = frechet._sqrtm_newton_schulz_torch(a, 100, 1e-14)
    assert rel(xa, xb) <= 1e-12 and ia == ib and ra == pytest.approx(rb, rel=1e-6)


@on_gpu(cuda_kernels)
@pytest.mark.parametrize("d", [600, 2048])
def test_sqrtm_on_cuda_past_the_residual_kernels_grid_cap(rng, d):
    # d > 512: the residual kernel's 1,024 blocks each sum several elements per thread; 2048 is FID's size
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    w = np.geomspace(10.0, 1e-3, d) * rng.uniform(0.9, 1.1, d)
    a = (q * w) @ q.T
    exact = (q * np.sqrt(w)) @ q.T
    x, res, iters = sqrtm_newton_schulz(torch.from_numpy(a).cuda(), 100, 1e-14)
    assert x.is_cuda and 0 < iters < 100 and res <= 1e-12
    assert rel(x, exact) <= 1e-12


@on_gpu(cuda_kernels)
def test_sqrtm_on_a_side_stream(rng):
    a = np.cov(rng.standard_normal((300, 120)), rowvar=False)
    ref = sqrt_eigh(a)
    on_cuda = torch.from_numpy(a).cuda()
    sqrtm_newton_schulz(on_cuda, 100, 1e-14)  # warm-up: the kernels loaded
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    busy_stream()  # the default stream is busy: a kernel wrongly put there would finish after the op read
    with torch.cuda.stream(side):  # its residuals on the side stream (the op syncs on each one)
        x, res, _ = sqrtm_newton_schulz(on_cuda, 100, 1e-14)
    torch.cuda.current_stream().wait_stream(side)
    assert res <= 1e-12 and rel(x, ref) <= 1e-12


def test_sqrtm_rejects_bad_input(impl):
    """Whole messages, numbers and shapes included (the native op's, then the twin's where it differs)."""
    dev = impl[1]
    native_op = impl[0] is sqrtm_newton_schulz
    with pytest.raises(RuntimeError) as error:
        impl[0](torch.eye(3, 4, dtype=torch.float64, device=dev), 10, 1e-14)
    assert str(error.value) == ("sqrtm_newton_schulz: a must be square [d, d], got [3, 4]" if native_op else
                                "sqrtm_newton_schulz: a must be square, got (3, 4)")
    with pytest.raises(RuntimeError) as error:
        impl[0](torch.eye(3, device=dev), 10, 1e-14)
    assert str(error.value) == "sqrtm_newton_schulz: a must be float64, got " + (
        "Float" if native_op else "torch.float32")
    bad = torch.eye(3, dtype=torch.float64, device=dev)
    bad[1, 2] = float("nan")
    with pytest.raises(RuntimeError) as error:
        impl[0](bad, 10, 1e-14)
    assert str(error.value) == "sqrtm_newton_schulz: a contains NaN or Inf"


def test_the_same_statistics_give_the_same_bits_every_time(rng):
    """MKL's threaded eigenvalue solver varied the last bits run to run on rank-deficient input (CI saw the
    sFID of 8 images differ in its 16th digit; test_suite's command-line test compares such values exactly);
    the FID of the same statistics is the same float every time, and the caller's thread count is kept."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(2, threads))  # the threaded solver is what varied
    try:
        mu1, s1 = moments(rng, 8, 1024)
        mu2, s2 = moments(rng, 8, 1024, scale=1.2)
        values = {frechet_distance(mu1, s1, mu2, s2) for _ in range(12)}
        assert len(values) == 1 and np.isfinite(values.pop())
        assert torch.get_num_threads() == max(2, threads)  # the solver's one thread was given back
    finally:
        torch.set_num_threads(threads)
