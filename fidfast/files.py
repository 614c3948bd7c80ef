"""Files fidfast writes: its cache folder, and writes that a reader sees whole or not at all.

One atomic write (a temporary file in the same folder, then a rename) serves every file fidfast
writes: converted weights and the compiled network (with a SHA-256 sidecar checked on every use),
statistics files and statistics cache entries (with the permissions a plain write would give). Whatever
fails part-way (a full disk, a quota, a read-only file system) leaves no partial file. Writers that
could abort the process from C++ (``torch.save``, ``torch.jit.save``) serialise to memory first
(:func:`serialized`); the file write is then plain Python, whose failure is an OSError.

A cache write that fails is not an error: :func:`write_cache` warns once per run and turns the cache's
writes off for the rest of it; the result is the same, later runs are slower.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Dict, Tuple, Union

from fidfast.errors import warn

log = logging.getLogger("fidfast")


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fidfast`` (default ``~/.cache/fidfast``), read from the environment at each call."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fidfast"


# Digests already computed in this process, by (path, size, mtime, algorithm): hashing the 91 MB
# weights file takes ~0.2 s, and a run asks for it more than once.
_digests: Dict[Tuple[str, int, int, str], str] = {}


def file_digest(path: os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (memoised per process while its size and mtime stay the same)."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, algorithm)
    if key not in _digests:
        h = hashlib.new(algorithm)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _digests[key] = h.hexdigest()
    return _digests[key]


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def serialized(save: Callable[[io.BytesIO], None]) -> bytes:
    """What ``save(file)`` writes (``torch.save``, ``torch.jit.save``), in memory."""
    buffer = io.BytesIO()
    save(buffer)
    return buffer.getvalue()


def atomic_write(dst: os.PathLike, write: Union[bytes, Callable[[str], None]], *, sidecar: bool = False,
                 exclusive: bool = False) -> Path:
    """``write(tmp_path)`` (or ``write``'s bytes), then rename the result to ``dst``: a reader sees the old
    file, the new one, or none, never a partial one; a failed write leaves nothing. The file gets the
    permissions a plain write would (mkstemp alone makes it private). With ``sidecar``, ``dst.sha256`` holds its SHA-256, renamed into place
    first, so that :func:`is_intact` rejects a half-replaced pair. With ``exclusive``, the last step
    never replaces a file: it raises FileExistsError when ``dst`` exists by then (another process may
    have written it since the caller looked). Returns ``dst`` as a Path."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name + ".", suffix=".tmp")
    os.close(fd)
    leftovers = [tmp, tmp + ".sha256"]
    try:
        if isinstance(write, bytes):
            with open(tmp, "wb") as f:
                f.write(write)
        else:
            write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        if sidecar:
            Path(tmp + ".sha256").write_text(file_digest(tmp))
            os.replace(tmp + ".sha256", _sidecar(dst))
        if exclusive:
            _link_exclusively(tmp, dst)
        else:
            os.replace(tmp, dst)
    finally:
        for leftover in leftovers:
            if os.path.exists(leftover):
                os.remove(leftover)
    return dst


def _link_exclusively(src: str, dst: Path) -> None:
    """Give ``src``'s file the name ``dst`` unless that name exists (FileExistsError): a hard link, which
    the file system creates atomically; where it has none, an exclusive create and a copy."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise
    except OSError:  # no hard links here (some network and FAT file systems)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
            shutil.copyfileobj(f, out)


def is_intact(path: Path) -> bool:
    """True when ``path`` and its SHA-256 sidecar (from ``atomic_write(sidecar=True)``) exist and agree."""
    sidecar = _sidecar(path)
    if not (path.is_file() and sidecar.is_file()):
        return False
    if file_digest(path) == sidecar.read_text().strip():
        return True
    log.warning("fidfast: ignoring corrupt cache file %s", path)
    return False


_cache_failure: Dict[str, str] = {}  # cache folder → why a write there failed in this process


def write_cache(dst: os.PathLike, data: Union[bytes, Callable[[str], None]], *, sidecar: bool = False) -> bool:
    """Write a file of fidfast's cache atomically; True if written. A failure (full disk, quota, read-only
    or missing permissions) warns once per run and turns the cache's writes off for the rest of it: the
    run's result does not depend on its cache."""
    root = str(cache_dir())
    if root in _cache_failure:
        return False
    try:
        atomic_write(dst, data, sidecar=sidecar)
        return True
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        _cache_failure[root] = reason
        warn(f"fidfast: cannot write to the cache in {root} ({reason}): the results are the same; later runs redo "
             "what it would have saved")
        return False


def cache_writable() -> bool:
    """False once a cache write failed in this run (:func:`write_cache`)."""
    return str(cache_dir()) not in _cache_failure
