"""The Fréchet distance between two Gaussians, d² = ‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂).

Only tr √(Σ₁Σ₂) is hard. Σ₁Σ₂ is not symmetric, but with any factor Σ₁ = B Bᵀ it is similar to the
symmetric PSD matrix Bᵀ Σ₂ B, whose eigenvalues are real and non-negative: tr √(Σ₁Σ₂) = Σ √λᵢ(Bᵀ Σ₂ B).
That needs one factorisation and one symmetric eigenvalue solve: several times faster than scipy's
sqrtm at d = 2048 (timings: benchmarks/results/ops_cpu.md), finite when N < d (where sqrtm fails with
"imaginary component"), and equal to it to ~1e-10.

Methods: ``cholesky`` (B = Cholesky factor; falls back to ``eigh`` when Σ₁ is singular), ``eigh``
(B = V √Λ), ``newton_schulz`` (fidfast's native iteration, no eigen solver), ``scipy`` (pytorch-fid's
own computation, kept as the reference), ``auto`` (``cholesky``: the fastest accurate one measured on
CPU, see benchmarks/results/).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Optional, Tuple, Union

import numpy as np
import torch

from fidfast import native
from fidfast.errors import FidfastError

METHODS = ("auto", "cholesky", "eigh", "newton_schulz", "scipy")
ArrayLike = Union[np.ndarray, torch.Tensor]


def check_method(method: str) -> None:
    if method not in METHODS:
        raise FidfastError(f"unknown Fréchet method {method!r}; choose one of {', '.join(METHODS)}")


def _as_float64(x: ArrayLike, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def check_moments(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> None:
    """Raise :class:`FidfastError` on shape mismatches or non-finite statistics."""
    if mu1.ndim != 1 or sigma1.shape != (mu1.shape[0], mu1.shape[0]):
        raise FidfastError(f"first statistics: mu {tuple(mu1.shape)} and sigma {tuple(sigma1.shape)} do not fit")
    if mu2.ndim != 1 or sigma2.shape != (mu2.shape[0], mu2.shape[0]):
        raise FidfastError(f"second statistics: mu {tuple(mu2.shape)} and sigma {tuple(sigma2.shape)} do not fit")
    if mu1.shape != mu2.shape:
        raise FidfastError(f"the two inputs have different feature dims: {mu1.shape[0]} and {mu2.shape[0]}")
    for name, t in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not bool(torch.isfinite(t).all()):
            raise FidfastError(f"{name} holds non-finite values (NaN or inf)")


def covariance_factor(sigma: torch.Tensor, method: str = "cholesky") -> torch.Tensor:
    """A factor B with B Bᵀ = Σ (float64 d×d): Cholesky's L when Σ is positive definite, else V √Λ."""
    if method == "cholesky":
        factor, info = torch.linalg.cholesky_ex(sigma)
        if int(info) == 0:
            return factor
    eigvals, eigvecs = torch.linalg.eigh(sigma)
    return eigvecs * _drop_roundoff(eigvals).sqrt()


def _drop_roundoff(eigvals: torch.Tensor) -> torch.Tensor:
    """Zero the eigenvalues below d·ε·λmax: they are rounding noise of a singular matrix (N < d), and
    their square roots (~√ε each, thousands of them) would bias tr √ by far more than ε."""
    tol = eigvals.shape[0] * torch.finfo(eigvals.dtype).eps * eigvals.abs().max()
    return torch.where(eigvals > tol, eigvals, torch.zeros_like(eigvals))


def trace_sqrt_from_factor(factor: torch.Tensor, sigma2: torch.Tensor) -> float:
    """tr √(Σ₁Σ₂) given Σ₁ = B Bᵀ: the sum of square roots of the eigenvalues of Bᵀ Σ₂ B."""
    m = factor.T @ sigma2 @ factor
    m = 0.5 * (m + m.T)  # exact symmetry for the symmetric solver
    with _one_cpu_thread(m.device):
        eigvals = torch.linalg.eigvalsh(m)
    return float(_drop_roundoff(eigvals).sqrt().sum())


@contextmanager
def _one_cpu_thread(device: torch.device):
    """MKL's threaded symmetric eigenvalue solver gives other last bits from run to run on rank-deficient
    matrices (N < d); on one thread the FID is the same bits every run (tr √ at d = 2048 measured 7% slower
    on 2 cores)."""
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def frechet_distance_to_factored(mu1: torch.Tensor, trace1: float, factor1: torch.Tensor, mu2: torch.Tensor,
                                 sigma2: torch.Tensor) -> float:
    """The Fréchet distance to a first Gaussian held as its mean, tr Σ₁ and factor Σ₁ = B Bᵀ
    (:func:`covariance_factor`, computed once): the sweep's cost per second Gaussian, one eigenvalue solve.
    float64 tensors on one device."""
    diff = mu1 - mu2
    return fid_from_terms(float(diff @ diff) + trace1 + float(torch.trace(sigma2)),
                          trace_sqrt_from_factor(factor1, sigma2))


def _trace_sqrt_newton_schulz(sigma1: torch.Tensor, sigma2: torch.Tensor) -> float:
    # Iterate on symmetric PSD matrices only: Σ₁Σ₂ itself is non-normal and diverges when singular.
    root1, _, _ = sqrtm_newton_schulz(sigma1)
    m = root1 @ sigma2 @ root1
    root, _, _ = sqrtm_newton_schulz(0.5 * (m + m.T))
    return float(torch.trace(root))


def sqrtm_newton_schulz(a: torch.Tensor, max_iter: int = 100, tol: float = 1e-14) -> Tuple[torch.Tensor, float, int]:
    """Square root of a symmetric positive semi-definite matrix by coupled Newton–Schulz (native op).

    Iterates on A/‖A‖_F and keeps the iterate with the smallest relative residual
    ‖X² − A‖_F / ‖A‖_F; it stops when that is ≤ ``tol`` or stops improving. On rank-deficient A,
    where plain Newton–Schulz eventually diverges, the best iterate is still returned.

    Args:
        a: float64 (d, d) symmetric PSD matrix, finite (CPU or CUDA).
        max_iter: maximum number of iterations (each costs 4 d×d GEMMs).
        tol: target relative residual.

    Returns:
        ``(x, residual, iterations)``: float64 (d, d) ``x`` ≈ √A, its relative residual, iterations run.
    """
    if native.has_kernel(a.device):
        x, residual, iterations = torch.ops.fidfast.sqrtm_newton_schulz(a, max_iter, tol)
        return x, float(residual), int(iterations)
    return _sqrtm_newton_schulz_torch(a, max_iter, tol)


def _sqrtm_newton_schulz_torch(a: torch.Tensor, max_iter: int, tol: float) -> Tuple[torch.Tensor, float, int]:
    native.check(a.dtype == torch.float64, f"sqrtm_newton_schulz: a must be float64, got {a.dtype}")
    native.check(a.ndim == 2 and a.shape[0] == a.shape[1],
                 f"sqrtm_newton_schulz: a must be square, got {tuple(a.shape)}")
    native.check(max_iter >= 0, f"sqrtm_newton_schulz: max_iter must be >= 0, got {max_iter}")
    native.check(bool(torch.isfinite(a).all()), "sqrtm_newton_schulz: a contains NaN or Inf")
    s = float(a.norm())
    if s == 0.0:
        return torch.zeros_like(a), 0.0, 0

    def residual(y: torch.Tensor) -> float:
        return float((s * (y @ y) - a).square().sum().sqrt()) / s

    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    y, z = a / s, eye
    best, best_res = y, residual(y)
    iters = 0
    while iters < max_iter and best_res > tol:
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z = y @ t, t @ z
        iters += 1
        res = residual(y)
        if not res < best_res:
            break  # stopped improving (or went non-finite)
        best, best_res = y, res
    return best * math.sqrt(s), best_res, iters


def _trace_sqrt_scipy(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """pytorch-fid 0.3.0's computation (scipy.linalg.sqrtm of Σ₁Σ₂), without its removed ``disp`` argument."""
    from scipy import linalg

    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise FidfastError(f"scipy sqrtm: imaginary component {np.max(np.abs(covmean.imag))} "
                               "(use method='auto', which has no such failure)")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike,
                     method: str = "auto", device: Optional[Union[str, torch.device]] = None) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂), computed in float64.

    Args:
        mu1, mu2: feature means, shape (d,).
        sigma1, sigma2: feature covariances, shape (d, d), symmetric PSD.
        method: one of :data:`METHODS` (see the module docstring).
        device: where the linear algebra runs (default: CPU).
    Returns:
        The squared Fréchet distance (what is called FID), a Python float.
    """
    check_method(method)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    m1, s1, m2, s2 = (_as_float64(x, dev) for x in (mu1, sigma1, mu2, sigma2))
    m1, m2 = m1.reshape(-1), m2.reshape(-1)
    check_moments(m1, s1, m2, s2)
    diff = m1 - m2
    return fid_from_terms(float(diff @ diff + torch.trace(s1) + torch.trace(s2)), trace_sqrt(s1, s2, method))


def trace_sqrt(sigma1: torch.Tensor, sigma2: torch.Tensor, method: str = "auto") -> float:
    """tr √(Σ₁Σ₂) of two float64 (d, d) covariances by one of :data:`METHODS` (see the module docstring)."""
    if method == "scipy":
        return _trace_sqrt_scipy(sigma1.cpu().numpy(), sigma2.cpu().numpy())
    if method == "newton_schulz":
        return _trace_sqrt_newton_schulz(sigma1, sigma2)
    return trace_sqrt_from_factor(covariance_factor(sigma1, "eigh" if method == "eigh" else "cholesky"), sigma2)


def fid_from_terms(sum_of_squares_and_traces: float, tr_sqrt: float) -> float:
    """‖μ₁−μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂). Equal statistics give a tiny negative by rounding, and a
    distance is never below zero; a larger negative would mean invalid input (not PSD) and is kept."""
    fid = sum_of_squares_and_traces - 2.0 * tr_sqrt
    return 0.0 if -1e-12 * sum_of_squares_and_traces <= fid < 0.0 else fid
