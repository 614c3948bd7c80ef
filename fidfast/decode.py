"""The decode stage: find image files and decode them to uint8 H×W×3 arrays, as PIL's convert('RGB') does.

Images stay uint8 until the preprocess stage (4× fewer bytes through the loader than float tensors);
ragged batches of mixed sizes are packed into one flat buffer plus a (offset, H, W, C) table, which the
``resize_normalize`` op consumes in one launch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from fidfast import _ops
from fidfast.errors import FidfastError

IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def is_image_file(path: Union[str, Path]) -> bool:
    """By extension, case-insensitively (pytorch-fid misses ``.JPG`` on Linux)."""
    return Path(path).suffix[1:].lower() in IMAGE_EXTENSIONS


def list_image_files(path: Union[str, Path], recursive: bool = False) -> List[Path]:
    """Sorted image files in a folder (top level unless ``recursive``)."""
    root = Path(path)
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in root.glob(pattern) if p.is_file() and is_image_file(p))
    if not files:
        hint = ""
        if not recursive and any(is_image_file(p) for p in root.glob("**/*") if p.is_file()):
            hint = "; its subfolders do: add --recursive"
        raise FidfastError(f"{root}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder{hint}")
    return files


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """H×W×3 uint8 as ``img.convert('RGB')`` gives, except 16-bit grey, which is scaled (not clipped) to 8 bits."""
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(path: Union[str, Path]) -> np.ndarray:
    """Decode one image file to H×W×3 uint8; raises :class:`FidfastError` naming the file when it cannot."""
    try:
        with Image.open(path) as img:
            return to_rgb_uint8(img)
    except FidfastError:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for corrupt files
        raise FidfastError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from None


class DecodedBatch:
    """One packed ragged batch: ``data`` (flat uint8), ``meta`` (n×4 int64) and the files that failed."""

    def __init__(self, data: torch.Tensor, meta: torch.Tensor, bad: List[Tuple[str, str]]) -> None:
        self.data, self.meta, self.bad = data, meta, bad

    def __len__(self) -> int:
        return int(self.meta.shape[0])

    def pin_memory(self) -> "DecodedBatch":  # called by DataLoader(pin_memory=True)
        return DecodedBatch(self.data.pin_memory(), self.meta.pin_memory(), self.bad)


class ImageFileDataset(torch.utils.data.Dataset):
    """Decodes file i to uint8; a failure is returned (not raised) so the batch can report or skip it."""

    def __init__(self, files: Sequence[Union[str, Path]]) -> None:
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tuple[Optional[np.ndarray], str, Optional[str]]:
        try:
            return decode_image(self.files[i]), str(self.files[i]), None
        except FidfastError as exc:
            return None, str(self.files[i]), str(exc)


def collate_decoded(items: Sequence[Tuple[Optional[np.ndarray], str, Optional[str]]]) -> DecodedBatch:
    """Pack the decoded images of one batch (in the worker, so the main process gets one buffer)."""
    good = [img for img, _, _ in items if img is not None]
    bad = [(path, err) for img, path, err in items if img is None]
    data, meta = _ops.pack_images(good) if good else (torch.empty(0, dtype=torch.uint8),
                                                      torch.empty(0, 4, dtype=torch.int64))
    return DecodedBatch(data, meta, bad)


def default_num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(8, cpus)
