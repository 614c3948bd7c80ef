"""fidfast: a fast, pytorch-fid-compatible Fréchet Inception Distance.

Five stages, each one module: sources and decode (:mod:`fidfast.sources`, :mod:`fidfast.decode`) →
preprocess (:mod:`fidfast.preprocess`) → Inception (:mod:`fidfast.features`, network definition in
:mod:`fidfast.network`, weights in :mod:`fidfast.weights`) → statistics (:mod:`fidfast.stats`) →
Fréchet distance (:mod:`fidfast.frechet`). :mod:`fidfast.pipeline` runs the first four for one input
with the :class:`Settings` built at the API edge.

Drop-in: ``from fidfast import fid_score`` replaces ``from pytorch_fid import fid_score``.
"""
from __future__ import annotations

from typing import Optional

import torch

from fidfast import fid_score, inception, native
from fidfast.errors import FidfastError
from fidfast.frechet import frechet_distance
from fidfast.metrics import (FID, calculate_fid, calculate_kid, cmmd, fd_dinov2, inception_score,
                             kernel_inception_distance, mmd_gaussian)
from fidfast.neighbours import improved_precision_recall, prdc
from fidfast.pipeline import compute_features, compute_stats
from fidfast.settings import Settings
from fidfast.sources import open_npz_images
from fidfast.stats import FeatureStats
from fidfast.subsample import fid_bootstrap, fid_infinity
from fidfast.suite import adm_suite
from fidfast.training import FrechetInceptionDistance, KernelInceptionDistance
from fidfast.version import __version__
from fidfast.weights import resolve_weights

__all__ = ["__version__", "fid_score", "inception", "FidfastError", "frechet_distance", "compute_stats",
           "compute_features", "FeatureStats", "FID", "Settings", "calculate_fid", "calculate_kid",
           "kernel_inception_distance", "prdc", "fid_infinity", "fid_bootstrap", "FrechetInceptionDistance",
           "KernelInceptionDistance", "backend_info", "open_npz_images",
           "adm_suite", "inception_score", "improved_precision_recall", "fd_dinov2", "cmmd",
           "mmd_gaussian"]


def backend_info(weights: Optional[str] = None) -> dict:
    """Which code paths run here: native ops (CPU/CUDA) or why not, CUDA availability, registered ops,
    weights file."""
    try:
        resolved = resolve_weights(weights, download=False)
        weights_path, weights_source = resolved.path, resolved.source
    except FidfastError:
        weights_path, weights_source = None, None
    return {
        "version": __version__,
        "torch": torch.__version__,
        "native_cpu": native.LOADED,
        "native_cuda": native.cuda_compiled(),
        "native_error": native.reason(),
        "cuda_available": torch.cuda.is_available(),
        "ops": native.op_names(),
        "torchscript": hasattr(torch, "jit"),
        "weights": weights_path,
        "weights_source": weights_source,
    }
