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
from dataclasses import dataclass, field
from typing import Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from fidfast import native

INCEPTION_SIZE = 299


# -- packing ------------------------------------------------------------------------------------

@dataclass
class PackedBatch:
    """A ragged batch of uint8 images, packed.

    Attributes:
        data: 1-D uint8 tensor holding each image row-major (H, W, C), back to back (CPU or CUDA).
        meta: int64 N×4 CPU tensor, one row (byte offset into data, H, W, C) per image; C is 1 or 3.
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
    """Pack uint8 images into one buffer.

    Args:
        images: N images, each H×W (grey), H×W×1 or H×W×3, pixels 0..255 (numpy arrays or tensors);
            or one uint8 N×H×W×C tensor, which is viewed, not copied (it stays on its device).
        bad: the batch's unreadable images, carried along for the caller to report.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        if images.dtype != torch.uint8 or images.shape[3] not in (1, 3):
            raise ValueError(f"pack: expected a uint8 N×H×W×C batch, got {images.dtype} {tuple(images.shape)}")
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
    """An H×W×C uint8 image as float32 C×H×W p / divisor: for 255, torchvision's ``ToTensor``, which
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


@dataclass(frozen=True)
class Protocol:
    """How one FID tool turns pixels into network input.

    The native op computes ((resampled p / divisor) − shift) · scale through the tables of ``taps``
    (scale a power of two, so the product equals the tool's division); ``resize`` and ``normalize``
    are the tool's own arithmetic on float N×C×H×W tensors of p / divisor, the reference.
    """

    name: str
    divisor: float
    shift: float
    scale: float
    taps: Callable[[int, int], Tuple[torch.Tensor, torch.Tensor]]
    resize: Callable[[torch.Tensor, int], torch.Tensor]
    normalize: Callable[[torch.Tensor], torch.Tensor]

    def reference(self, x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
        """The PyTorch twin: float N×C×H×W of p / divisor → N×C×size×size network input."""
        return self.normalize(self.resize(x, size))


def interpolate_bilinear(x: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """pytorch-fid's resize of float N×C×H×W to size×size (``align_corners=False``, no antialias)."""
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def two_x_minus_one(x: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's normalisation of [0, 1] to [−1, 1]."""
    return 2 * x - 1


PYTORCH_FID = Protocol(name="pytorch-fid", divisor=255.0, shift=0.5, scale=2.0, taps=bilinear_taps,
                       resize=interpolate_bilinear, normalize=two_x_minus_one)


@functools.lru_cache(maxsize=256)
def _axis_table(protocol: Protocol, in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return protocol.taps(in_size, out_size)


@functools.lru_cache(maxsize=16)
def _batch_tables(protocol: Protocol, lengths: Tuple[int, ...], out_size: int, pinned: bool
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tables of every input length of a batch, stacked (rows padded to the widest with zero
    weights after the last tap, which leaves each sum's rounding unchanged), and each length's first row."""
    tables = [_axis_table(protocol, length, out_size) for length in lengths]
    k = max(t.shape[1] for t, _ in tables)
    taps = torch.cat([torch.cat([t, t[:, -1:].expand(-1, k - t.shape[1])], 1) for t, _ in tables])
    weights = torch.cat([torch.cat([w, w.new_zeros(w.shape[0], k - w.shape[1])], 1) for _, w in tables])
    first = torch.arange(len(lengths), dtype=torch.int64) * out_size
    if pinned:
        taps, weights = taps.pin_memory(), weights.pin_memory()
    return taps.contiguous(), weights.contiguous(), first


def resize_normalize(batch: PackedBatch, size: int = INCEPTION_SIZE, dtype: torch.dtype = torch.float32,
                     channels_last: bool = False, protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """The network input of a packed batch: N×3×size×size of ``dtype`` on ``batch.data``'s device.

    Grey images are replicated to 3 channels. The native op when the extension has a kernel for the
    device (one launch), else the protocol's PyTorch reference, image by image.
    """
    if not native.has_kernel(batch.data.device) or len(batch) == 0:
        return resize_normalize_reference(batch, size, dtype, channels_last, protocol)
    meta = batch.meta
    lengths = tuple(sorted(set(meta[:, 1].tolist()) | set(meta[:, 2].tolist())))
    taps, weights, first = _batch_tables(protocol, lengths, size, batch.data.is_cuda)
    known = torch.tensor(lengths, dtype=torch.int64)
    rows = first[torch.searchsorted(known, meta[:, 1:3].contiguous())]  # each image's first height and width rows
    meta = torch.cat([meta, rows], 1)
    if batch.data.is_cuda:
        meta = meta.pin_memory()  # checked on the host, then copied without waiting
    return torch.ops.fidfast.resize_normalize(batch.data, meta, taps, weights, protocol.divisor, protocol.shift,
                                              protocol.scale, size, dtype, channels_last)


def resize_normalize_reference(batch: PackedBatch, size: int = INCEPTION_SIZE, dtype: torch.dtype = torch.float32,
                               channels_last: bool = False, protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """:func:`resize_normalize` by the protocol's PyTorch reference, image by image."""
    data, meta = batch.data, batch.meta
    native.check(data.dtype == torch.uint8 and data.ndim == 1 and data.is_contiguous(),
                 "resize_normalize: data must be a contiguous 1-D uint8 tensor")
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
    for i, img in enumerate(unpack(batch)):
        out[i] = protocol.reference(to_unit(img, protocol.divisor)[None], size)[0].expand(3, -1, -1)
    return out


def network_input(batch: Union[PackedBatch, torch.Tensor], device: torch.device, dtype: torch.dtype,
                  protocol: Protocol = PYTORCH_FID) -> torch.Tensor:
    """A packed batch, or a float N×3×H×W batch in [0, 1], as the network's input on ``device``
    (channels_last on CUDA, where cuDNN's convolutions want it)."""
    channels_last = device.type == "cuda"
    if isinstance(batch, PackedBatch):
        moved = PackedBatch(batch.data.to(device, non_blocking=True), batch.meta, batch.bad)
        return resize_normalize(moved, INCEPTION_SIZE, dtype, channels_last, protocol)
    x = protocol.reference(batch.to(device, torch.float32)).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
