"""A statistics cache for image inputs, keyed by content, so re-scoring against a reference is free.

The key hashes everything that changes the numbers: each image's name, size and modification time,
the weights file, dims, precision, device type and the preprocessing version. Entries are
``$XDG_CACHE_HOME/fidfast/stats/<key>.npz``, written atomically (write, then rename), so concurrent runs
at worst compute the same entry twice. Off with ``--no-cache`` / ``cache=False``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

from fidfast.decode import ImageRef
from fidfast.errors import FidfastError
from fidfast.stats import FeatureStats
from fidfast.weights import cache_dir, resolve_weights

# Bump when preprocessing changes the features (decode, resize or normalisation).
PREPROCESS_VERSION = 1


def _stat_line(path: Path) -> str:
    st = os.stat(path)
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def stats_key(refs: Sequence[ImageRef], dims: int, precision: str, device_type: str, weights: Optional[str],
              skip_bad_images: bool) -> str:
    h = hashlib.sha256()
    resolved = resolve_weights(weights)
    h.update(f"v{PREPROCESS_VERSION}|{dims}|{precision}|{device_type}|{skip_bad_images}|"
             f"{_stat_line(Path(resolved.path))}\n".encode())
    archives_seen = set()
    for ref in refs:
        if isinstance(ref, tuple):
            archive, member = ref
            if archive not in archives_seen:
                archives_seen.add(archive)
                h.update(_stat_line(archive).encode())
            h.update(f"{member}\n".encode())
        else:
            h.update(f"{_stat_line(ref)}\n".encode())
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
