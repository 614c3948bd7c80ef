"""The decode stage: image files and archive members → uint8 pixels, packed batch by batch.

Worker processes decode with PIL and pack each batch (:func:`fidfast.preprocess.pack`), so the main
process receives one buffer per batch. Images stay uint8 H×W×3 until the preprocess stage. Modes follow
PIL's ``convert('RGB')`` (pytorch-fid's), except 16-bit greyscale, which is scaled to 8 bits
(pytorch-fid's convert clips it to 255, silently wrong).
"""
from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Dict, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from fidfast.errors import FidfastError
from fidfast.preprocess import PackedBatch, pack
from fidfast.settings import Settings
from fidfast.sources import ImageRef, ref_name

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

Decoded = Tuple[Optional[np.ndarray], str, Optional[str]]  # (image or None, name, error or None)


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """H×W×3 uint8 as ``img.convert('RGB')`` gives, except 16-bit grey, which is scaled (not clipped) to 8 bits."""
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.array(img.convert("RGB"), dtype=np.uint8)  # a writable array: torch.from_numpy warns on read-only


def decode_image(source: Union[str, Path, IO[bytes]], name: Optional[str] = None) -> np.ndarray:
    """Decode one image (a path or a binary file object) to H×W×3 uint8.

    Raises :class:`FidfastError` naming the image when it is not a readable image (corrupt, truncated,
    empty, or another format under an image extension).
    """
    try:
        with Image.open(source) as img:
            return to_rgb_uint8(img)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise FidfastError(f"{name or source}: cannot decode image ({exc.__class__.__name__}: {exc})") from None


def _decode_to_result(source, name: str) -> Decoded:
    try:
        return decode_image(source, name), name, None
    except FidfastError as exc:
        return None, name, str(exc)


class ImageDataset(torch.utils.data.Dataset):
    """Decodes image i (a file or a zip member); a failure is returned, not raised, so the batch can
    report or skip it. Zip files are opened lazily, once per worker process."""

    def __init__(self, refs: Sequence[ImageRef]) -> None:
        self.refs = list(refs)
        self._zips: Dict[Path, zipfile.ZipFile] = {}

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Decoded:
        ref = self.refs[i]
        if not isinstance(ref, tuple):
            return _decode_to_result(ref, str(ref))
        archive, member = ref
        try:
            if archive not in self._zips:
                self._zips[archive] = zipfile.ZipFile(archive)
            data = self._zips[archive].read(member)
        except Exception as exc:  # noqa: BLE001 - bad CRC, zlib errors, encryption: an unreadable image
            return None, ref_name(ref), f"{ref_name(ref)}: cannot read archive member ({exc.__class__.__name__}: {exc})"
        return _decode_to_result(io.BytesIO(data), ref_name(ref))

    def __getstate__(self):  # open zip handles do not cross into worker processes
        return {"refs": self.refs, "_zips": {}}


class TarImages(torch.utils.data.IterableDataset):
    """Streams a tar archive's image members in order (random access into a compressed tar would
    decompress from the start every time); worker k of K decodes members k, k+K, ..."""

    def __init__(self, refs: Sequence[Tuple[Path, str]]) -> None:
        self.archive = refs[0][0]
        self.members = {m for _, m in refs}

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Decoded]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        index = 0
        with tarfile.open(self.archive) as t:
            for member in t:
                if member.name not in self.members:
                    continue
                if index % workers == worker:
                    yield _decode_to_result(t.extractfile(member), f"{self.archive}:{member.name}")
                index += 1


def collate(items: Sequence[Decoded]) -> PackedBatch:
    """Pack the decoded images of one batch (in the worker, so the main process gets one buffer)."""
    return pack([img for img, _, _ in items if img is not None],
                [(name, err) for img, name, err in items if img is None])


def dataset_for(refs: Sequence[ImageRef]) -> torch.utils.data.Dataset:
    """The dataset that decodes these refs: streaming for a tar archive, random access otherwise."""
    if refs and isinstance(refs[0], tuple) and not refs[0][0].name.lower().endswith(".zip"):
        return TarImages(refs)
    return ImageDataset(refs)


def iter_decoded(refs: Sequence[ImageRef], settings: Settings) -> Iterator[PackedBatch]:
    """Decoded, packed batches of ``refs`` in order, ``settings.batch_size`` images each, decoded by
    ``settings.num_workers`` processes (0: this one), pinned for a copy to a CUDA device. A bad image
    raises :class:`FidfastError` naming it, unless ``settings.skip_bad_images``: then each batch carries
    its bad images in ``.bad``."""
    workers = settings.num_workers
    loader = torch.utils.data.DataLoader(
        dataset_for(refs), batch_size=settings.batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
        pin_memory=settings.device.type == "cuda", prefetch_factor=4 if workers > 0 else None)
    for batch in loader:
        if batch.bad and not settings.skip_bad_images:
            raise FidfastError(f"{batch.bad[0][1]} (pass --skip-bad-images to skip such files)")
        yield batch
