"""The native extension ``fidfast._C``: loading it, saying when it is missing, and its fake kernels.

Importing ``fidfast._C`` registers the ops ``torch.ops.fidfast.*`` (CPU kernels, plus CUDA kernels when
it was built with a CUDA toolkit). Each op's Python entry lives with its stage and falls back to that
stage's PyTorch twin, which computes the same math, where the extension has no kernel:

    resize_normalize              fidfast.preprocess    uint8 images → network input
    cov_update_, cov_merge_       fidfast.stats         streaming float64 mean and co-moment
    sqrtm_newton_schulz           fidfast.frechet       square root of a symmetric PSD matrix

A failed load warns once (the fallbacks are correct, but slower) and :func:`reason` says why. The fake
(meta) kernels below describe each op's outputs without running it, so the ops trace under
``torch.compile`` and FakeTensor (checked by ``torch.library.opcheck`` in the tests).
"""
from __future__ import annotations

from typing import List, Optional

import torch

from fidfast.errors import warn

OP_NAMES = ("resize_normalize", "cov_update_", "cov_merge_", "sqrtm_newton_schulz")

try:
    from fidfast import _C
except (ImportError, OSError) as exc:  # not built, or built against another torch
    _C = None
    _REASON: Optional[str] = f"{exc.__class__.__name__}: {exc}"
else:
    _REASON = None

LOADED: bool = _C is not None
"""True when the extension loaded and torch.ops.fidfast.* is registered."""

_warned = False


def reason() -> Optional[str]:
    """Why the extension did not load (None when it did)."""
    return _REASON


def cuda_compiled() -> bool:
    """True when the loaded extension has CUDA kernels compiled in."""
    return LOADED and bool(_C.cuda_compiled())


def op_names() -> List[str]:
    """Names of the registered torch.ops.fidfast ops ([] without the extension)."""
    return [name for name in OP_NAMES if LOADED and hasattr(torch.ops.fidfast, name)]


def has_kernel(device: torch.device) -> bool:
    """True when the extension has kernels for tensors on ``device``; warns once (per process) when the
    extension is missing, since every op then runs its slower PyTorch twin."""
    global _warned
    if not LOADED:
        if not _warned:
            _warned = True
            warn(f"fidfast: the native extension fidfast._C did not load ({_REASON}); running the slower "
                 "PyTorch implementations (`fidfast --version` shows the backends; rebuild with "
                 "`pip install --no-build-isolation -e .`)", RuntimeWarning)
        return False
    return device.type == "cpu" or (device.type == "cuda" and cuda_compiled())


def check(ok: bool, message: str) -> None:
    """The PyTorch twins' argument checks: RuntimeError, as the native kernels' TORCH_CHECK raises."""
    if not ok:
        raise RuntimeError(message)


if LOADED:
    @torch.library.register_fake("fidfast::resize_normalize")
    def _(data, meta, taps, weights, divisor, shift, scale, lo, hi, out_size, dtype, channels_last):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        return torch.empty((meta.shape[0], 3, out_size, out_size), dtype=dtype, device=data.device,
                           memory_format=fmt)

    @torch.library.register_fake("fidfast::cov_update_")
    def _(mean, comoment, n, batch):
        return None

    @torch.library.register_fake("fidfast::cov_merge_")
    def _(mean, comoment, n, other_mean, other_comoment, other_n):
        return None

    @torch.library.register_fake("fidfast::sqrtm_newton_schulz")
    def _(a, max_iter, tol):
        return torch.empty_like(a), a.new_empty(()), a.new_empty((), dtype=torch.int64)
