"""The decode stage: image files and archive members → uint8 pixels, packed batch by batch.

Worker processes decode with PIL and pack each batch (:func:`fidfast.preprocess.pack`), so the main
process receives one buffer per batch. Images stay uint8 H×W×3 until the preprocess stage. Modes follow
PIL's ``convert('RGB')`` (pytorch-fid's), except 16-bit greyscale, which is scaled to 8 bits
(pytorch-fid's convert clips it to 255, silently wrong).
"""
from __future__ import annotations

import io
import lzma
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Dict, Iterator, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from PIL import Image

from fidfast.errors import FidfastError
from fidfast.preprocess import PackedBatch, pack
from fidfast.settings import Settings
from fidfast.sources import ImageRef, is_zip, ref_name

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
    """Decodes image i (a file, or a member of a zip or tar archive); a failure is returned, not raised,
    so the batch can report or skip it. Archives are opened lazily, once per worker process; a tar is
    read from ``readable[archive]``, its uncompressed copy when it is compressed (random access)."""

    def __init__(self, refs: Sequence[ImageRef], readable: Optional[Dict[Path, Path]] = None) -> None:
        self.refs = list(refs)
        self.readable = dict(readable or {})
        self._open: Dict[Path, object] = {}

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int) -> Decoded:
        ref = self.refs[i]
        if not isinstance(ref, tuple):
            return _decode_to_result(ref, str(ref))
        archive, member = ref
        try:
            data = self._member_bytes(archive, member)
        except Exception as exc:  # noqa: BLE001 - bad CRC, zlib errors, encryption: an unreadable image
            return None, ref_name(ref), f"{ref_name(ref)}: cannot read archive member ({exc.__class__.__name__}: {exc})"
        return _decode_to_result(io.BytesIO(data), ref_name(ref))

    def _member_bytes(self, archive: Path, member: str) -> bytes:
        if archive not in self._open:
            if is_zip(archive):
                self._open[archive] = zipfile.ZipFile(archive)
            else:
                tar = tarfile.open(self.readable.get(archive, archive))
                self._open[archive] = (tar, {m.name: m for m in tar.getmembers()})  # by name: one lookup each
        handle = self._open[archive]
        if isinstance(handle, zipfile.ZipFile):
            return handle.read(member)
        tar, members = handle
        return tar.extractfile(members[member]).read()

    def __getstate__(self):  # open archives do not cross into worker processes
        return {"refs": self.refs, "readable": self.readable, "_open": {}}


def collate(items: Sequence[Decoded]) -> PackedBatch:
    """Pack the decoded images of one batch (in the worker, so the main process gets one buffer)."""
    return pack([img for img, _, _ in items if img is not None],
                [(name, err) for img, name, err in items if img is None])


_DECOMPRESS = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz


def readable_tar(archive: Path, members: Set[str], folder: Path) -> Path:
    """A tar that gives ``members`` by random access: the archive itself when it is not compressed, else
    a plain copy of just those members in ``folder`` (one pass over the compressed stream; images are
    read in name order, not in archive order). Links become the files they point to."""
    with open(archive, "rb") as f:
        magic = f.read(6)
    if not magic.startswith(_DECOMPRESS):
        return archive
    copy = folder / f"{len(list(folder.iterdir()))}.tar"
    with tarfile.open(archive) as src, tarfile.open(copy, "w") as dst:
        for member in src:
            if member.name not in members:
                continue
            try:
                data = src.extractfile(member).read()
            except (KeyError, AttributeError):  # a link to nothing: left out, so reading it reports it
                continue
            entry = tarfile.TarInfo(member.name)
            entry.size = len(data)
            dst.addfile(entry, io.BytesIO(data))
    return copy


def iter_decoded(refs: Sequence[ImageRef], settings: Settings) -> Iterator[PackedBatch]:
    """Decoded, packed batches of ``refs`` in order, ``settings.batch_size`` images each, decoded by
    ``settings.num_workers`` processes (0: this one), pinned for a copy to a CUDA device. A bad image
    raises :class:`FidfastError` naming it, unless ``settings.skip_bad_images``: then each batch carries
    its bad images in ``.bad``."""
    workers = settings.num_workers
    tars: Dict[Path, Set[str]] = {}
    for ref in refs:
        if isinstance(ref, tuple) and not is_zip(ref[0]):
            tars.setdefault(ref[0], set()).add(ref[1])
    with tempfile.TemporaryDirectory(prefix="fidfast-") as scratch:
        readable = {}
        for tar, members in tars.items():
            try:
                readable[tar] = readable_tar(tar, members, Path(scratch))
            except (OSError, EOFError, tarfile.TarError, zlib.error, lzma.LZMAError) as exc:
                raise FidfastError(f"{tar}: cannot decompress ({exc.__class__.__name__}: {exc})") from None
        loader = torch.utils.data.DataLoader(
            ImageDataset(refs, readable), batch_size=settings.batch_size, shuffle=False, num_workers=workers,
            collate_fn=collate, pin_memory=settings.device.type == "cuda",
            prefetch_factor=4 if workers > 0 else None)
        for batch in loader:
            if batch.bad and not settings.skip_bad_images:
                raise FidfastError(f"{batch.bad[0][1]} (pass --skip-bad-images to skip such files)")
            yield batch
