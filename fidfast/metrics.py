"""The sweep API: FID against a reference held once, the one-call forms, and KID.

``FID(reference)`` computes the reference statistics once (from the statistics cache when it is a
folder seen before) and factors its covariance once (Σ_ref = B Bᵀ), so each ``metric(samples)`` costs
the samples' features plus one d×d symmetric eigenvalue solve.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np
import torch

from fidfast.errors import FidfastError, warn
from fidfast.frechet import check_method, covariance_factor, frechet_distance, frechet_distance_to_factored
from fidfast.pipeline import check_fid_input, check_same_protocol, features, statistics, statistics_pair
from fidfast.settings import Settings
from fidfast.sources import Source, open_source
from fidfast.stats import FeatureStats


class FID:
    """FID of any number of sample sets against one reference.

    Args:
        reference: any input :func:`fidfast.compute_stats` takes (folder, .npz, archive, arrays, ...).
        **settings: the fields of :class:`fidfast.Settings` (``dims``, ``device``, ``precision``, ...);
            they apply to the reference and every sample set.

    Example::

        metric = fidfast.FID("imagenet_val/", device="cuda")
        scores = {ckpt: metric(sample(ckpt)) for ckpt in checkpoints}   # arrays, folders, ...
    """

    def __init__(self, reference: Source, **settings) -> None:
        settings = Settings(**settings)
        opened = open_source(reference, settings.recursive)
        if isinstance(opened, FeatureStats):  # samples are computed with a reference file's dims and protocol
            settings = settings.like(opened.dims, opened.protocol)
        self.settings = settings
        self.reference = check_fid_input(statistics(opened, settings), "the reference")
        self._mu = self.reference.mean.to(self.settings.device)
        cov = self.reference.covariance.to(self.settings.device)
        self._trace = float(torch.trace(cov))
        self._factor = covariance_factor(cov)

    def stats(self, samples: Source) -> FeatureStats:
        """The samples' statistics, computed with the reference's settings."""
        return statistics(samples, self.settings)

    def __call__(self, samples: Union[Source, FeatureStats]) -> float:
        """FID between ``samples`` (any input, or a FeatureStats) and the reference."""
        s = check_fid_input(samples if isinstance(samples, FeatureStats) else self.stats(samples), "the samples")
        check_same_protocol(self.reference, s)
        if s.dims != self.reference.dims:
            raise FidfastError(f"samples have dims {s.dims}, the reference {self.reference.dims}")
        mu, cov = s.mean.to(self.settings.device), s.covariance.to(self.settings.device)
        if not (bool(torch.isfinite(mu).all()) and bool(torch.isfinite(cov).all())):
            raise FidfastError("the samples' statistics hold non-finite values")
        return frechet_distance_to_factored(self._mu, self._trace, self._factor, mu, cov)


def calculate_fid(a: Source, b: Source, method: str = "auto", **settings) -> float:
    """FID between two inputs of any kind. ``method`` is the Fréchet distance's (see
    :func:`fidfast.frechet_distance`); the other keyword arguments are :class:`fidfast.Settings`' fields."""
    check_method(method)  # before any image is read
    s1, s2 = statistics_pair(a, b, Settings(**settings))
    return frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance, method=method)


def check_kid_options(num_subsets: int, subset_size: int) -> None:
    if num_subsets < 1 or subset_size < 2:
        raise FidfastError(f"--kid-subsets must be ≥ 1 and --kid-subset-size ≥ 2, got {num_subsets} and "
                           f"{subset_size}")


def kernel_inception_distance(features1: Union[np.ndarray, torch.Tensor], features2: Union[np.ndarray, torch.Tensor],
                              num_subsets: int = 100, subset_size: int = 1000, seed: int = 0, *, degree: int = 3,
                              gamma: Optional[float] = None, coef: float = 1.0) -> Tuple[float, float]:
    """KID: the unbiased MMD² with the polynomial kernel k(x, y) = (γ xᵀy + coef)^degree (default
    (xᵀy / d + 1)³: γ = 1/d), averaged over ``num_subsets`` random subsets of ``min(subset_size, n1, n2)``
    rows of each (Bińkowski et al. 2018, as in clean-fid, torch-fidelity and torchmetrics). Computed in
    float64. Returns (mean, standard deviation).
    """
    x = torch.as_tensor(features1).to(torch.float64)
    y = torch.as_tensor(features2).to(device=x.device, dtype=torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise FidfastError(f"KID needs two N×d feature sets of equal d, got {tuple(x.shape)} and {tuple(y.shape)}")
    check_kid_options(num_subsets, subset_size)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise FidfastError(f"KID needs at least 2 images on each side, got {x.shape[0]} and {y.shape[0]}")
    if m < subset_size:
        warn(f"fidfast: KID subsets of {m} images, fewer than the subset size {subset_size}: each subset holds "
             "all of the smaller set, so the ± shows less spread than it should")
    gamma = 1 / x.shape[1] if gamma is None else gamma
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        xs = x[torch.randperm(x.shape[0], generator=gen)[:m].to(x.device)]
        ys = y[torch.randperm(y.shape[0], generator=gen)[:m].to(x.device)]
        kxx = (xs @ xs.T * gamma + coef) ** degree
        kyy = (ys @ ys.T * gamma + coef) ** degree
        kxy = (xs @ ys.T * gamma + coef) ** degree
        mmd = ((kxx.sum() - kxx.diagonal().sum()) + (kyy.sum() - kyy.diagonal().sum())) / (m * (m - 1)) \
            - 2 * kxy.sum() / (m * m)
        values.append(float(mmd))
    v = np.asarray(values)
    return float(v.mean()), float(v.std())


def calculate_kid(a: Source, b: Source, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0,
                  **settings) -> Tuple[float, float]:
    """KID (mean, std) between two image inputs (not statistics files: KID needs the features); the
    keyword arguments after ``seed`` are :class:`fidfast.Settings`' fields."""
    check_kid_options(num_subsets, subset_size)
    s = Settings(**settings)
    _, f1 = features(a, s)
    _, f2 = features(b, s)
    return kernel_inception_distance(f1, f2, num_subsets, subset_size, seed)
