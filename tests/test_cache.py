"""The statistics cache: keyed by content (every image's path as the OS's bytes, size, mtime, and what
changes the numbers), its entries' warnings repeated on a hit."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import fidfast
from fidfast import FidfastError
from fidfast.files import cache_dir

from .helpers import FAST, rel, write_images


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
            fidfast.calculate_fid(tmp_path / "d", tmp_path / "d", skip_bad_images=True, **{**FAST, "cache": True})
        messages = [str(w.message) for w in caught]
        assert sum("skipped 1 unreadable" in m for m in messages) == 2  # each side, computed or cached
        assert sum("3 images, fewer than dims=64" in m for m in messages) == 2


def test_names_that_are_not_utf8_go_through_the_pipeline_and_the_cache(tmp_path, rng):
    folder = tmp_path / "d"
    write_images(folder, rng, [(30, 30)] * 3)
    os.rename(folder / "img_0001.png", os.fsencode(folder) + b"/\xff\xfe.png")
    first = fidfast.compute_stats(folder, **{**FAST, "cache": True})
    again = fidfast.compute_stats(folder, **{**FAST, "cache": True})  # from the cache
    assert first.n == again.n == 3 and np.array_equal(first.sigma, again.sigma)


def test_the_cache_is_bounded_least_recently_used_out(tmp_path, rng, monkeypatch):
    from fidfast import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folders = [tmp_path / name for name in "abc"]
    for folder in folders:
        write_images(folder, rng, [(30, 30)] * 3)
    kwargs = {**FAST, "cache": True}
    fidfast.compute_stats(folders[0], **kwargs)
    entry = cache.info()["bytes"]  # one entry at dims 64
    monkeypatch.setenv("FIDFAST_CACHE_SIZE", str(2 * entry))  # room for two
    fidfast.compute_stats(folders[1], **kwargs)
    os.utime(cache.entries()[0], ns=(1, 1))  # a's entry: long unused
    fidfast.compute_stats(folders[1], **kwargs)  # a hit: b's entry is now the most recently used
    first = {p.name for p in cache.entries()}
    fidfast.compute_stats(folders[2], **kwargs)  # a third entry: the least recently used (a's) goes
    left = {p.name for p in cache.entries()}
    assert len(first) == 2 and len(left) == 2 and len(left - first) == 1
    assert cache.info()["bytes"] <= 2 * entry
    monkeypatch.setenv("FIDFAST_CACHE_SIZE", "0")  # off: neither read nor written
    fidfast.compute_stats(folders[0], **kwargs)
    assert {p.name for p in cache.entries()} == left
    assert cache.clear()["entries"] == 2 and cache.info()["entries"] == 0


@pytest.mark.parametrize("value", ["lots", "-1", "4X"])
def test_a_bad_cache_size_is_one_clear_error(value, monkeypatch):
    from fidfast import cache

    monkeypatch.setenv("FIDFAST_CACHE_SIZE", value)
    with pytest.raises(FidfastError, match="FIDFAST_CACHE_SIZE"):
        cache.size_limit()


def test_cache_sizes_take_units(monkeypatch):
    from fidfast import cache

    for value, expected in (("0", 0), ("123", 123), ("1.5K", 1536), ("2G", 2 * 2**30), ("500MiB", 500 * 2**20)):
        monkeypatch.setenv("FIDFAST_CACHE_SIZE", value)
        assert cache.size_limit() == expected, value
