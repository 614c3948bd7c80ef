"""The sweep API: FID against a reference held once, the one-call forms, and KID.

``FID(reference)`` computes the reference statistics once (from the statistics cache when it is a
folder seen before) and factors its covariance once (Σ_ref = B Bᵀ), so each ``metric(samples)`` costs
the samples' features plus one d×d symmetric eigenvalue solve.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple, Union

import numpy as np
import torch

from fidfast.clip import clip_network
from fidfast.dinov2 import dinov2_network
from fidfast.errors import FidfastError, warn
from fidfast.frechet import check_method, covariance_factor, frechet_distance, frechet_distance_to_factored
from fidfast.pipeline import check_fid_input, check_same_protocol, features, statistics, statistics_pair
from fidfast.preprocess import PROTOCOLS, protocols_of
from fidfast.settings import Settings, resolve_device, resolve_precision
from fidfast.sources import Source, open_source
from fidfast.stats import FeatureStats


CMMD_SIGMA = 10.0  # CMMD's Gaussian kernel bandwidth
CMMD_SCALE = 1000.0  # and its ×1000, "to make the metric more human readable"
# another network's pass: how its module is built, its default protocol, the metric it serves
NETWORKS = {"dinov2": (dinov2_network, "edm2", "FD_DINOv2"), "clip": (clip_network, "cmmd", "CMMD")}


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


def network_settings(network: str, weights: Union[str, os.PathLike, None] = None, protocol: Optional[str] = None,
                     **settings) -> Settings:
    """The settings of a pass of another network than the FID Inception: ``dinov2`` (FD_DINOv2: FAIR's DINOv2
    ViT-L/14, protocol ``edm2`` by default, or ``dgm-eval``) or ``clip`` (CMMD: OpenAI's CLIP ViT-L/14-336,
    protocol ``cmmd``), with ``weights`` (found as :func:`fidfast.weights.find_checkpoint` says when None), as
    the features module, in ``precision`` (auto: fp16 on CUDA); the rest: :class:`Settings`' fields."""
    build, default_protocol, metric = NETWORKS[network]
    protocol = protocol or default_protocol
    if PROTOCOLS.get(protocol) is None or PROTOCOLS[protocol].network != network:
        raise FidfastError(f"{metric}'s protocols are {', '.join(protocols_of(network))}, not {protocol!r}")
    for name in ("dims", "features"):
        if settings.get(name) is not None:
            raise FidfastError(f"{metric} runs its own network; {name}= does not apply")
    device = resolve_device(settings.pop("device", None))
    precision = resolve_precision(settings.pop("precision", "auto"), device)
    return Settings(features=build(weights, device, precision), protocol=protocol, device=device, **settings)


def fd_dinov2(a: Source, b: Source, weights: Union[str, os.PathLike, None] = None, protocol: Optional[str] = None,
              method: str = "auto", **settings) -> float:
    """FD_DINOv2 (Stein et al. 2023; EDM2 reports it): the Fréchet distance between the DINOv2 ViT-L/14 CLS
    features of two inputs of any kind. ``weights``: FAIR's ``dinov2_vitl14_pretrain.pth`` (default: as
    :func:`fidfast.dinov2.resolve_dinov2_weights` finds it); ``protocol``: ``edm2`` (EDM2's float32
    antialiased bicubic to 224, the default) or ``dgm-eval`` (PIL's 8-bit bicubic: dgm-eval's, and EDM2's
    ``resize_mode="pil"``); ``method``: the Fréchet distance's; the rest: :class:`fidfast.Settings`' fields."""
    check_method(method)
    s1, s2 = statistics_pair(a, b, network_settings("dinov2", weights, protocol, **settings))
    return frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance, method=method)


def cmmd(a: Source, b: Source, weights: Union[str, os.PathLike, None] = None, **settings) -> float:
    """CMMD (Jayasumana et al. 2024, "Rethinking FID"): the MMD² of the CLIP ViT-L/14-336 image embeddings
    of two inputs of any kind (images: embeddings are not statistics) under :func:`mmd_gaussian`, as CMMD's
    reference code computes it (it drops the images past the last whole batch of its ``batch_size``;
    fidfast uses them all). ``weights``: OpenAI's ``ViT-L-14-336px.pt`` or open_clip's state dict; the rest:
    :class:`fidfast.Settings`' fields. Protocol ``cmmd``: the centre square, PIL's bicubic to 336²."""
    return cmmd_with(a, b, network_settings("clip", weights, None, **settings))


def cmmd_with(a: Source, b: Source, settings: Settings) -> float:
    """CMMD of two inputs under ``settings`` (:func:`network_settings`'s for ``clip``)."""
    (_, x), (_, y) = features(a, settings), features(b, settings)
    return mmd_gaussian(x.to(settings.device), y.to(settings.device))


def mmd_gaussian(x: torch.Tensor, y: torch.Tensor, sigma: float = CMMD_SIGMA, scale: float = CMMD_SCALE,
                 block: int = 4096) -> float:
    """``scale`` · MMD² of N×d ``x`` and M×d ``y`` with the Gaussian kernel exp(−‖a − b‖² / 2σ²), the biased
    (minimum-variance) estimator: mean k(x, x′) + mean k(y, y′) − 2 mean k(x, y), diagonals included.
    float64, by blocks of ``block`` rows (memory ~block² doubles). CMMD's σ = 10 and × 1000 by default."""
    x, y = (torch.as_tensor(t).to(torch.float64) for t in (x, y))
    y = y.to(x.device)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or min(len(x), len(y)) < 1:
        raise FidfastError(f"MMD needs two N×d feature sets of equal d, got {tuple(x.shape)} and {tuple(y.shape)}")
    gamma = 1.0 / (2.0 * sigma ** 2)

    def mean_kernel(a: torch.Tensor, b: torch.Tensor) -> float:
        total = 0.0
        for i in range(0, len(a), block):
            ai = a[i:i + block]
            for j in range(0, len(b), block):
                bj = b[j:j + block]
                squared = (ai * ai).sum(1)[:, None] + (bj * bj).sum(1)[None, :] - 2.0 * ai @ bj.T
                total += float(torch.exp(-gamma * squared).sum())
        return total / (len(a) * len(b))

    return scale * (mean_kernel(x, x) + mean_kernel(y, y) - 2.0 * mean_kernel(x, y))


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


ADM_SPLIT_SIZE = 5000  # the ADM evaluator's compute_inception_score(split_size=5000)


def inception_score(logits: Union[np.ndarray, torch.Tensor], split_size: int = ADM_SPLIT_SIZE, *,
                    splits: Optional[int] = None, shuffle_seed: Optional[int] = None,
                    return_std: bool = False) -> Union[float, Tuple[float, float]]:
    """Inception Score of classifier logits: per split of the rows, exp(mean over its rows of
    KL(p(y|x) ‖ p̄(y))), with p(y|x) = softmax(logits) and p̄ the split's mean of p; then the mean over the
    splits. Computed in float64 (log p from log-softmax), on the logits' device.

    Two split conventions, each its anchor's:

    - ADM's evaluator (guided-diffusion ``evaluations/evaluator.py``, the default): consecutive splits of
      ``split_size`` rows in the given order, [0, s), [s, 2s), ..., the last one shorter when s does not
      divide N. (The evaluator itself computes in float32: a few 1e-6 relative from float64, 4e-6 measured.)
    - torch-fidelity's ``isc`` (``isc_features_to_metric``): ``splits=10, shuffle_seed=2020,
      return_std=True``: the rows permuted by ``np.random.RandomState(2020).permutation(N)``, then cut into
      ``splits`` parts at i·N // splits.

    Args:
        logits: N×C real logits (unnormalised log-probabilities: the ADM evaluator's pool_3 @ W without the
            bias, over C = 1008 classes), finite, any real dtype; N ≥ 1, C ≥ 2.
        split_size: rows per split (ADM's convention), ≥ 1; not used when ``splits`` is given.
        splits: the number of near-equal splits (torch-fidelity's convention), 1 ≤ splits ≤ N.
        shuffle_seed: when given (0 ≤ seed < 2³²), the rows are first permuted by
            ``np.random.RandomState(shuffle_seed).permutation(N)``, with either convention.
        return_std: also return the standard deviation of the splits' scores (numpy's, ddof 0, as
            torch-fidelity's ``inception_score_std``).
    Returns:
        The score (≥ 1, ≤ C), a Python float; with ``return_std`` (mean, std).
    """
    if not isinstance(logits, torch.Tensor) and not np.issubdtype(np.asarray(logits).dtype, np.number):
        raise FidfastError(f"logits must be real numbers, got {np.asarray(logits).dtype}")
    x = logits.detach() if isinstance(logits, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(logits))
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 2:
        raise FidfastError(f"logits must be an N×C array with N ≥ 1 and C ≥ 2, got shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise FidfastError(f"logits must be real numbers, got {x.dtype}")
    n = x.shape[0]
    if splits is None:
        if isinstance(split_size, bool) or not isinstance(split_size, (int, np.integer)) or split_size < 1:
            raise FidfastError(f"split_size must be a whole number ≥ 1, got {split_size!r}")
        bounds = [(start, min(n, start + int(split_size))) for start in range(0, n, int(split_size))]
    else:
        if split_size != ADM_SPLIT_SIZE:
            raise FidfastError(f"give split_size (ADM's consecutive splits) or splits (torch-fidelity's), not "
                               f"both: got split_size={split_size!r} and splits={splits!r}")
        if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)) or not 1 <= splits <= n:
            raise FidfastError(f"splits must be a whole number from 1 to the number of rows ({n}), got {splits!r}")
        bounds = [(i * n // splits, (i + 1) * n // splits) for i in range(int(splits))]
    if shuffle_seed is not None and (isinstance(shuffle_seed, bool) or not isinstance(shuffle_seed, (int, np.integer))
                                     or not 0 <= shuffle_seed < 2 ** 32):
        raise FidfastError(f"shuffle_seed must be a whole number from 0 to 2**32 - 1, or None, got {shuffle_seed!r}")
    x = x.to(torch.float64)
    if not bool(torch.isfinite(x).all()):
        raise FidfastError("logits hold non-finite values (NaN or inf)")
    if shuffle_seed is not None:
        x = x[torch.from_numpy(np.random.RandomState(int(shuffle_seed)).permutation(n)).to(x.device)]
    log_p = torch.log_softmax(x, dim=1)
    p = log_p.exp()
    scores = []
    for start, stop in bounds:
        mean_p = p[start:stop].mean(0)
        log_mean = torch.where(mean_p > 0, mean_p, 1).log()  # a class without probability in the split adds 0
        kl = (p[start:stop] * (log_p[start:stop] - log_mean)).sum(1).mean()
        scores.append(float(kl.exp()))
    mean = float(np.mean(scores))
    return (mean, float(np.std(scores))) if return_std else mean
