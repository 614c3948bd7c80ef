"""What an input is: every kind of thing users point fidfast at, resolved to one of three forms.

* :class:`FeatureStats` — an ``.npz`` statistics file (pytorch-fid's or fidfast's) or a FeatureStats;
* :class:`ImageFiles` — image files in name order (:func:`name_order`): a folder, a file list (``.txt``:
  one path a line), a zip or tar archive, or a Python list of paths;
* :class:`ImageArrays` — image arrays: a numpy array or torch tensor (uint8 N×H×W×3 or N×3×H×W, or
  float N×3×H×W in [0, 1]), any iterable of such batches (a generator sampling a model, a DataLoader), a
  list of single images (uint8 H×W×3 of any sizes, or float 3×H×W in [0, 1]) taken as one batch, or an
  ``.npz`` sample batch (uint8 ``arr_0``, the ADM evaluator's input), read from the file a batch at a time
  (:class:`NpzImages`).

An ``.npz`` is statistics when it has ``mu`` and ``sigma`` (an ADM reference batch too, which also has
images), else images when it has ``arr_0``; :func:`open_npz_images` gives the images of either.

Paths are kept as the OS gives them: a name that is not valid UTF-8 stays a ``Path`` (with Python's
surrogate escapes) through decoding, cache keys and messages.
"""
from __future__ import annotations

import codecs
import contextlib
import dataclasses
import io
import math
import os
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from numpy.lib import format as npy_format

from fidfast.errors import FidfastError
from fidfast.stats import FeatureStats

IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp"}
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
FILE_LIST_SUFFIXES = (".txt", ".lst")
NPZ_IMAGES = "arr_0"  # a sample batch's images: np.savez's first unnamed array, as the ADM evaluator reads
NPZ_READ_BYTES = 1 << 20  # bytes per read from an .npz member: what reading holds beyond the batch itself
NPZ_ITER_BYTES = 32 << 20  # batches of about this size when an NpzImages is iterated on its own

# One image: a file, or a member of an archive (archive path, member name).
ImageRef = Union[Path, Tuple[Path, str]]
ArrayLike = Union[np.ndarray, torch.Tensor]
Source = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], FeatureStats, ArrayLike, Iterable[ArrayLike]]


@dataclass
class ImageFiles:
    """Image files to decode, in order, and how to name them in messages."""

    refs: List[ImageRef]
    label: str


@dataclass
class ImageArrays:
    """Batches of images in memory, how to name them, and how many images there are (None: unknown)."""

    batches: Iterable[ArrayLike]
    label: str
    total: Optional[int]


def ref_name(ref: ImageRef) -> str:
    return f"{ref[0]}:{ref[1]}" if isinstance(ref, tuple) else str(ref)


def is_image_file(path: Union[str, os.PathLike]) -> bool:
    """By extension, case-insensitively (pytorch-fid misses ``.JPG`` on Linux)."""
    return Path(path).suffix[1:].lower() in IMAGE_EXTENSIONS


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def is_zip(path: Path) -> bool:
    return path.name.lower().endswith(".zip")


def _no_images(what: Path, hint: str = "") -> FidfastError:
    return FidfastError(f"{what}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}){hint}")


def name_order(name: Union[str, os.PathLike]) -> str:
    """The sort key of every input's images: the name as a '/'-separated string, so a folder, an archive
    and a file list of the same images read them in the same order (and give the same bits)."""
    return PurePath(name).as_posix()


def _scan(folder: str, prefix: str, recursive: bool, found: List[Tuple[str, str]], seen: Set[Tuple[int, int]]
          ) -> None:
    """Append (name-order key, path) of the image files under ``folder``. ``os.scandir`` gives each entry's
    type with its name, so a folder of 100k images costs no stat per file (pathlib's glob: ~25× slower)."""
    with os.scandir(folder) as entries:
        for entry in entries:
            if recursive and entry.is_dir():  # links to folders too, as glob("**/*") follows them
                st = entry.stat()
                if (st.st_dev, st.st_ino) not in seen:  # a link back up the tree is followed once
                    seen.add((st.st_dev, st.st_ino))
                    _scan(entry.path, f"{prefix}{entry.name}/", True, found, seen)
            elif is_image_file(entry.name) and (entry.is_file() or (entry.is_symlink() and
                                                                    not os.path.exists(entry.path))):
                # A broken link is listed (and then reported as unreadable), not silently left out.
                found.append((prefix + entry.name, entry.path))


def list_image_files(path: Union[str, os.PathLike], recursive: bool = False) -> List[Path]:
    """Image files in a folder (top level unless ``recursive``), in name order."""
    root = Path(path)
    found: List[Tuple[str, str]] = []
    _scan(os.fspath(root), "", recursive, found, set())
    if not found:
        hint = " in this folder"
        if not recursive:
            _scan(os.fspath(root), "", True, found, set())
            if found:
                hint += "; its subfolders have some: add --recursive"
        raise _no_images(root, hint)
    found.sort(key=lambda item: item[0])  # the relative path with '/': name_order's key
    return [Path(p) for _, p in found]


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _list_lines(data: bytes, path: Path) -> List[str]:
    """A file list's lines as the OS's file names: bytes as they are (any encoding, as names are stored),
    or text in the encoding its byte-order mark names (Notepad's UTF-8 with BOM, PowerShell's UTF-16);
    CRLF or LF. NUL bytes without a mark: UTF-16 or UTF-32 that cannot be read safely, refused."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
                return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
            except UnicodeDecodeError as exc:
                raise FidfastError(f"{path}: file list starts with a {encoding.upper()} byte-order mark but is not "
                                   f"valid {encoding.upper()} ({exc.reason} at byte {exc.start})") from None
    if b"\0" in data:
        kind = "UTF-16" if data[1::2].count(0) > len(data) // 4 or data[0::2].count(0) > len(data) // 4 else "binary"
        raise FidfastError(f"{path}: file list holds NUL bytes ({kind} without a byte-order mark?); save it as "
                           "UTF-8, one image path a line")
    return [os.fsdecode(line) for line in data.splitlines()]


def read_file_list(path: Union[str, os.PathLike]) -> List[Path]:
    """Image paths from a text file, one per line (relative to the list's folder; '#' lines skipped), in
    name order. Lines are file names as the OS stores them, in any encoding."""
    path = Path(path)
    try:
        lines = _list_lines(path.read_bytes(), path)
    except OSError as exc:
        raise FidfastError(f"{path}: cannot read file list ({exc})") from None
    files = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        file = Path(os.path.normpath(path.parent / line))  # absolute lines stay as they are
        if not file.is_file():
            raise FidfastError(f"{path}:{number}: no such image file: {line}")
        files.append(file)
    if not files:
        raise FidfastError(f"{path}: the file list names no images")
    return sorted(files, key=name_order)


def list_archive(path: Union[str, os.PathLike]) -> List[Tuple[Path, str]]:
    """Image members (any depth) of a zip or tar archive, sorted by name."""
    path = Path(path)
    try:
        if is_zip(path):
            with zipfile.ZipFile(path) as z:
                names = [i.filename for i in z.infolist() if not i.is_dir()]
        else:
            with tarfile.open(path) as t:
                names = [m.name for m in t.getmembers() if m.isfile() or m.islnk() or m.issym()]  # links: read
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise FidfastError(f"{path}: cannot read archive ({exc.__class__.__name__}: {exc})") from None
    members = sorted((n for n in names if is_image_file(n) and not Path(n).name.startswith("._")), key=name_order)
    if not members:
        raise _no_images(path, " in this archive")
    return [(path, m) for m in members]


# RuntimeError: an encrypted member; NotImplementedError: an unknown compression; KeyError: a member gone
_NPZ_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, NotImplementedError,
                    RuntimeError)


@contextlib.contextmanager
def _reading_npz(path: Path) -> Iterator[None]:
    """Turns what a damaged zip or .npy raises into one FidfastError naming the file."""
    try:
        yield
    except FidfastError:
        raise
    except _NPZ_READ_ERRORS as exc:
        raise FidfastError(f"{path}: not a readable .npz ({exc.__class__.__name__}: {exc})") from None


def npz_arrays(path: Union[str, os.PathLike]) -> List[str]:
    """The names of an .npz's arrays (its ``.npy`` members), from the zip's directory: nothing is loaded."""
    path = Path(path)
    with _reading_npz(path), zipfile.ZipFile(path) as z:
        members = z.namelist()
    arrays = [m[:-len(".npy")] for m in members if m.endswith(".npy")]
    if not arrays:
        shown = ", ".join(members[:3]) + (", ..." if len(members) > 3 else "") or "nothing"
        raise FidfastError(f"{path}: a zip archive, not an .npz (no .npy arrays; it holds {shown})")
    return arrays


def _npy_header(stream: IO[bytes], path: Path) -> Tuple[Tuple[int, ...], bool, np.dtype]:
    """(shape, Fortran order, dtype) from an .npy header; the dtype is parsed, never unpickled."""
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(stream)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(stream)
    raise FidfastError(f"{path}: '{NPZ_IMAGES}' is in .npy format {version[0]}.{version[1]}, which uint8 images "
                       "are never saved in (expected 1.0 or 2.0)")


def _images_shape(path: Path, shape: Tuple[int, ...], fortran_order: bool, dtype: np.dtype
                  ) -> Tuple[int, int, int, int]:
    """N×H×W×C of an .npz's images (C = 1 for grey N×H×W), or one FidfastError saying what was found."""
    expected = "expected uint8 images N×H×W×3, N×H×W×1 or N×H×W (grey)"
    if dtype.hasobject:
        raise FidfastError(f"{path}: '{NPZ_IMAGES}' is an object array, which cannot be read without unpickling "
                           f"(refused); {expected}")
    if dtype != np.uint8 or len(shape) not in (3, 4) or (len(shape) == 4 and shape[3] not in (1, 3)):
        raise FidfastError(f"{path}: '{NPZ_IMAGES}' is {dtype} of shape {shape}; {expected}")
    if 0 in shape:
        raise FidfastError(f"{path}: '{NPZ_IMAGES}' of shape {shape} holds no images")
    if fortran_order:
        raise FidfastError(f"{path}: '{NPZ_IMAGES}' is saved in Fortran order, which cannot be read a batch of "
                           "images at a time; save it in C order: np.savez(path, np.ascontiguousarray(images))")
    return (*shape, 1) if len(shape) == 3 else shape


@contextlib.contextmanager
def _npz_images_stream(path: Path) -> Iterator[Tuple[IO[bytes], Tuple[int, int, int, int]]]:
    """``arr_0``'s stream, at its first image, and its images' N×H×W×C; header and size checked against
    the zip's directory before any image is read."""
    with contextlib.ExitStack() as stack:
        with _reading_npz(path):
            z = stack.enter_context(zipfile.ZipFile(path))
            member = z.getinfo(NPZ_IMAGES + ".npy")
            stream = stack.enter_context(z.open(member))
            shape = _images_shape(path, *_npy_header(stream, path))
            data = member.file_size - stream.tell()
        image_bytes = math.prod(shape[1:])
        if data != shape[0] * image_bytes:
            raise FidfastError(f"{path}: '{NPZ_IMAGES}' holds {data} bytes of images, its header says "
                               f"{'×'.join(map(str, shape))} = {shape[0] * image_bytes} (truncated or damaged)")
        yield stream, shape


@dataclass(frozen=True)
class NpzImages:
    """The images of an .npz's ``arr_0``, images ``start`` to ``stop`` of its N×H×W×C (a grey N×H×W file
    has C = 1), read from the file a batch at a time: uint8 only, never unpickled, never all in memory.
    Every pass reopens the file (:meth:`iter_batches`), so it can be read any number of times."""

    path: Path
    shape: Tuple[int, int, int, int]
    start: int
    stop: int

    @classmethod
    def open(cls, path: Union[str, os.PathLike]) -> "NpzImages":
        """All the images of ``path``; its header is checked here, before any image is read."""
        path = Path(path)
        arrays = npz_arrays(path)
        if NPZ_IMAGES not in arrays:
            raise FidfastError(f"{path}: no images ('{NPZ_IMAGES}') in this .npz; its arrays: {sorted(arrays)}")
        with _npz_images_stream(path) as (_, shape):
            return cls(path, shape, 0, shape[0])

    def __len__(self) -> int:
        return self.stop - self.start

    def block(self, start: int, stop: int) -> "NpzImages":
        """Images [start, stop) of these: a rank's contiguous share under torch.distributed."""
        if not 0 <= start <= stop <= len(self):
            raise ValueError(f"block [{start}, {stop}) is not within {len(self)} images")
        return dataclasses.replace(self, start=self.start + start, stop=self.start + stop)

    def iter_batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """The images in order, ``batch_size`` at a time (the last batch may be smaller), each a new uint8
        n×H×W×C array; reading holds the batch it fills plus about ``NPZ_READ_BYTES``. The zip's CRC-32 is
        checked after the last image."""
        image_bytes = math.prod(self.shape[1:])
        with _npz_images_stream(self.path) as (stream, shape):
            if shape != self.shape:
                raise FidfastError(f"{self.path}: its images changed while being read (now {shape}, were "
                                   f"{self.shape})")
            with _reading_npz(self.path):
                stream.seek(self.start * image_bytes, io.SEEK_CUR)
            for first in range(self.start, self.stop, batch_size):
                batch = np.empty((min(batch_size, self.stop - first), *shape[1:]), np.uint8)
                view, done = memoryview(batch.reshape(-1)), 0
                with _reading_npz(self.path):
                    while done < len(view):
                        got = stream.readinto(view[done:done + NPZ_READ_BYTES])
                        if not got:
                            raise FidfastError(f"{self.path}: '{NPZ_IMAGES}' ends within image "
                                               f"{first + done // image_bytes} of {shape[0]} (truncated)")
                        done += got
                yield batch
            if self.stop == shape[0]:
                with _reading_npz(self.path):
                    stream.read(1)  # at the end of the member: zipfile checks its CRC-32

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.iter_batches(max(1, NPZ_ITER_BYTES // math.prod(self.shape[1:])))


def open_npz_images(path: Union[str, os.PathLike]) -> ImageArrays:
    """The images (``arr_0``) of an .npz as an input, also of a file that has statistics too: an ADM reference
    batch gives its statistics for FID (``open_source``) and its images for precision and recall (this).
    Read a batch at a time when the statistics are computed; ``total`` is N from the header."""
    images = NpzImages.open(path)
    return ImageArrays(images, str(images.path), len(images))


def open_path(path: Path, recursive: bool) -> Union[FeatureStats, ImageFiles, ImageArrays]:
    if not path.exists():
        raise FidfastError(f"{path}: no such file or folder")
    if path.is_dir():
        return ImageFiles(list_image_files(path, recursive), str(path))
    name = path.name.lower()
    if name.endswith(".npz"):
        arrays = npz_arrays(path)
        if {"mu", "sigma"} <= set(arrays):
            return FeatureStats.load(path)
        if NPZ_IMAGES in arrays:
            return open_npz_images(path)
        raise FidfastError(f"{path}: an .npz needs statistics ('mu' and 'sigma') or images ('{NPZ_IMAGES}'); its "
                           f"arrays: {sorted(arrays)}")
    if is_archive(path):
        return ImageFiles(list_archive(path), str(path))
    if name.endswith(FILE_LIST_SUFFIXES):
        return ImageFiles(read_file_list(path), str(path))
    raise FidfastError(f"{path}: expected a folder of images, an .npz (statistics or images), an archive "
                       f"({', '.join(ARCHIVE_SUFFIXES)}) or a file list ({', '.join(FILE_LIST_SUFFIXES)})")


def _is_pathlike(x) -> bool:
    return isinstance(x, (str, os.PathLike))


def open_source(source: Source, recursive: bool = False) -> Union[FeatureStats, ImageFiles, ImageArrays]:
    """Resolve any supported input to statistics, image files, or in-memory image batches."""
    if isinstance(source, (FeatureStats, ImageFiles, ImageArrays)):  # already resolved
        return source
    if _is_pathlike(source):
        return open_path(Path(source), recursive)
    if isinstance(source, (np.ndarray, torch.Tensor)):
        check_image_batch(source)
        return ImageArrays([source], f"{type(source).__name__} {tuple(source.shape)}", int(source.shape[0]))
    if isinstance(source, (list, tuple)) and source and all(_is_pathlike(p) for p in source):
        files = sorted((Path(p) for p in source), key=name_order)
        for p in files:
            if not p.is_file():
                raise FidfastError(f"{p}: no such image file")
        return ImageFiles(files, f"{len(files)} files")
    if isinstance(source, (list, tuple)) and not source:
        raise FidfastError("the input is an empty list")
    if isinstance(source, (list, tuple)) and all(_is_image(x) for x in source):  # one batch, sizes may differ
        return ImageArrays([list(source)], f"{len(source)} images", len(source))
    if isinstance(source, Iterable) and not isinstance(source, (bytes, dict)):
        return ImageArrays(source, "image batches", None)
    raise FidfastError(f"cannot read images from a {type(source).__name__}")


def check_image_batch(x: ArrayLike) -> None:
    """Raise :class:`FidfastError` unless x is a uint8 N×H×W×3 / N×3×H×W or float [0, 1] N×3×H×W batch."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise FidfastError(f"an image batch must be a numpy array or torch tensor, got {type(x).__name__}")
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise FidfastError(f"an image batch must be 4-D (N×H×W×3 or N×3×H×W), got shape {shape}")
    if _is_uint8(x):
        if shape[1] not in (1, 3) and shape[3] not in (1, 3):
            raise FidfastError(f"uint8 image batch of shape {shape}: expected N×H×W×3 or N×3×H×W")
        return
    if not _is_float(x):
        raise FidfastError(f"image batch has dtype {x.dtype}: expected uint8 (0..255) or float (0..1)")
    if shape[1] != 3:
        raise FidfastError(f"float image batch of shape {shape}: expected N×3×H×W in [0, 1]")
    _check_unit_range(x, "float image batch")


def _is_image(x) -> bool:
    return isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim in (2, 3)


def check_image(x: ArrayLike, i: int) -> None:
    """Raise :class:`FidfastError` unless image ``i`` of a list is uint8 H×W×3 / H×W×1 / H×W or float
    3×H×W in [0, 1]."""
    shape = tuple(x.shape)
    if _is_uint8(x):
        if len(shape) == 3 and shape[2] not in (1, 3):
            raise FidfastError(f"image {i} of the list: uint8 of shape {shape}, expected H×W×3, H×W×1 or H×W")
        return
    if not _is_float(x) or len(shape) != 3 or shape[0] != 3:
        raise FidfastError(f"image {i} of the list: {x.dtype} of shape {shape}, expected uint8 H×W×3 (0..255) "
                           "or float 3×H×W (0..1)")
    _check_unit_range(x, f"image {i} of the list")


def _check_unit_range(x: ArrayLike, what: str) -> None:
    t = torch.as_tensor(x)
    if not t.numel():
        return
    lo, hi = (float(v) for v in torch.aminmax(t))  # one pass (one GPU sync); NaN propagates to both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise FidfastError(f"{what} holds NaN or inf")
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise FidfastError(f"{what} ranges over [{lo:.3g}, {hi:.3g}]; expected [0, 1] (pass uint8 for 0..255 images)")


def _is_uint8(x: ArrayLike) -> bool:
    return x.dtype == torch.uint8 if isinstance(x, torch.Tensor) else x.dtype == np.uint8


def _is_float(x: ArrayLike) -> bool:
    return x.is_floating_point() if isinstance(x, torch.Tensor) else np.issubdtype(x.dtype, np.floating)


def as_nhwc_uint8(x: ArrayLike) -> torch.Tensor:
    """A uint8 batch as an N×H×W×C tensor (C = 1 or 3), on the device it came on."""
    t = torch.as_tensor(x)
    if t.shape[1] in (1, 3):  # N×C×H×W; N×3×H×3 is ambiguous: channels first, as torch
        return t.permute(0, 2, 3, 1)
    return t


def iter_array_batches(batches: Iterable[Union[ArrayLike, List[ArrayLike]]], batch_size: int
                       ) -> Iterator[Union[torch.Tensor, List[torch.Tensor]]]:
    """Each input batch, checked, in chunks of at most ``batch_size`` images: a 4-D tensor, or, for a list
    of uint8 images (whose sizes may differ), a list of H×W(×C) tensors. An .npz is read ``batch_size``
    images at a time: the batches of the same images in memory, so the same bits."""
    if isinstance(batches, NpzImages):  # N×H×W×C; 1 or 3 rows tall: single images, never read channels-first
        batches = (list(b) if b.shape[1] in (1, 3) else b for b in batches.iter_batches(batch_size))
    for x in batches:
        if isinstance(x, list):
            for i, img in enumerate(x):
                check_image(img, i)
            images = [torch.as_tensor(img) for img in x]
            for i in range(0, len(images), batch_size):
                chunk = images[i:i + batch_size]
                if all(img.dtype == torch.uint8 for img in chunk):
                    yield chunk
                elif len({(img.dtype, img.shape) for img in chunk}) == 1:
                    yield torch.stack(chunk)
                else:
                    raise FidfastError("a list of float images must all have one size and dtype (uint8 images "
                                       "may differ in size)")
            continue
        check_image_batch(x)
        t = torch.as_tensor(x)
        for i in range(0, t.shape[0], batch_size):
            yield t[i:i + batch_size]
