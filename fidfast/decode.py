"""The decode stage: image files and archive members → uint8 pixels, one image at a time.

:class:`ImageReader` is what the feeder's worker processes run (:mod:`fidfast.feeder` packs the pixels
into its ring). Images stay uint8 H×W×3 until the preprocess stage. Modes follow PIL's ``convert('RGB')``
(pytorch-fid's), except 16-bit greyscale, which is scaled to 8 bits (pytorch-fid's convert clips it to
255, silently wrong).
"""
from __future__ import annotations

import functools
import io
import logging
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import IO, Callable, Dict, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from PIL import Image

from fidfast.errors import FidfastError
from fidfast.sources import ImageRef, is_zip, ref_name

log = logging.getLogger("fidfast")

_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

Decoded = Tuple[Optional[np.ndarray], str, Optional[str]]  # (image or None, name, error or None)


def to_rgb_uint8(img: Image.Image, writable: bool = True) -> np.ndarray:
    """H×W×3 uint8 as ``img.convert('RGB')`` gives, except 16-bit grey, which is scaled (not clipped) to 8
    bits. ``writable=False`` saves a copy of the pixels (torch.from_numpy warns on a read-only array)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        grey = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    rgb = img if img.mode == "RGB" else img.convert("RGB")  # convert would copy an RGB image whole
    return np.array(rgb, dtype=np.uint8) if writable else np.asarray(rgb)


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


class Opened:
    """One image opened (its header read, its pixels not yet decoded), or why it could not be."""

    def __init__(self, name: str, img: Optional[Image.Image] = None, data: Optional[bytes] = None,
                 error: Optional[str] = None) -> None:
        self.name, self.img, self.data, self.error = name, img, data, error

    @property
    def nbytes(self) -> int:
        """Decoded bytes at most (H × W × 3); 0 for an image that could not be opened."""
        return self.img.width * self.img.height * 3 if self.img is not None else 0

    def close(self) -> None:
        if self.img is not None:
            self.img.close()


class ImageReader:
    """Reads image i of ``refs`` (a file, or a member of a zip or tar archive): :meth:`open` reads its
    header, :meth:`decode` its pixels; failures are returned, not raised, so a chunk can report or skip the
    image. Archives are opened lazily, once per process; a tar is read from ``readable[archive]``, its
    uncompressed copy when it is compressed (random access).

    With ``fast_jpeg``, JPEGs are decoded by torchvision's libjpeg-turbo (~1.4× PIL's speed), but only for
    JPEG layouts (colour components, chroma subsampling, progressive or not, Adobe transform) on which it
    gave PIL's very pixels: the first JPEG of each layout a process meets is decoded both ways and compared;
    any other layout, mode or difference goes to PIL, which defines the pixels (pytorch-fid's).
    """

    def __init__(self, refs: Sequence[ImageRef], readable: Optional[Dict[Path, Path]] = None,
                 fast_jpeg: bool = False) -> None:
        self.refs = list(refs)
        self.readable = dict(readable or {})
        self.fast_jpeg = fast_jpeg
        self._open: Dict[Path, object] = {}
        self._layouts: Dict[tuple, bool] = {}  # JPEG layout → torchvision gives PIL's pixels
        self._decode_jpeg: Optional[Callable] = None

    def open(self, i: int) -> Opened:
        ref = self.refs[i]
        name = ref_name(ref)
        try:
            data = self._bytes(ref)
        except Exception as exc:  # noqa: BLE001 - bad CRC, zlib errors, encryption, missing file
            what = "cannot read archive member" if isinstance(ref, tuple) else "cannot decode image"
            return Opened(name, error=f"{name}: {what} ({exc.__class__.__name__}: {exc})")
        try:
            return Opened(name, Image.open(io.BytesIO(data)), data)
        except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
            return Opened(name, error=f"{name}: cannot decode image ({exc.__class__.__name__}: {exc})")

    def decode(self, opened: Opened) -> Tuple[Optional[np.ndarray], Optional[str]]:
        """(H×W×C uint8 pixels, None), C = 3, or 1 for a grey JPEG decoded fast; or (None, error)."""
        try:
            if self.fast_jpeg and opened.img.format == "JPEG" and opened.img.mode in ("RGB", "L"):
                fast = self._fast_jpeg(opened)
                if fast is not None:
                    return fast, None
            return to_rgb_uint8(opened.img, writable=False), None
        except Exception as exc:  # noqa: BLE001
            return None, f"{opened.name}: cannot decode image ({exc.__class__.__name__}: {exc})"

    def read(self, i: int) -> Decoded:
        """Image i as (H×W×3 or H×W×1 uint8, name, None) or (None, name, error)."""
        opened = self.open(i)
        try:
            if opened.error is not None:
                return None, opened.name, opened.error
            img, err = self.decode(opened)
            return img, opened.name, err
        finally:
            opened.close()

    def _fast_jpeg(self, opened: Opened) -> Optional[np.ndarray]:
        img = opened.img
        layout = (img.mode, tuple(tuple(c[1:3]) for c in getattr(img, "layer", ())), "progression" in img.info,
                  img.info.get("adobe_transform"))
        if self._layouts.get(layout) is False or not self._torchvision():
            return None
        fast = self._decode_jpeg(torch.frombuffer(bytearray(opened.data), dtype=torch.uint8)).permute(1, 2, 0).numpy()
        if layout not in self._layouts:
            reference = np.asarray(img.convert("RGB") if img.mode != "L" else img)
            self._layouts[layout] = fast.shape[2] in (1, 3) and np.array_equal(
                fast, reference if reference.ndim == 3 else reference[:, :, None])
            if not self._layouts[layout]:
                log.info("fidfast: torchvision's JPEG decoder differs from PIL's on %s (layout %s): PIL decodes "
                         "such JPEGs", opened.name, layout)
                return None
        return fast

    def _torchvision(self) -> bool:
        if self._decode_jpeg is None:
            try:
                with warnings.catch_warnings():  # torchvision ≥ 0.29 deprecates its decoders (not their output)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    from torchvision.io import ImageReadMode, decode_jpeg
            except Exception:  # noqa: BLE001 - no (working) torchvision: PIL decodes everything
                self.fast_jpeg = False
                return False
            self._decode_jpeg = functools.partial(decode_jpeg, mode=ImageReadMode.UNCHANGED)
        return True

    def _bytes(self, ref: ImageRef) -> bytes:
        if not isinstance(ref, tuple):
            with open(ref, "rb") as f:
                return f.read()
        archive, member = ref
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
