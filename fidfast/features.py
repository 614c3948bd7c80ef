"""The Inception stage: a compiled FID Inception that maps preprocessed batches to pooled features.

Compiled with TorchScript (script → freeze, which folds batch norm into the convolutions; on CPU in fp32
also ``optimize_for_inference``, oneDNN). Falls back to eager PyTorch where ``torch.jit`` is missing or
fails, or when ``FIDFAST_JIT=0``. TorchScript's deprecation FutureWarnings are kept from users.

fp16 runs the network with half-precision weights and activations in channels_last (cuDNN accumulates
in fp32). For this all-convolution network that is what fp16 autocast would do, minus a cast of every
weight on every call.
"""
from __future__ import annotations

import logging
import os
import warnings
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from fidfast.errors import FidfastError
from fidfast.inception import FIDInception3, InceptionV3

log = logging.getLogger("fidfast")

PRECISIONS = ("auto", "fp32", "fp16")


class PooledInception(nn.Module):
    """FID Inception up to the block for ``dims``, spatially averaged: N×3×299×299 in [−1, 1] → N×dims."""

    def __init__(self, trunk: FIDInception3, dims: int) -> None:
        super().__init__()
        if dims not in InceptionV3.BLOCK_INDEX_BY_DIM:
            raise FidfastError(f"dims must be one of {sorted(InceptionV3.BLOCK_INDEX_BY_DIM)}, got {dims}")
        self.blocks = nn.Sequential(*trunk.blocks(InceptionV3.BLOCK_INDEX_BY_DIM[dims]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.blocks(x), (1, 1)).flatten(1)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is fp16 on CUDA and fp32 elsewhere; fp16 needs CUDA."""
    if precision not in PRECISIONS:
        raise FidfastError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise FidfastError("--precision fp16 needs a CUDA device (fp16 convolutions on CPU are slow and "
                           "not what FID tools compare against); use fp32 or auto")
    return precision


def _compile(module: nn.Module, optimize: bool) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.freeze(torch.jit.script(module))
        if optimize:
            scripted = torch.jit.optimize_for_inference(scripted)
    return scripted


def build_feature_extractor(dims: int, device: torch.device, precision: str = "fp32",
                            weights: Optional[str] = None, compile: Optional[bool] = None
                            ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable mapping N×3×299×299 normalised input (in the precision's dtype) to N×dims features."""
    from fidfast.inception import fid_inception_v3

    model = PooledInception(fid_inception_v3(weights), dims).eval().to(device)
    if precision == "fp16":
        model = model.half()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile is None:
        compile = os.environ.get("FIDFAST_JIT", "1") != "0"
    if compile and hasattr(torch, "jit"):
        try:
            model = _compile(model, optimize=device.type == "cpu")
        except Exception as exc:  # noqa: BLE001 - any TorchScript failure leaves the eager model, which is correct
            log.warning("fidfast: TorchScript compilation failed (%s); running eager", exc)
    return model
