"""Streaming statistics: float64 accuracy against np.cov, exact merging, and the .npz files."""
import os
import stat

import numpy as np
import pytest
import torch

from fidfast import FeatureStats, FidfastError


def rel(a, b):
    assert np.isfinite(a).all()
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def stream(x, batch):
    stats = FeatureStats(x.shape[1])
    for i in range(0, len(x), batch):
        stats.update(torch.from_numpy(x[i:i + batch]))
    return stats


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_streaming_matches_np_cov(rng, batch):
    x = np.abs(rng.normal(size=(203, 40))).astype(np.float32)
    stats = stream(x, batch)
    ref = x.astype(np.float64)
    assert stats.n == 203
    assert rel(stats.mu, ref.mean(0)) < 1e-13
    assert rel(stats.sigma, np.cov(ref, rowvar=False)) < 1e-12


def test_large_common_mean_keeps_precision(rng):
    # mean/std ≥ 1e3: a naive E[xxᵀ] − μμᵀ loses ~6 digits here.
    x = (rng.normal(size=(500, 24)) + 5e3).astype(np.float32)
    stats = stream(x, 50)
    assert rel(stats.sigma, np.cov(x.astype(np.float64), rowvar=False)) < 1e-12


def test_merge_is_exact_in_any_order(rng):
    x = np.abs(rng.normal(size=(301, 16))).astype(np.float32) * 3
    cuts = [0, 10, 11, 150, 301]
    parts = [stream(x[a:b], 32) for a, b in zip(cuts, cuts[1:])]
    ref = np.cov(x.astype(np.float64), rowvar=False)
    for order in ([0, 1, 2, 3], [3, 1, 0, 2], [2, 3, 1, 0]):
        merged = FeatureStats.merge([parts[i] for i in order])
        assert merged.n == 301
        assert rel(merged.sigma, ref) < 1e-12
        assert rel(merged.mu, x.astype(np.float64).mean(0)) < 1e-13


def test_save_load_roundtrip_and_pytorch_fid_reads_it(rng, tmp_path):
    x = rng.normal(size=(50, 8)).astype(np.float32)
    stats = stream(x, 16)
    stats.save(tmp_path / "s.npz")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    assert loaded.n == 50
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_allclose(loaded.sigma, stats.sigma, rtol=1e-15)
    with np.load(tmp_path / "s.npz") as f:  # what pytorch-fid's compute_statistics_of_path reads
        np.testing.assert_array_equal(f["mu"], stats.mu)
    # Loaded statistics still merge exactly.
    more = stream(x[:20] * 2, 8)
    merged = FeatureStats.merge([loaded, more])
    both = np.concatenate([x, x[:20] * 2]).astype(np.float64)
    assert rel(merged.sigma, np.cov(both, rowvar=False)) < 1e-12


def test_pytorch_fid_file_has_no_count_and_cannot_merge(rng, tmp_path):
    np.savez_compressed(tmp_path / "p.npz", mu=rng.normal(size=4), sigma=np.eye(4))
    loaded = FeatureStats.load(tmp_path / "p.npz")
    assert loaded.n is None
    np.testing.assert_array_equal(loaded.sigma, np.eye(4))
    with pytest.raises(FidfastError, match="count"):
        FeatureStats.merge([loaded, loaded])


@pytest.mark.parametrize("content", ["no_sigma", "object", "nan", "shape", "garbage", "n_array", "n_one"])
def test_bad_statistics_files(rng, tmp_path, content):
    path = tmp_path / "bad.npz"
    if content == "no_sigma":
        np.savez(path, mu=rng.normal(size=4))
    elif content == "object":
        np.savez(path, mu=np.array([{"a": 1}], dtype=object), sigma=np.eye(1))
    elif content == "nan":
        np.savez(path, mu=np.array([np.nan, 1.0]), sigma=np.eye(2))
    elif content == "shape":
        np.savez(path, mu=rng.normal(size=3), sigma=np.eye(4))
    elif content == "n_array":
        np.savez(path, mu=rng.normal(size=2), sigma=np.eye(2), n=np.array([1, 2]))
    elif content == "n_one":
        np.savez(path, mu=rng.normal(size=2), sigma=np.eye(2), n=np.int64(1))
    else:
        path.write_bytes(b"not a zip at all")
    with pytest.raises(FidfastError, match="bad.npz"):
        FeatureStats.load(path)


def test_saved_file_is_named_as_np_savez_names_it_and_readable_by_others(rng, tmp_path):
    x = rng.normal(size=(10, 3))
    old = os.umask(0o022)
    try:
        written = stream(x, 4).save(tmp_path / "ref")
    finally:
        os.umask(old)
    assert written == tmp_path / "ref.npz"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644  # as np.savez under this umask, not mkstemp's 0600
    assert FeatureStats.load(written).n == 10
