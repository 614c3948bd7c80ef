"""A statistics cache for image inputs, keyed by content, so re-scoring against a reference is free.

The key hashes everything that changes the numbers: each image's path (as the OS's bytes), size and
modification time, the weights' digest, dims, precision, device type and the preprocessing version.
Entries are ``$XDG_CACHE_HOME/fidfast/stats/<key>.npz``, written atomically (write, then rename), so
concurrent runs at worst compute the same entry twice. Off with ``--no-cache`` / ``cache=False``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

from fidfast.errors import FidfastError
from fidfast.files import cache_dir
from fidfast.settings import Settings
from fidfast.sources import ImageRef
from fidfast.stats import FeatureStats

# Bump when preprocessing changes the features (decode, resize or normalisation).
PREPROCESS_VERSION = 1


def _stat_line(path: Path) -> bytes:
    try:
        st = os.stat(path)
    except FileNotFoundError:  # a broken link: keyed by the link itself (decoding reports it)
        st = os.lstat(path)
    return os.fsencode(path.resolve()) + f"|{st.st_size}|{st.st_mtime_ns}\n".encode()


def stats_key(refs: Sequence[ImageRef], settings: Settings) -> str:
    """The cache key of the statistics of ``refs`` computed with ``settings``."""
    h = hashlib.sha256(f"v{PREPROCESS_VERSION}|{settings.dims}|{settings.precision}|{settings.device.type}|"
                       f"{settings.skip_bad_images}|{settings.inception_weights.digest}\n".encode())
    archives_seen = set()
    for ref in refs:
        if isinstance(ref, tuple):
            archive, member = ref
            if archive not in archives_seen:
                archives_seen.add(archive)
                h.update(_stat_line(archive))
            h.update(member.encode("utf-8", "surrogateescape") + b"\n")
        else:
            h.update(_stat_line(ref))
    return h.hexdigest()


def stats_path(key: str) -> Path:
    return cache_dir() / "stats" / f"{key}.npz"


def load(key: str) -> Optional[FeatureStats]:
    path = stats_path(key)
    if not path.is_file():
        return None
    try:
        return FeatureStats.load(path)
    except FidfastError:  # a damaged entry is recomputed, not fatal
        return None


def store(key: str, stats: FeatureStats) -> None:
    try:
        stats.save(stats_path(key))
    except OSError:  # a read-only cache must not fail the run
        pass
