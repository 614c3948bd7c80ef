"""The preprocess stage: decoded uint8 images → the network's input, N×3×299×299, in one home.

Packing (:func:`pack`): the images of a batch, of any mix of sizes, back to back in one flat uint8
buffer plus an (offset, H, W, C) row per image; it is what crosses from the decoding workers to the
device, in one copy (4× fewer bytes than float tensors).

Resizing and normalising are a :class:`Protocol`'s — today pytorch-fid's: p/255, ``F.interpolate``
bilinear with ``align_corners=False`` and no antialias, then 2x − 1. Each protocol has two
implementations of the same math:

* the native op ``resize_normalize``, the fast path: one launch per ragged batch, driven by per-axis
  tables of source indices and weights computed once per input size (:meth:`Protocol.taps`), so a
  protocol is a table, not a kernel;
* the PyTorch twin (:meth:`Protocol.reference`), the reference: the tool's own arithmetic, used where
  the extension has no kernel, for float tensor inputs, by the drop-in ``InceptionV3``, and by the tests
  that hold the native op to it (equal bit for bit on the CPU).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fidfast import native
from fidfast.errors import FidfastError

INCEPTION_SIZE = 299


# -- packing ------------------------------------------------------------------------------------

@dataclass
class PackedBatch:
    """A ragged batch of uint8 images, packed.

    Attributes:
        data: 1-D tensor holding each image row-major (H, W, C), back to back (CPU or CUDA): uint8
            pixels (decoded images), or float32 in [0, 1] (tensor inputs).
        meta: int64 N×4 CPU tensor, one row (element offset into data, H, W, C) per image; C is 1 or 3.
        bad: (name, error) of the images of this batch that could not be read (not in data).
    """

    data: torch.Tensor
    meta: torch.Tensor
    bad: List[Tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.meta.shape[0])

    def pin_memory(self) -> "PackedBatch":  # called by DataLoader(pin_memory=True)
        # The pixels only: meta is read on the host (resize_normalize pins the table rows it adds).
        return PackedBatch(self.data.pin_memory(), self.meta, self.bad)


def pack(images: Union[Sequence[Union[np.ndarray, torch.Tensor]], torch.Tensor],
         bad: Sequence[Tuple[str, str]] = ()) -> PackedBatch:
    """Pack images into one buffer.

    Args:
        images: N uint8 images, each H×W (grey), H×W×1 or H×W×3, pixels 0..255 (numpy arrays or
            tensors); or one N×H×W×C tensor, uint8 or float32 in [0, 1], which is viewed when it is
            contiguous, else copied once (it stays on its device).
        bad: the batch's unreadable images, carried along for the caller to report.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.dtype not in (torch.uint8, torch.float32) or images.shape[3] not in (1, 3):
            raise ValueError(f"pack: expected a uint8 or float32 N×H×W×C batch, got {images.dtype} "
                             f"{tuple(images.shape)}")
        nhwc = images.contiguous()
        n, h, w, c = nhwc.shape
        offsets = torch.arange(n, dtype=torch.int64) * (h * w * c)
        meta = torch.stack([offsets, *(torch.full((n,), s, dtype=torch.int64) for s in (h, w, c))], 1)
        return PackedBatch(nhwc.view(-1), meta, list(bad))
    tensors = []
    for i, img in enumerate(images):
        if isinstance(img, np.ndarray):
            if img.dtype != np.uint8:
                raise TypeError(f"pack: image {i} has dtype {img.dtype}, expected uint8")
            img = torch.from_numpy(np.ascontiguousarray(img))
        if img.dtype != torch.uint8:
            raise TypeError(f"pack: image {i} has dtype {img.dtype}, expected uint8")
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3) or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"pack: image {i} has shape {tuple(img.shape)}, expected H×W, H×W×1 or H×W×3")
        tensors.append(img)
    data = torch.empty(sum(t.numel() for t in tensors), dtype=torch.uint8)
    rows = []
    offset = 0
    for t in tensors:
        data[offset:offset + t.numel()].view(t.shape).copy_(t)
        rows.append([offset, *t.shape])
        offset += t.numel()
    return PackedBatch(data, torch.tensor(rows, dtype=torch.int64).reshape(-1, 4), list(bad))


def unpack(batch: PackedBatch) -> List[torch.Tensor]:
    """The batch's images as H×W×C uint8 views of its buffer."""
    return [batch.data[o:o + h * w * c].view(h, w, c) for o, h, w, c in batch.meta.tolist()]


def to_unit(img: torch.Tensor, divisor: float = 255.0) -> torch.Tensor:
    """An H×W×C image as float32 C×H×W p / divisor: for uint8 and 255, torchvision's ``ToTensor``, which
    makes the C×H×W copy contiguous before it divides."""
    return img.permute(2, 0, 1).contiguous().float().div(divisor)


# -- protocols ----------------------------------------------------------------------------------

def bilinear_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """ATen's ``upsample_bilinear2d`` along one axis (``align_corners=False``): for each output index
    the two source indices (int32 out×2) and their weights (float32 out×2), rounded as ATen rounds them.

    ATen computes the source position as scale·(dst + ½) − ½ in float32 with one rounding (a contracted
    multiply-add); the product of two float32 numbers is exact in float64 and so is the sum here, so
    rounding the float64 result once to float32 gives the same bits.
    """
    if in_size == out_size:  # ATen copies: each output reads its own pixel
        i = torch.arange(out_size, dtype=torch.int32)
        return torch.stack([i, i], 1), torch.tensor([[1.0, 0.0]]).expand(out_size, 2).contiguous()
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size, dtype=torch.float32)
    dst = torch.arange(out_size, dtype=torch.float64)
    src = (scale.double() * (dst + 0.5) - 0.5).float().clamp(min=0)
    i0 = src.floor().to(torch.int64).clamp(max=in_size - 1)
    w1 = (src - i0.float()).clamp(0, 1)
    i1 = torch.where(i0 < in_size - 1, i0 + 1, i0)
    return torch.stack([i0, i1], 1).to(torch.int32), torch.stack([1 - w1, w1], 1)


def tf1_bilinear_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """TensorFlow 1's ``ResizeBilinear`` (no half-pixel centres), as torch-fidelity reproduces it: source
    s = dst · (in / out) in float32, neighbours ⌊s⌋ and min(⌊s⌋ + 1, in − 1), weights 1 − (s − ⌊s⌋) and
    s − ⌊s⌋."""
    src = torch.arange(out_size, dtype=torch.float32) * torch.tensor(in_size / out_size, dtype=torch.float32)
    i0 = src.long()
    frac = src - i0.float()
    i1 = (i0 + 1).clamp(max=in_size - 1)
    return torch.stack([i0, i1], 1).to(torch.int32), torch.stack([1 - frac, frac], 1)


def _taps(first: np.ndarray, weights: np.ndarray, in_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of weights (one row per output, zero past each row's last tap) starting at source index
    ``first``, as int32 taps (padding repeats a valid index) and float32 weights."""
    taps = np.minimum(first[:, None] + np.arange(weights.shape[1]), in_size - 1)
    return torch.from_numpy(taps.astype(np.int32)), torch.from_numpy(weights.astype(np.float32))


def _span(low: np.ndarray, high: np.ndarray, in_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Each output's first source index and a mask of its taps past the last one, from the ends of the
    kernel's support (center ∓ support) rounded as PIL and ATen round them, within the image."""
    first = np.maximum(np.trunc(low.astype(np.float64) + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(high.astype(np.float64) + 0.5), in_size).astype(np.int64) - first
    return first, np.arange(int(count.max()))[None, :] >= count[:, None]


def _divide_by_row_sums(weights: np.ndarray) -> np.ndarray:
    total = np.zeros(weights.shape[0], weights.dtype)
    for column in weights.T:  # summed in order, as the C loops do
        total = total + column
    return np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0)


def pil_bicubic_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """PIL's ``Image.resize(BICUBIC)`` along one axis (Resample.c ``precompute_coeffs``, a = −0.5): the
    cubic kernel stretched by the downscale factor (antialiasing when downsampling), truncated to the
    image, normalised; in float64, as PIL computes it."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    center = (np.arange(out_size) + 0.5) * scale
    first, past = _span(center - 2.0 * filterscale, center + 2.0 * filterscale, in_size)
    x = np.abs((np.arange(past.shape[1])[None, :] + first[:, None] - center[:, None] + 0.5) / filterscale)
    weights = np.where(x < 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, (((x - 5) * x + 8) * x - 4) * -0.5, 0.0))
    weights[past] = 0.0
    return _taps(first, _divide_by_row_sums(weights), in_size)


def antialiased_bilinear_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """ATen's ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` along one axis
    (UpSampleKernel.cpp ``_compute_weights_aa``): the triangle kernel stretched by the downscale factor,
    truncated to the image, normalised (plain bilinear when upsampling); in float32 where ATen computes
    in float32 for float images, so the weights are ATen's to the bit."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support, invscale = (scale, f32(1.0 / np.float64(scale))) if scale >= 1.0 else (f32(1.0), f32(1.0))
    center = (np.float64(scale) * (np.arange(out_size) + 0.5)).astype(f32)
    first, past = _span(center - support, center + support, in_size)  # float32 sums, as ATen's
    offset = ((np.arange(past.shape[1])[None, :] + first[:, None]).astype(f32) - center[:, None]).astype(f32)
    x = np.abs(((offset.astype(np.float64) + 0.5) * np.float64(invscale)).astype(f32))
    weights = np.where(x < 1.0, (1.0 - x.astype(np.float64)).astype(f32), f32(0.0))
    weights[past] = 0.0
    return _taps(first, _divide_by_row_sums(weights), in_size)


def antialiased_bicubic_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """ATen's ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)`` along one axis
    (UpSampleKernel.cpp ``_compute_weights_aa`` with Keys' cubic, a = −0.5): the kernel stretched by the
    downscale factor (support 2·scale, else 2), truncated to the image, normalised; in float32 as ATen
    computes it for float images (equal to its resize to float32 rounding, see the tests)."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support, invscale = (f32(2.0) * scale, f32(1.0 / np.float64(scale))) if scale >= 1.0 else (f32(2.0), f32(1.0))
    center = (np.float64(scale) * (np.arange(out_size) + 0.5)).astype(f32)
    first, past = _span(center - support, center + support, in_size)
    offset = ((np.arange(past.shape[1])[None, :] + first[:, None]).astype(f32) - center[:, None]).astype(f32)
    x = np.abs(((offset.astype(np.float64) + 0.5) * np.float64(invscale)).astype(f32))
    near = ((f32(1.5) * x - f32(2.5)) * x * x + f32(1.0)).astype(f32)
    far = (((f32(-0.5) * x + f32(2.5)) * x - f32(4.0)) * x + f32(2.0)).astype(f32)
    weights = np.where(x < 1.0, near, np.where(x < 2.0, far, f32(0.0))).astype(f32)
    weights[past] = 0.0
    return _taps(first, _divide_by_row_sums(weights), in_size)


@dataclass(frozen=True)
class Protocol:
    """How one FID tool turns pixels into network input.

    The native op computes clamp(((resampled p / divisor) − shift) · scale, lo, hi) through the tables of
    ``taps`` (scale a power of two, so the product equals the tool's division); ``resize`` and
    ``normalize`` are the tool's own arithmetic on float N×C×H×W tensors of p / divisor, the reference.
    ``network`` is what the protocol feeds (``inception``, or ``dinov2``: a protocol of FD_DINOv2, whose
    network normalises its own input); ``resize_uint8``, where set, resizes each uint8 H×W×C image to
    size×size before anything else, as the tool does on 8-bit images (PIL's rounding included).
    """

    name: str
    divisor: float
    shift: float
    scale: float
    taps: Callable[[int, int], Tuple[torch.Tensor, torch.Tensor]]
    resize: Callable[[torch.Tensor, int], torch.Tensor]
    normalize: Callable[[torch.Tensor], torch.Tensor]
    lo: float = -math.inf
    hi: float = math.inf
    network: str = "inception"
    resize_uint8: Optional[Callable[[np.ndarray, int], np.ndarray]] = None

    def reference(self, x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
        """The PyTorch twin: float N×C×H×W of p / divisor → N×C×size×size network input."""
        return self.normalize(self.resize(x, size))


def interpolate_bilinear(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """pytorch-fid's resize of float N×C×H×W to size×size (``align_corners=False``, no antialias)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def two_x_minus_one(x: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's normalisation of [0, 1] to [−1, 1]."""
    return 2 * x - 1


def interpolate_tf1(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """TensorFlow 1's bilinear resize of float N×C×H×W, in torch-fidelity's arithmetic
    (``interpolate_bilinear_2d_like_tensorflow1x``): lo + (hi − lo) · frac along x, then along y."""
    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        taps, weights = tf1_bilinear_taps(t.shape[dim], size)
        shape = [1] * t.dim()
        shape[dim] = size
        lo, hi = (t.index_select(dim, taps[:, j].long().to(t.device)) for j in (0, 1))
        return lo + (hi - lo) * weights[:, 1].to(t.device).view(shape)

    return along(along(x, 3), 2)


def pil_bicubic(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """clean-fid's resize of float N×C×H×W: each channel as a float32 PIL image, ``resize(BICUBIC)``."""
    planes = [np.asarray(Image.fromarray(plane).resize((size, size), Image.BICUBIC))  # float32: mode F
              for plane in x.detach().to("cpu", torch.float32).numpy().reshape(-1, *x.shape[2:])]
    return torch.from_numpy(np.stack(planes)).view(*x.shape[:2], size, size).to(x.device)


def interpolate_antialiased(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """torchmetrics' resize of float N×C×H×W: bilinear with ``antialias=True``."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def interpolate_bicubic_antialiased(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """EDM2's resize for FD_DINOv2 (``resize_mode="torch"``): bicubic with ``antialias=True``, float32, no
    clamping."""
    return F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)


def pil_bicubic_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """dgm-eval's resize for FD_DINOv2 (torchvision's ``Resize`` of a PIL image; EDM2's
    ``resize_mode="pil"``): PIL's bicubic on the 8-bit RGB image, rounded to uint8 as PIL rounds."""
    rgb = np.ascontiguousarray(np.broadcast_to(img, (*img.shape[:2], 3)))
    return np.array(Image.fromarray(rgb, "RGB").resize((size, size), Image.BICUBIC))


def pil_center_crop_bicubic_uint8(img: np.ndarray, size: int) -> np.ndarray:
    """CMMD's crop and resize: the central square of the short side's length (offsets rounded down), then
    PIL's bicubic to size×size on the 8-bit image (grey images as RGB: the same pixels per channel)."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return pil_bicubic_uint8(img[top:top + side, left:left + side], size)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def from_0_255(x: torch.Tensor) -> torch.Tensor:
    """The TensorFlow Inception's normalisation of [0, 255] to [−1, 1]: (x − 128) / 128."""
    return (x - 128) / 128


def clipped_from_0_255(x: torch.Tensor) -> torch.Tensor:
    """clean-fid's: clip to [0, 255] (bicubic overshoots), then (x − 128) / 128."""
    return (x.clamp(0, 255) - 128) / 128


PYTORCH_FID = Protocol(name="pytorch-fid", divisor=255.0, shift=0.5, scale=2.0, taps=bilinear_taps,
                       resize=interpolate_bilinear, normalize=two_x_minus_one)
PROTOCOLS = {p.name: p for p in (
    PYTORCH_FID,
    Protocol(name="tf", divisor=1.0, shift=128.0, scale=1 / 128, taps=tf1_bilinear_taps, resize=interpolate_tf1,
             normalize=from_0_255),
    Protocol(name="clean", divisor=1.0, shift=128.0, scale=1 / 128, taps=pil_bicubic_taps, resize=pil_bicubic,
             normalize=clipped_from_0_255, lo=-1.0, hi=127 / 128),
    Protocol(name="torchmetrics", divisor=1.0, shift=128.0, scale=1 / 128, taps=antialiased_bilinear_taps,
             resize=interpolate_antialiased, normalize=from_0_255),
    # FD_DINOv2's: to 224² and [0, 1]; the network subtracts ImageNet's mean and divides by its std.
    Protocol(name="edm2", divisor=255.0, shift=0.0, scale=1.0, taps=antialiased_bicubic_taps,
             resize=interpolate_bicubic_antialiased, normalize=_identity, network="dinov2"),
    Protocol(name="dgm-eval", divisor=255.0, shift=0.0, scale=1.0, taps=pil_bicubic_taps, resize=pil_bicubic,
             normalize=_identity, network="dinov2", resize_uint8=pil_bicubic_uint8),
    # CMMD's: centre square, to 336² and [0, 1]; the network normalises with CLIP's mean and std.
    Protocol(name="cmmd", divisor=255.0, shift=0.0, scale=1.0, taps=pil_bicubic_taps, resize=pil_bicubic,
             normalize=_identity, network="clip", resize_uint8=pil_center_crop_bicubic_uint8),
)}
"""Every published way to feed a network, by ``--protocol`` name (README: "Protocols"): four of the FID
Inception, two of FD_DINOv2's DINOv2, CMMD's of CLIP."""


def protocols_of(network: str) -> List[str]:
    """The names of the protocols that feed ``network`` (``inception``, ``dinov2`` or ``clip``)."""
    return [name for name, p in PROTOCOLS.items() if p.network == network]


@functools.lru_cache(maxsize=256)
def _axis_table(protocol: Protocol, in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return protocol.taps(in_size, out_size)


@functools.lru_cache(maxsize=16)
def _batch_tables(protocol: Protocol, lengths: Tuple[int, ...], out_size: int
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tables of every input length of a batch, stacked (rows padded to the widest with zero
    weights after the last tap, which leaves each sum's rounding unchanged), and each length's first row."""
    tables = [_axis_table(protocol, length, out_size) for length in lengths]
    k = max(t.shape[1] for t, _ in tables)
    taps = torch.cat([torch.cat([t, t[:, -1:].expand(-1, k - t.shape[1])], 1) for t, _ in tables])
    weights = torch.cat([torch.cat([w, w.new_zeros(w.shape[0], k - w.shape[1])], 1) for _, w in tables])
    first = torch.arange(len(lengths), dtype=torch.int64) * out_size
    return taps.contiguous(), weights.contiguous(), first


def _divisor(batch: PackedBatch, protocol: Protocol) -> float:
    """p / divisor for bytes; float pixels are in [0, 1], 1/255 of a byte's scale."""
    return protocol.divisor if batch.data.dtype == torch.uint8 else protocol.divisor / 255


def resize_normalize(batch: PackedBatch, size: int = INCEPTION_SIZE, dtype: torch.dtype = torch.float32,
                     channels_last: bool = False, protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """The network input of a packed batch (uint8 pixels, or float32 in [0, 1]): N×3×size×size of
    ``dtype`` on ``batch.data``'s device, as ``protocol`` makes it.

    Grey images are replicated to 3 channels. The native op when the extension has a kernel for the
    device (one launch), else the protocol's PyTorch reference, image by image.
    """
    if not native.has_kernel(batch.data.device) or len(batch) == 0:
        return resize_normalize_reference(batch, size, dtype, channels_last, protocol)
    meta, taps, weights = op_tables(batch, size, protocol)
    return torch.ops.fidfast.resize_normalize(batch.data, meta, taps, weights, _divisor(batch, protocol),
                                              protocol.shift, protocol.scale, protocol.lo, protocol.hi, size, dtype,
                                              channels_last)


def op_tables(batch: PackedBatch, size: int, protocol: Protocol = PYTORCH_FID
              ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The native op's meta (each image's first height and width table rows appended) and its tap and
    weight tables, on the host: the CUDA op checks a pinned copy of them, then uploads it."""
    lengths = tuple(sorted(set(batch.meta[:, 1].tolist()) | set(batch.meta[:, 2].tolist())))
    taps, weights, first = _batch_tables(protocol, lengths, size)
    known = torch.tensor(lengths, dtype=torch.int64)
    rows = first[torch.searchsorted(known, batch.meta[:, 1:3].contiguous())]
    return torch.cat([batch.meta, rows], 1), taps, weights


def resize_normalize_reference(batch: PackedBatch, size: int = INCEPTION_SIZE, dtype: torch.dtype = torch.float32,
                               channels_last: bool = False, protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """:func:`resize_normalize` by the protocol's PyTorch reference, image by image."""
    data, meta = batch.data, batch.meta
    native.check(data.dtype in (torch.uint8, torch.float32) and data.ndim == 1 and data.is_contiguous(),
                 "resize_normalize: data must be a contiguous 1-D uint8 or float32 tensor")
    native.check(meta.dtype == torch.int64 and meta.ndim == 2 and meta.shape[1] == 4,
                 "resize_normalize: meta must be int64 [N, 4]")
    native.check(size >= 1, f"resize_normalize: out_size must be >= 1, got {size}")
    native.check(dtype in (torch.float32, torch.float16),
                 f"resize_normalize: dtype must be float32 or float16, got {dtype}")
    for i, (offset, h, w, c) in enumerate(meta.tolist()):
        native.check(c in (1, 3), f"resize_normalize: image {i} has C={c}, expected 1 or 3")
        native.check(h >= 1 and w >= 1, f"resize_normalize: image {i} has H={h}, W={w}, expected >= 1")
        native.check(0 <= offset and offset + h * w * c <= data.numel(),
                     f"resize_normalize: image {i} (offset {offset}, {h}x{w}x{c}) runs past the end of data")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty(len(batch), 3, size, size, dtype=dtype, device=data.device, memory_format=fmt)
    divisor = _divisor(batch, protocol)
    for i, img in enumerate(unpack(batch)):
        out[i] = protocol.reference(to_unit(img, divisor)[None], size)[0].expand(3, -1, -1)
    return out


def unit_range(protocol: Protocol) -> Protocol:
    """``protocol``'s resampling with output in [0, 1] instead of its network's range: the input of a
    custom feature module (clean-fid's bicubic overshoot is clipped, as clean-fid clips it)."""
    clip = protocol.lo > -math.inf
    return replace(protocol, divisor=255.0, shift=0.0, scale=1.0, normalize=_clip_unit if clip else _identity,
                   lo=0.0 if clip else -math.inf, hi=1.0 if clip else math.inf)


def _clip_unit(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(0, 1)


def module_input(batch: Union[PackedBatch, torch.Tensor], device: torch.device, size: Optional[int],
                 protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """A batch as a custom feature module's input: float32 N×3×size×size in [0, 1] on ``device``, resampled
    as ``protocol`` resamples; with ``size`` None, the images at their own size, which must then be one."""
    if size is not None:
        if protocol.resize_uint8 is not None:  # the tool resizes the 8-bit images: exactly so, on the host
            if not isinstance(batch, PackedBatch) or batch.data.dtype != torch.uint8:
                raise FidfastError(f"protocol {protocol.name} resizes 8-bit images, as its tool does; pass uint8 "
                                   "images or files, not float tensors")
            images = [protocol.resize_uint8(img.numpy(), size) for img in unpack(PackedBatch(batch.data.cpu(),
                                                                                               batch.meta))]
            return torch.stack([to_unit(torch.from_numpy(img)) for img in images]).to(device)
        if not isinstance(batch, PackedBatch):
            batch = pack(batch.to(device, torch.float32).permute(0, 2, 3, 1))
        packed = PackedBatch(batch.data.to(device, non_blocking=True), batch.meta, batch.bad)
        return resize_normalize(packed, size, torch.float32, False, unit_range(protocol))
    if not isinstance(batch, PackedBatch):
        return batch.to(device, torch.float32)
    shapes = sorted({(h, w) for _, h, w, _ in batch.meta.tolist()})
    if len(shapes) > 1:
        listed = ", ".join(f"{h}×{w}" for h, w in shapes[:3]) + (", ..." if len(shapes) > 3 else "")
        raise FidfastError(f"a batch holds images of {len(shapes)} sizes ({listed}), but the features module has no "
                           "input_size: set module.input_size = S to have every image resized to S×S")
    return torch.stack([to_unit(img.to(device)).expand(3, -1, -1) for img in unpack(batch)])


def network_input(batch: Union[PackedBatch, torch.Tensor], device: torch.device, dtype: torch.dtype,
                  protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """A packed batch, or a float N×3×H×W batch in [0, 1], as the network's input on ``device``
    (channels_last on CUDA, where cuDNN's convolutions want it), made by ``protocol``: one launch of the
    native op either way (a float batch is packed H×W×C on the device first)."""
    if isinstance(batch, PackedBatch):
        packed = PackedBatch(batch.data.to(device, non_blocking=True), batch.meta, batch.bad)
    else:
        packed = pack(batch.to(device, torch.float32).permute(0, 2, 3, 1))
    return resize_normalize(packed, INCEPTION_SIZE, dtype, device.type == "cuda", protocol)
