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

from dataclasses import dataclass
from typing import List, Optional

import torch

from fidfast import distributed
from fidfast.errors import FidfastError, RankError
from fidfast.features import feature_extractor
from fidfast.network import CLASSES, POOL_DIMS, SPATIAL_DIMS
from fidfast.pipeline import Images, _finish, _share, iter_features
from fidfast.settings import Settings
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
        for out, bad in iter_features(_share(images), settings, network, SUITE_WIDTH):
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
    pool = _finish(pool, skipped_all, settings, images.label)
    spatial.meta.update(pool.meta, dims=SPATIAL_DIMS)
    return SuiteFeatures(pool, spatial.to("cpu"), features, logits_all)
