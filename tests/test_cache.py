"""The statistics cache: keyed by content (every image's path as the OS's bytes, size, mtime, and what
changes the numbers), its entries' warnings repeated on a hit."""
from __future__ import annotations

import os
import warnings

import numpy as np

import fidfast
from fidfast.files import cache_dir

from .helpers import rel, write_images

FAST = dict(dims=64, device="cpu", num_workers=0, cache=False, progress=False)


def test_statistics_cache_is_keyed_by_content(tmp_path, rng):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    stats_dir = cache_dir() / "stats"
    before = set(stats_dir.glob("*.npz")) if stats_dir.exists() else set()
    kwargs = {**FAST, "cache": True}
    first = fidfast.compute_stats(tmp_path / "d", **kwargs)
    entries = set(stats_dir.glob("*.npz")) - before
    assert len(entries) == 1
    again = fidfast.compute_stats(tmp_path / "d", **kwargs)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert again.n == 3
    # Changing one image changes the key: a new entry, new numbers.
    write_images(tmp_path / "d", rng, [(30, 30)])
    changed = fidfast.compute_stats(tmp_path / "d", **kwargs)
    assert len(set(stats_dir.glob("*.npz")) - before) == 2
    assert rel(changed.sigma, first.sigma) > 1e-6
    # Another precision or dims is another entry too; cache=False writes nothing.
    fidfast.compute_stats(tmp_path / "d", **{**kwargs, "dims": 192})
    assert len(set(stats_dir.glob("*.npz")) - before) == 3
    fidfast.compute_stats(tmp_path / "d", **{**kwargs, "dims": 192, "cache": False, "batch_size": 2})
    assert len(set(stats_dir.glob("*.npz")) - before) == 3


def test_statistics_from_the_cache_repeat_their_warnings(tmp_path, rng):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    (tmp_path / "d" / "zero.png").write_bytes(b"")
    for _ in range(2):  # computed, then from the cache
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = fidfast.compute_stats(tmp_path / "d", skip_bad_images=True, **{**FAST, "cache": True})
        messages = " ".join(str(w.message) for w in caught)
        assert stats.n == 3 and "skipped 1 unreadable" in messages and "fewer than dims=64" in messages


def test_names_that_are_not_utf8_go_through_the_pipeline_and_the_cache(tmp_path, rng):
    folder = tmp_path / "d"
    write_images(folder, rng, [(30, 30)] * 3)
    os.rename(folder / "img_0001.png", os.fsencode(folder) + b"/\xff\xfe.png")
    first = fidfast.compute_stats(folder, **{**FAST, "cache": True})
    again = fidfast.compute_stats(folder, **{**FAST, "cache": True})  # from the cache
    assert first.n == again.n == 3 and np.array_equal(first.sigma, again.sigma)
