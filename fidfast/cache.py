"""A statistics cache for image inputs, keyed by content, so re-scoring against a reference is free.

The key hashes everything that changes the numbers: each image's path (as the OS's bytes), size and
modification time, the weights' digest, dims, protocol, precision, device type and the preprocessing
version.
Entries are ``$XDG_CACHE_HOME/fidfast/stats/<key>.npz``, written atomically (write, then rename), so
concurrent runs at worst compute the same entry twice. Off with ``--no-cache`` / ``cache=False``.

The cache is bounded: when its entries exceed ``FIDFAST_CACHE_SIZE`` (bytes, or with a K/M/G/T suffix;
default 4G, about 120 entries at dims 2048; ``0`` turns the cache off), the least recently used go.
``fidfast --cache-info`` and ``--clear-cache`` show and empty it (:func:`info`, :func:`clear`).
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from fidfast.errors import FidfastError
from fidfast.files import cache_dir, write_cache
from fidfast.settings import Settings
from fidfast.sources import ImageRef
from fidfast.stats import FeatureStats

# Bump when preprocessing changes the features (decode, resize or normalisation).
PREPROCESS_VERSION = 1
DEFAULT_SIZE = "4G"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def size_limit() -> int:
    """The cache's bound in bytes, from ``FIDFAST_CACHE_SIZE`` (0: no cache)."""
    text = os.environ.get("FIDFAST_CACHE_SIZE", DEFAULT_SIZE).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", text, re.IGNORECASE)
    if not match:
        raise FidfastError(f"FIDFAST_CACHE_SIZE={text!r}: expected a size in bytes such as 4G, 500M or 0 (off)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def stats_dir() -> Path:
    return cache_dir() / "stats"


def _stat_line(path: Path, folders: Dict[str, str]) -> bytes:
    """The file's real path, size and mtime. A link is resolved; a plain file is named by its folder's real
    path (resolved once per folder, in ``folders``) and its own name: one lstat per file for 100k files."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except FileNotFoundError:  # a broken link: keyed by the link itself (decoding reports it)
            pass
        real = os.path.realpath(path)
    else:
        head, name = os.path.split(os.path.abspath(path))
        if head not in folders:
            folders[head] = os.path.realpath(head)
        real = os.path.join(folders[head], name)
    return os.fsencode(real) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode()


def stats_key(refs: Sequence[ImageRef], settings: Settings) -> str:
    """The cache key of the statistics of ``refs`` computed with ``settings``."""
    h = hashlib.sha256(f"v{PREPROCESS_VERSION}|{settings.dims}|{settings.protocol}|{settings.precision}|"
                       f"{settings.device.type}|{settings.skip_bad_images}|{settings.network}|"
                       f"{'aot' if settings.compile else 'ts'}\n".encode())
    archives_seen = set()
    folders: Dict[str, str] = {}
    for ref in refs:
        if isinstance(ref, tuple):
            archive, member = ref
            if archive not in archives_seen:
                archives_seen.add(archive)
                h.update(_stat_line(archive, folders))
            h.update(member.encode("utf-8", "surrogateescape") + b"\n")
        else:
            h.update(_stat_line(ref, folders))
    return h.hexdigest()


def stats_path(key: str) -> Path:
    return stats_dir() / f"{key}.npz"


def load(key: str) -> Optional[FeatureStats]:
    """The entry, or None; a hit counts as a use (least recently used entries go first)."""
    path = stats_path(key)
    if not path.is_file():
        return None
    try:
        stats = FeatureStats.load(path)
    except FidfastError:  # a damaged entry is recomputed, not fatal
        return None
    try:
        os.utime(path)
    except OSError:
        pass
    return stats


def store(key: str, stats: FeatureStats) -> None:
    """Write the entry, then remove the least recently used ones beyond :func:`size_limit`."""
    if write_cache(stats_path(key), stats.npz_bytes()):
        try:
            _evict(size_limit(), keep=stats_path(key))
        except OSError:  # another run removing entries meanwhile, a read-only folder: not this run's problem
            pass


def entries() -> List[Path]:
    """The entries, least recently used first."""
    found = []
    for path in stats_dir().glob("*.npz"):
        try:
            found.append((path.stat().st_mtime_ns, path))
        except FileNotFoundError:  # removed meanwhile by another run
            continue
    return [path for _, path in sorted(found)]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _stale_temporaries(age: float) -> List[Path]:
    """Partial entries that runs killed while writing left behind, older than ``age`` seconds."""
    now = time.time()
    found = []
    for path in stats_dir().glob("*.tmp"):
        try:
            if now - path.stat().st_mtime > age:
                found.append(path)
        except FileNotFoundError:
            continue
    return found


def _evict(limit: int, keep: Optional[Path] = None) -> None:
    for leftover in _stale_temporaries(age=24 * 3600):
        leftover.unlink(missing_ok=True)
    paths = entries()
    total = sum(_size(p) for p in paths)
    for path in paths:  # oldest first; the entry just written goes last, and only if it alone is too big
        if total <= limit:
            return
        if path == keep and len(paths) > 1:
            continue
        total -= _size(path)
        path.unlink(missing_ok=True)
    if keep is not None and total > limit:
        keep.unlink(missing_ok=True)


def info() -> dict:
    """Where the cache is, how many entries and bytes it holds, and its bound."""
    paths = entries()
    return {"path": str(stats_dir()), "entries": len(paths), "bytes": sum(_size(p) for p in paths),
            "limit_bytes": size_limit()}


def clear() -> dict:
    """Remove every entry; returns what was removed (entries, bytes)."""
    removed = info()
    for path in entries() + _stale_temporaries(age=0):
        path.unlink(missing_ok=True)
    return {"path": removed["path"], "entries": removed["entries"], "bytes": removed["bytes"]}
