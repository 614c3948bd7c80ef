"""fidfast: a fast, pytorch-fid-compatible Fréchet Inception Distance.

Five stages, each its own module: decode (:mod:`fidfast.decode`) → preprocess (the ``resize_normalize``
op, :mod:`fidfast._ops`) → Inception (:mod:`fidfast.features`) → statistics (:mod:`fidfast.stats`) →
Fréchet distance (:mod:`fidfast.frechet`); :mod:`fidfast.pipeline` runs the first four.

Drop-in: ``from fidfast import fid_score`` replaces ``from pytorch_fid import fid_score``.
"""
from __future__ import annotations

from typing import Optional

__version__ = "0.1.0"

from fidfast import fid_score, inception  # noqa: E402  (drop-in modules)
from fidfast.errors import FidfastError  # noqa: E402
from fidfast.frechet import frechet_distance  # noqa: E402
from fidfast.metrics import FID, calculate_fid, calculate_kid, kernel_inception_distance  # noqa: E402
from fidfast.pipeline import compute_stats  # noqa: E402
from fidfast.stats import FeatureStats  # noqa: E402

__all__ = ["__version__", "fid_score", "inception", "FidfastError", "frechet_distance", "compute_stats",
           "FeatureStats", "FID", "calculate_fid", "calculate_kid", "kernel_inception_distance", "backend_info"]


def backend_info(weights: Optional[str] = None) -> dict:
    """Which code paths run here: native ops (CPU/CUDA), CUDA availability, registered ops, weights file."""
    import torch

    from fidfast import _ops
    from fidfast.weights import resolve_weights

    try:
        resolved = resolve_weights(weights, download=False)
        weights_path, weights_source = resolved.path, resolved.source
    except FidfastError:
        weights_path, weights_source = None, None
    return {
        "version": __version__,
        "torch": torch.__version__,
        "native_cpu": _ops.NATIVE,
        "native_cuda": _ops.native_cuda(),
        "cuda_available": torch.cuda.is_available(),
        "ops": _ops.op_names(),
        "torchscript": hasattr(torch, "jit"),
        "weights": weights_path,
        "weights_source": weights_source,
    }
