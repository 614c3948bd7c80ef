"""The ADM evaluation suite without TensorFlow: guided-diffusion's ``evaluations/evaluator.py`` numbers
(Inception Score, FID, sFID, precision, recall) from one pass over each set of images.

The pass runs the FID Inception with three heads (:class:`fidfast.network.SuiteInception`): pool3 features
(FID; precision and recall), the spatial ``mixed_6/conv`` features (sFID) and the 1008 logits (Inception
Score). The network input is fidfast's ``tf`` protocol, which is what the evaluator's graph does to its
images (TF1's bilinear resize to 299, then (x − 128)/128). A reference ``.npz`` in the evaluator's format
gives its own statistics (``mu``, ``sigma``, ``mu_s``, ``sigma_s``) where it has them and its images
(``arr_0``) for precision and recall.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from fidfast import distributed
from fidfast.errors import FidfastError, RankError
from fidfast.features import feature_extractor
from fidfast.frechet import frechet_distance
from fidfast.metrics import inception_score
from fidfast.neighbours import improved_precision_recall
from fidfast.network import CLASSES, POOL_DIMS, SPATIAL_DIMS
from fidfast.pipeline import Images, finish, share, check_fid_input, iter_features
from fidfast.settings import Settings
from fidfast.sources import NPZ_IMAGES, Source, npz_arrays, open_npz_images, open_source
from fidfast.stats import FeatureStats

SUITE_WIDTH = POOL_DIMS + SPATIAL_DIMS + CLASSES
SUITE_PROTOCOL = "tf"


@dataclass
class SuiteFeatures:
    """What one pass over a set of images gives the suite.

    Attributes:
        pool: statistics of the pool3 features (2048), float64 (FID).
        spatial: statistics of the spatial features (2023), float64 (sFID).
        features: the pool3 features themselves, N×2048 float32 on the CPU, in input order (precision,
            recall); None when not kept.
        logits: N×1008 float32 on the CPU, in input order (Inception Score); None when not kept.
    """

    pool: FeatureStats
    spatial: FeatureStats
    features: Optional[torch.Tensor]
    logits: Optional[torch.Tensor]


def suite_settings(settings: Settings) -> Settings:
    """The suite's settings: the FID Inception at dims 2048 under the ``tf`` protocol (the evaluator's)."""
    if settings.features is not None:
        raise FidfastError("the ADM suite runs the FID Inception; a features module does not apply")
    if settings.protocol_given and settings.protocol != SUITE_PROTOCOL:
        raise FidfastError(f"the ADM suite's numbers are those of protocol {SUITE_PROTOCOL} (the evaluator's TF "
                           f"graph resizes so), not {settings.protocol}")
    if settings.dims_given and settings.dims != POOL_DIMS:
        raise FidfastError(f"the ADM suite uses pool3 features (dims {POOL_DIMS}), not dims {settings.dims}")
    return settings.like(POOL_DIMS, SUITE_PROTOCOL)


def suite_features(images: Images, settings: Settings, keep: bool = True) -> SuiteFeatures:
    """One pass over ``images`` (image files or arrays, :mod:`fidfast.sources`) with the suite's three
    heads. Under torch.distributed each rank takes its share; every rank gets the statistics, features
    and logits of all of it."""
    network = lambda: feature_extractor(settings.inception_weights, POOL_DIMS, settings.device,  # noqa: E731
                                        settings.precision, suite=True)
    settings.inception_weights.classifier()  # no classifier layer: said before any image is read
    pool = FeatureStats(POOL_DIMS, device=settings.device)
    spatial = FeatureStats(SPATIAL_DIMS, device=settings.device)
    kept: List[torch.Tensor] = []
    logits: List[torch.Tensor] = []
    skipped = 0
    try:
        for out, bad in iter_features(share(images), settings, network, SUITE_WIDTH):
            pool.update(out[:, :POOL_DIMS])
            spatial.update(out[:, POOL_DIMS:POOL_DIMS + SPATIAL_DIMS])
            if keep:
                kept.append(out[:, :POOL_DIMS].float().cpu())
                logits.append(out[:, POOL_DIMS + SPATIAL_DIMS:].float().cpu())
            skipped += bad
    except FidfastError as exc:
        if distributed.world_size() > 1 and not isinstance(exc, RankError):
            raise RankError(distributed.rank(), exc) from None
        raise
    pool, skipped_all = distributed.merge(pool, skipped)
    spatial, _ = distributed.merge(spatial, skipped)
    features = logits_all = None
    if keep:
        features = distributed.concatenate(torch.cat(kept) if kept else torch.empty(0, POOL_DIMS))
        logits_all = distributed.concatenate(torch.cat(logits) if logits else torch.empty(0, CLASSES))
    pool = finish(pool, skipped_all, settings, images.label)
    spatial.meta.update(pool.meta, dims=SPATIAL_DIMS)
    return SuiteFeatures(pool, spatial.to("cpu"), features, logits_all)


# -- the five numbers ----------------------------------------------------------------------------------

ADM_METRICS = ("inception_score", "fid", "sfid", "precision", "recall")
PR_K = 3  # the evaluator's nhood_sizes=(3,)


@dataclass
class Reference:
    """What the suite has of its reference: statistics (from the file, else from its images) and the pool
    features of its images (precision and recall), any of which may be missing."""

    pool: Optional[FeatureStats]
    spatial: Optional[FeatureStats]
    features: Optional[torch.Tensor]
    label: str


def reference(source: Source, settings: Settings) -> Reference:
    """The reference as the evaluator reads its batch: an .npz's own ``mu``, ``sigma``, ``mu_s``,
    ``sigma_s`` where it has them, and its images (``arr_0``) or, in a file fidfast wrote with ``--suite
    adm --save-stats``, its ``pool_features``; any other input (a folder, an image array) by one pass."""
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    if path is None or not path.name.lower().endswith(".npz"):
        images = open_source(source, settings.recursive)
        if isinstance(images, FeatureStats):
            raise FidfastError(f"{source}: statistics without spatial statistics or features; the suite's reference "
                               "is the evaluator's .npz batch, images, or a file written with --suite adm --save-stats")
        ran = suite_features(images, settings, keep=True)
        return Reference(ran.pool, ran.spatial, ran.features, images.label)
    if not path.is_file():
        raise FidfastError(f"{path}: no such file")
    arrays = set(npz_arrays(path))
    pool = FeatureStats.load(path) if {"mu", "sigma"} <= arrays else None
    spatial = FeatureStats.load(path, "_s") if {"mu_s", "sigma_s"} <= arrays else None
    for stats in (pool, spatial):
        if stats is not None and stats.protocol not in (None, SUITE_PROTOCOL):
            raise FidfastError(f"{path}: statistics of protocol {stats.protocol}; the suite's are protocol "
                               f"{SUITE_PROTOCOL}'s")
    features = None
    if "pool_features" in arrays:
        with np.load(path, allow_pickle=False) as f:
            features = torch.from_numpy(np.asarray(f["pool_features"], dtype=np.float32))
        if features.ndim != 2 or features.shape[1] != POOL_DIMS or not torch.isfinite(features).all():
            raise FidfastError(f"{path}: pool_features must be finite N×{POOL_DIMS}, got {tuple(features.shape)}")
    elif NPZ_IMAGES in arrays:
        ran = suite_features(open_npz_images(path), settings, keep=True)
        features, pool, spatial = ran.features, pool or ran.pool, spatial or ran.spatial
    if pool is None or spatial is None:
        have = ", ".join(sorted(arrays))
        raise FidfastError(f"{path}: the suite's reference needs images ({NPZ_IMAGES}) or mu, sigma, mu_s and "
                           f"sigma_s; it has {have}")
    return Reference(pool, spatial, features, str(path))


def adm_suite(reference_images: Source, samples: Source, **settings) -> Dict[str, Any]:
    """guided-diffusion's evaluator's five numbers for ``samples`` against ``reference_images``, without
    TensorFlow: Inception Score (of the samples, ADM's consecutive splits of 5,000), FID, sFID, and
    precision and recall (Kynkäänniemi et al., k = 3, ``≤``: :func:`fidfast.improved_precision_recall`).

    Inputs: any image input (an evaluator ``.npz`` batch, a folder, an array...); the reference also as the
    evaluator's reference ``.npz`` (its statistics, its images for precision and recall). Keyword arguments:
    :class:`fidfast.Settings` (``device``, ``precision``, ``weights`` — which must have the classifier layer,
    pytorch-fid's file does —, ``batch_size``, ``num_workers``...); the protocol is ``tf``, dims 2048.

    Returns a dict: ``inception_score``, ``fid``, ``sfid``, ``precision``, ``recall`` (floats; precision
    and recall None when the reference holds neither images nor features), and what they were computed
    with: ``n_reference``, ``n_samples``, ``protocol``, ``network_precision``, ``weights``, ``pr_k``.
    """
    s = suite_settings(Settings(**settings))
    ref = reference(reference_images, s)
    opened = open_source(samples, s.recursive)
    if isinstance(opened, FeatureStats):
        raise FidfastError(f"{samples}: a statistics file holds no logits or features; the suite needs the samples' "
                           "images")
    ran = suite_features(opened, s, keep=True)
    pool = [check_fid_input(x, label) for x, label in ((ref.pool, ref.label), (ran.pool, opened.label))]
    result: Dict[str, Any] = {
        "inception_score": inception_score(ran.logits),
        "fid": frechet_distance(pool[0].mean, pool[0].covariance, pool[1].mean, pool[1].covariance),
        "sfid": frechet_distance(ref.spatial.mean, ref.spatial.covariance, ran.spatial.mean, ran.spatial.covariance),
        "precision": None, "recall": None,
    }
    if ref.features is not None:
        result.update(improved_precision_recall(ref.features.to(s.device), ran.features.to(s.device), PR_K))
    result.update(n_reference=ref.pool.n if ref.features is None else int(ref.features.shape[0]),
                  n_samples=ran.pool.n, protocol=SUITE_PROTOCOL, network_precision=s.precision,
                  weights=s.inception_weights.path, pr_k=PR_K)
    return result
