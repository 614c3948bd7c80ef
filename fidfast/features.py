"""The Inception stage: a compiled FID Inception that maps preprocessed batches to pooled features.

Compiled with TorchScript (script → freeze, which folds batch norm into the convolutions; on CPU in fp32
also ``optimize_for_inference``, oneDNN). Falls back to eager PyTorch where ``torch.jit`` is missing or
fails, or when ``FIDFAST_JIT=0``. TorchScript's deprecation FutureWarnings are kept from users.

On the CPU the frozen module is cached in ``$XDG_CACHE_HOME/fidfast/compiled/`` (written atomically with a
SHA-256 sidecar, keyed by the weights file, dims, fidfast and torch versions and the network's source):
loading it takes ~0.1 s where building, scripting and freezing take ~1.3 s, a fixed cost of every run.

fp16 runs the network with half-precision weights and activations in channels_last (cuDNN accumulates
in fp32). For this all-convolution network that is what fp16 autocast would do, minus a cast of every
weight on every call.
"""
from __future__ import annotations

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fidfast import inception
from fidfast.errors import FidfastError
from fidfast.inception import FIDInception3, InceptionV3
from fidfast.weights import atomic_save, cache_dir, cache_is_valid, resolve_weights

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


def _quiet_jit(fn: Callable, *args):
    """Call a torch.jit function without its deprecation FutureWarnings (torch 2.14)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BasicConv2d's batch norm into its convolution (eval mode), in the weights' own dtype."""
    for module in model.modules():
        if isinstance(module, inception.BasicConv2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def _eager(dims: int, device: torch.device, precision: str, weights: Optional[str]) -> nn.Module:
    model = PooledInception(inception.fid_inception_v3(weights), dims).eval().to(device)
    if precision == "fp16":
        # Fold in fp32, then round once: TorchScript's freeze would fold the already-rounded fp16 weights.
        model = fold_batch_norms(model).half()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def compiled_cache_path(dims: int, weights: Optional[str] = None) -> Path:
    """Where the frozen CPU fp32 module for these weights and dims is cached."""
    from fidfast import __version__

    resolved = Path(resolve_weights(weights).path).resolve()
    st = resolved.stat()
    key = hashlib.sha256(f"{__version__}|{torch.__version__}|{resolved}|{st.st_size}|{st.st_mtime_ns}|{dims}|"
                         .encode() + Path(inception.__file__).read_bytes() + Path(__file__).read_bytes())
    return cache_dir() / "compiled" / f"inception_d{dims}_{key.hexdigest()[:20]}.pt"


def _frozen_cpu(dims: int, weights: Optional[str]) -> torch.jit.ScriptModule:
    """The frozen CPU fp32 module: from the cache, else built, scripted, frozen and cached."""
    path = compiled_cache_path(dims, weights)
    if cache_is_valid(path):
        log.debug("fidfast: compiled Inception from %s", path)
        return _quiet_jit(torch.jit.load, str(path), "cpu")
    frozen = _quiet_jit(torch.jit.freeze, _quiet_jit(torch.jit.script, _eager(dims, torch.device("cpu"), "fp32",
                                                                               weights)))
    try:
        atomic_save(path, lambda tmp: _quiet_jit(torch.jit.save, frozen, tmp))
    except OSError as exc:  # a read-only cache costs time on the next run, nothing else
        log.debug("fidfast: cannot cache the compiled Inception in %s: %s", path, exc)
    return frozen


def _compiled(dims: int, device: torch.device, precision: str, weights: Optional[str]) -> torch.jit.ScriptModule:
    if device.type == "cpu":
        return _quiet_jit(torch.jit.optimize_for_inference, _frozen_cpu(dims, weights))
    return _quiet_jit(torch.jit.freeze, _quiet_jit(torch.jit.script, _eager(dims, device, precision, weights)))


# On the CPU the network runs this many images at a time, whatever the loader's batch: measured on the
# 2-core CI machine (AVX-512), 18.5 images/s at 4 or 8 against 14.5 at 48 (the activations of a few
# images stay in cache). The features do not depend on it.
CPU_MICRO_BATCH = 8


class FeatureExtractor:
    """The Inception stage as one callable: N×3×299×299 normalised input → N×dims features.

    ``module`` is the compiled network (a ``torch.jit.ScriptModule``) or, without TorchScript, the eager
    one; ``micro_batch`` (0 = whole batches) is how many images it sees per call.
    """

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], micro_batch: int = 0) -> None:
        self.module, self.micro_batch = module, micro_batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.micro_batch <= 0 or x.shape[0] <= self.micro_batch:
            return self.module(x)
        return torch.cat([self.module(part) for part in x.split(self.micro_batch)])


def build_feature_extractor(dims: int, device: torch.device, precision: str = "fp32",
                            weights: Optional[str] = None, compile: Optional[bool] = None) -> FeatureExtractor:
    """The FID Inception up to ``dims``, on ``device`` in ``precision``, compiled unless ``compile`` is
    False or ``FIDFAST_JIT=0`` (or TorchScript is missing or fails: then eager, with a log warning)."""
    micro_batch = CPU_MICRO_BATCH if device.type == "cpu" else 0
    if compile is None:
        compile = os.environ.get("FIDFAST_JIT", "1") != "0"
    if compile and hasattr(torch, "jit"):
        # Resolved first: a missing weights file is the user's error, not a TorchScript failure.
        resolved = resolve_weights(weights)
        log.debug("fidfast: FID Inception weights %s (%s)", resolved.path, resolved.source)
        try:
            return FeatureExtractor(_compiled(dims, device, precision, weights), micro_batch)
        except FidfastError:
            raise
        except Exception as exc:  # noqa: BLE001 - any TorchScript failure leaves the eager model, which is correct
            log.warning("fidfast: TorchScript compilation failed (%s); running eager", exc)
    return FeatureExtractor(_eager(dims, device, precision, weights), micro_batch)
