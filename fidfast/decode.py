"""The decode stage: find images (folders, file lists, zip and tar archives) and decode them to uint8.

Images stay uint8 H×W×3 until the preprocess stage (4× fewer bytes through the loader than float
tensors); the images of one batch, of any mix of sizes, are packed into one flat buffer plus an
(offset, H, W, C) table, which the ``resize_normalize`` op consumes in one launch.

Modes follow PIL's ``convert('RGB')`` (pytorch-fid's), except 16-bit greyscale, which is scaled to 8 bits
(pytorch-fid's convert clips it to 255, silently wrong).
"""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import IO, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

from fidfast import _ops
from fidfast.errors import FidfastError

IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
FILE_LIST_SUFFIXES = (".txt", ".lst")
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}

# One image: a file, or a member of an archive (archive path, member name).
ImageRef = Union[Path, Tuple[Path, str]]
Decoded = Tuple[Optional[np.ndarray], str, Optional[str]]  # (image or None, name, error or None)


def is_image_file(path: Union[str, Path]) -> bool:
    """By extension, case-insensitively (pytorch-fid misses ``.JPG`` on Linux)."""
    return Path(path).suffix[1:].lower() in IMAGE_EXTENSIONS


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def ref_name(ref: ImageRef) -> str:
    return f"{ref[0]}:{ref[1]}" if isinstance(ref, tuple) else str(ref)


def _no_images(what: Path, hint: str = "") -> FidfastError:
    return FidfastError(f"{what}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")


def list_image_files(path: Union[str, Path], recursive: bool = False) -> List[Path]:
    """Sorted image files in a folder (top level unless ``recursive``)."""
    root = Path(path)
    pattern = "**/*" if recursive else "*"
    # A broken link is listed (and then reported as unreadable), not silently left out.
    files = sorted(p for p in root.glob(pattern) if (p.is_file() or (p.is_symlink() and not p.exists()))
                   and is_image_file(p))
    if not files:
        hint = " in this folder"
        if not recursive and any(is_image_file(p) for p in root.glob("**/*") if p.is_file()):
            hint += "; its subfolders have some: add --recursive"
        raise _no_images(root, hint)
    return files


def read_file_list(path: Union[str, Path]) -> List[Path]:
    """Image paths from a text file, one per line (relative to the list's folder; '#' lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise FidfastError(f"{path}: cannot read file list ({exc})") from None
    files = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        file = (path.parent / line).resolve() if not os.path.isabs(line) else Path(line)
        if not file.is_file():
            raise FidfastError(f"{path}:{number}: no such image file: {line}")
        files.append(file)
    if not files:
        raise FidfastError(f"{path}: the file list names no images")
    return files


def list_archive(path: Union[str, Path]) -> List[Tuple[Path, str]]:
    """Image members (any depth) of a zip or tar archive, sorted by name."""
    path = Path(path)
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                names = [i.filename for i in z.infolist() if not i.is_dir()]
        else:
            with tarfile.open(path) as t:
                names = [m.name for m in t.getmembers() if m.isfile()]
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise FidfastError(f"{path}: cannot read archive ({exc.__class__.__name__}: {exc})") from None
    members = sorted(n for n in names if is_image_file(n) and not Path(n).name.startswith("._"))
    if not members:
        raise _no_images(path, " in this archive")
    return [(path, m) for m in members]


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


class DecodedBatch:
    """One packed ragged batch: ``data`` (flat uint8), ``meta`` (n×4 int64) and the images that failed."""

    def __init__(self, data: torch.Tensor, meta: torch.Tensor, bad: List[Tuple[str, str]]) -> None:
        self.data, self.meta, self.bad = data, meta, bad

    def __len__(self) -> int:
        return int(self.meta.shape[0])

    def pin_memory(self) -> "DecodedBatch":  # called by DataLoader(pin_memory=True)
        return DecodedBatch(self.data.pin_memory(), self.meta.pin_memory(), self.bad)


def pack_batch(images: Sequence[np.ndarray], bad: List[Tuple[str, str]]) -> DecodedBatch:
    if images:
        data, meta = _ops.pack_images(images)
    else:
        data, meta = torch.empty(0, dtype=torch.uint8), torch.empty(0, 4, dtype=torch.int64)
    return DecodedBatch(data, meta, bad)


def collate_decoded(items: Sequence[Decoded]) -> DecodedBatch:
    """Pack the decoded images of one batch (in the worker, so the main process gets one buffer)."""
    return pack_batch([img for img, _, _ in items if img is not None],
                      [(name, err) for img, name, err in items if img is None])


def dataset_for(refs: Sequence[ImageRef]) -> torch.utils.data.Dataset:
    """The dataset that decodes these refs: streaming for a tar archive, random access otherwise."""
    if refs and isinstance(refs[0], tuple) and not refs[0][0].name.lower().endswith(".zip"):
        return TarImages(refs)
    return ImageDataset(refs)


def default_num_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(8, cpus)
