"""The native ops behind fidfast, with a pure-PyTorch twin of each.

Importing the extension ``fidfast._C`` registers ``torch.ops.fidfast.*`` (CPU kernels, plus CUDA
kernels when it was built with a CUDA toolkit). When it is missing or fails to load, or a tensor
is on a device it has no kernels for, the functions here run the PyTorch implementations below,
which compute the same math (tests/test_ops.py runs both through the same checks).

Ops:
    pack_images + resize_normalize   uint8 images -> Inception input, as pytorch-fid preprocesses
    cov_update_ / cov_merge_         streaming float64 mean and co-moment (exact Chan merge)
    sqrtm_newton_schulz              square root of a symmetric PSD matrix by Newton-Schulz
"""

from __future__ import annotations

import logging
import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

_log = logging.getLogger(__name__)

try:
    from fidfast import _C
except (ImportError, OSError) as exc:  # not built, or built against another torch
    _C = None
    _log.debug("fidfast._C not loaded (%s); using the PyTorch implementations", exc)

NATIVE: bool = _C is not None
"""True when the extension loaded and torch.ops.fidfast.* is registered."""

_OP_NAMES = ("resize_normalize", "cov_update_", "cov_merge_", "sqrtm_newton_schulz")


def native_cuda() -> bool:
    """True when the loaded extension has CUDA kernels compiled in."""
    return NATIVE and bool(_C.cuda_compiled())


def op_names() -> list[str]:
    """Names of the registered torch.ops.fidfast ops ([] without the extension)."""
    return [name for name in _OP_NAMES if NATIVE and hasattr(torch.ops.fidfast, name)]


def _native_for(device: torch.device) -> bool:
    return NATIVE and (device.type == "cpu" or (device.type == "cuda" and native_cuda()))


def _check(ok: bool, message: str) -> None:
    # RuntimeError, like the TORCH_CHECK failures of the native kernels.
    if not ok:
        raise RuntimeError(message)


# -- images -------------------------------------------------------------------------------------

def pack_images(images: Sequence[Union[np.ndarray, torch.Tensor]]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pack decoded images back to back into one uint8 buffer for :func:`resize_normalize`.

    Args:
        images: N uint8 arrays or tensors, each H×W (grey), H×W×1 (grey) or H×W×3 (RGB), pixels 0..255.

    Returns:
        ``(data, meta)`` on the CPU: ``data`` is 1-D uint8 holding each image row-major (H, W, C);
        ``meta`` is int64 N×4 with rows (byte offset into data, H, W, C).
    """
    tensors = []
    for i, img in enumerate(images):
        if isinstance(img, np.ndarray):
            if img.dtype != np.uint8:
                raise TypeError(f"pack_images: image {i} has dtype {img.dtype}, expected uint8")
            img = torch.from_numpy(np.ascontiguousarray(img))
        if img.dtype != torch.uint8:
            raise TypeError(f"pack_images: image {i} has dtype {img.dtype}, expected uint8")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3) or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"pack_images: image {i} has shape {tuple(img.shape)}, expected H×W, H×W×1 or H×W×3")
        tensors.append(img)
    data = torch.empty(sum(t.numel() for t in tensors), dtype=torch.uint8)
    rows = []
    offset = 0
    for t in tensors:
        data[offset:offset + t.numel()].view(t.shape).copy_(t)
        rows.append([offset, *t.shape])
        offset += t.numel()
    return data, torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)


def resize_normalize(data: torch.Tensor, meta: torch.Tensor, out_size: int = 299, dtype: torch.dtype = torch.float32,
                     channels_last: bool = False) -> torch.Tensor:
    """pytorch-fid's preprocessing of packed images: p/255, bilinear resize, 2x − 1.

    The resize is ``F.interpolate(mode="bilinear", align_corners=False)`` without antialias; grey
    images are replicated to 3 channels. One kernel launch for the whole batch on CUDA.

    Args:
        data: 1-D contiguous uint8 buffer from :func:`pack_images` (CPU or CUDA).
        meta: int64 N×4 (offset, H, W, C), on the CPU (best: pinned; it is checked there before the
            copy) or on ``data``'s device.
        out_size: output height and width in pixels (pytorch-fid: 299).
        dtype: torch.float32 or torch.float16.
        channels_last: return channels_last memory format instead of contiguous NCHW.

    Returns:
        N×3×out_size×out_size tensor of ``dtype`` on ``data``'s device, values in [-1, 1].
    """
    if _native_for(data.device):
        return torch.ops.fidfast.resize_normalize(data, meta, out_size, dtype, channels_last)
    return _resize_normalize_torch(data, meta, out_size, dtype, channels_last)


def _resize_normalize_torch(data: torch.Tensor, meta: torch.Tensor, out_size: int, dtype: torch.dtype,
                            channels_last: bool) -> torch.Tensor:
    _check(data.dtype == torch.uint8 and data.ndim == 1 and data.is_contiguous(),
           "resize_normalize: data must be a contiguous 1-D uint8 tensor")
    _check(meta.dtype == torch.int64 and meta.ndim == 2 and meta.shape[1] == 4, "resize_normalize: meta must be int64 [N, 4]")
    _check(out_size >= 1, f"resize_normalize: out_size must be >= 1, got {out_size}")
    _check(dtype in (torch.float32, torch.float16), f"resize_normalize: dtype must be float32 or float16, got {dtype}")
    rows = meta.tolist()
    for i, (offset, h, w, c) in enumerate(rows):
        _check(c in (1, 3), f"resize_normalize: image {i} has C={c}, expected 1 or 3")
        _check(h >= 1 and w >= 1, f"resize_normalize: image {i} has H={h}, W={w}, expected >= 1")
        _check(0 <= offset and offset + h * w * c <= data.numel(),
               f"resize_normalize: image {i} (offset {offset}, {h}x{w}x{c}) runs past the end of data")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(len(rows), 3, out_size, out_size, dtype=dtype, device=data.device, memory_format=fmt)
    for i, (offset, h, w, c) in enumerate(rows):
        # CHW contiguous before the float conversion, as torchvision's ToTensor leaves it.
        img = data[offset:offset + h * w * c].view(h, w, c).permute(2, 0, 1).contiguous().float().div(255)
        x = F.interpolate(img[None], size=(out_size, out_size), mode="bilinear", align_corners=False)
        out[i] = (2 * x[0] - 1).expand(3, -1, -1)
    return out


# -- streaming statistics -----------------------------------------------------------------------

def cov_update_(mean: torch.Tensor, comoment: torch.Tensor, n: int, batch: torch.Tensor) -> None:
    """Add a batch of feature rows to a streaming (mean, co-moment) state, in place.

    The batch's own float64 mean and centred co-moment are merged exactly (Chan et al.), so
    ``comoment / (N − 1)`` equals ``np.cov(X, rowvar=False)`` of all N rows to ~1e-13 even when
    the features have a large mean. With n == 0 the buffers' contents are ignored and overwritten.

    Args:
        mean: float64 (d,) contiguous, mean of the n rows seen so far; updated.
        comoment: float64 (d, d) contiguous, Σ (x − mean)(x − mean)ᵀ over those rows; updated (full symmetric).
        n: number of rows seen before this batch (the caller tracks it).
        batch: float32, float16 or float64 (B, d) on the same device. B == 0 is a no-op.
    """
    if _native_for(mean.device):
        torch.ops.fidfast.cov_update_(mean, comoment, n, batch)
    else:
        _cov_update_torch(mean, comoment, n, batch)


def cov_merge_(mean: torch.Tensor, comoment: torch.Tensor, n: int, other_mean: torch.Tensor,
               other_comoment: torch.Tensor, other_n: int) -> None:
    """Merge another (mean, co-moment, count) state into this one, in place (exact; any order).

    Args:
        mean, comoment, n: this state, as in :func:`cov_update_`; ``mean`` and ``comoment`` are updated.
        other_mean, other_comoment, other_n: the state merged in (float64, same shapes and device).
    """
    if _native_for(mean.device):
        torch.ops.fidfast.cov_merge_(mean, comoment, n, other_mean, other_comoment, other_n)
    else:
        _cov_merge_torch(mean, comoment, n, other_mean, other_comoment, other_n)


def _check_state(op: str, mean: torch.Tensor, comoment: torch.Tensor, n: int) -> None:
    _check(mean.dtype == torch.float64 and comoment.dtype == torch.float64, f"{op}: mean and comoment must be float64")
    d = mean.shape[0] if mean.ndim == 1 else -1
    _check(d >= 0 and tuple(comoment.shape) == (d, d), f"{op}: expected mean [d] and comoment [d, d], got "
           f"{tuple(mean.shape)} and {tuple(comoment.shape)}")
    _check(mean.is_contiguous() and comoment.is_contiguous(), f"{op}: mean and comoment must be contiguous")
    _check(n >= 0, f"{op}: n must be >= 0, got {n}")


def _cov_update_torch(mean: torch.Tensor, comoment: torch.Tensor, n: int, batch: torch.Tensor) -> None:
    _check_state("cov_update_", mean, comoment, n)
    _check(batch.dtype in (torch.float32, torch.float16, torch.float64),
           f"cov_update_: batch must be float32, float16 or float64, got {batch.dtype}")
    _check(batch.ndim == 2 and batch.shape[1] == mean.shape[0],
           f"cov_update_: batch must be [B, {mean.shape[0]}], got {tuple(batch.shape)}")
    _check(batch.device == mean.device, f"cov_update_: batch is on {batch.device} but the state is on {mean.device}")
    if batch.shape[0] == 0:
        return
    x = batch.to(torch.float64)
    batch_mean = x.mean(0)
    centred = x - batch_mean
    _merge_torch(mean, comoment, n, batch_mean, centred.T @ centred, batch.shape[0])


def _cov_merge_torch(mean: torch.Tensor, comoment: torch.Tensor, n: int, other_mean: torch.Tensor,
                     other_comoment: torch.Tensor, other_n: int) -> None:
    _check_state("cov_merge_", mean, comoment, n)
    _check(other_mean.dtype == torch.float64 and other_comoment.dtype == torch.float64,
           "cov_merge_: other_mean and other_comoment must be float64")
    _check(other_mean.shape == mean.shape and other_comoment.shape == comoment.shape,
           "cov_merge_: the two states have different shapes")
    _check(other_n >= 0, f"cov_merge_: other_n must be >= 0, got {other_n}")
    if other_n > 0:
        _merge_torch(mean, comoment, n, other_mean, other_comoment, other_n)


def _merge_torch(mean: torch.Tensor, comoment: torch.Tensor, n: int, other_mean: torch.Tensor, m2: torch.Tensor,
                 other_n: int) -> None:
    m2 = 0.5 * (m2 + m2.T)  # exactly symmetric even if the GEMM was not
    if n == 0:
        mean.copy_(other_mean)
        comoment.copy_(m2)
        return
    total = float(n) + float(other_n)
    delta = other_mean - mean
    comoment.add_(m2).add_(float(n) * float(other_n) / total * torch.outer(delta, delta))
    mean.add_(delta * (float(other_n) / total))


# -- matrix square root -------------------------------------------------------------------------

def sqrtm_newton_schulz(a: torch.Tensor, max_iter: int = 100, tol: float = 1e-14) -> Tuple[torch.Tensor, float, int]:
    """Square root of a symmetric positive semi-definite matrix by coupled Newton–Schulz.

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
    if _native_for(a.device):
        return torch.ops.fidfast.sqrtm_newton_schulz(a, max_iter, tol)
    return _sqrtm_newton_schulz_torch(a, max_iter, tol)


def _sqrtm_newton_schulz_torch(a: torch.Tensor, max_iter: int, tol: float) -> Tuple[torch.Tensor, float, int]:
    _check(a.dtype == torch.float64, f"sqrtm_newton_schulz: a must be float64, got {a.dtype}")
    _check(a.ndim == 2 and a.shape[0] == a.shape[1], f"sqrtm_newton_schulz: a must be square, got {tuple(a.shape)}")
    _check(max_iter >= 0, f"sqrtm_newton_schulz: max_iter must be >= 0, got {max_iter}")
    _check(bool(torch.isfinite(a).all()), "sqrtm_newton_schulz: a contains NaN or Inf")
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
