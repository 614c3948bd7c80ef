"""Precision, recall, density and coverage: equal to prdc 0.2's compute_prdc on the same features (ties,
duplicates, blocks smaller than N, both dtypes), and one clear error for bad input."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch

import fidfast
from fidfast import FidfastError

from .helpers import cuda

prdc_package = pytest.importorskip("prdc", reason="needs prdc==0.2 (the reference)")

KEYS = ("precision", "recall", "density", "coverage")


def reference(real, fake, k):
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the counts
        out = prdc_package.compute_prdc(real, fake, nearest_k=k)
    return {key: float(out[key]) for key in KEYS}


def assert_equal_to_prdc(real, fake, k, **kwargs):
    got, ref = fidfast.prdc(real, fake, k, **kwargs), reference(real, fake, k)
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert np.isfinite(got[key]) and abs(got[key] - ref[key]) <= 1e-9, (key, got, ref)
    return got


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_equal_to_prdc_on_gaussian_features(rng, k, dtype):
    # A large common mean, as Inception features have; blocks of 37 rows, so every stage runs in blocks.
    real = (rng.normal(size=(211, 48)) + 5).astype(dtype)
    fake = (rng.normal(size=(173, 48)) * 1.2 + 5.2).astype(dtype)
    got = assert_equal_to_prdc(real, fake, k, block_rows=37)
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1


def test_equal_to_prdc_with_exact_ties_and_duplicates(rng):
    # Small integers: many distances are exactly equal to a radius, which prdc's strict < decides; whole
    # rows repeat (exact duplicates), fakes repeat reals, and some rows have k or more duplicates (radius 0).
    real = rng.integers(0, 3, size=(150, 6)).astype(np.float32)
    real[100:110] = real[0]
    fake = rng.integers(0, 3, size=(120, 6)).astype(np.float32)
    fake[:30] = real[:30]
    for k in (1, 2, 5):
        assert_equal_to_prdc(real, fake, k, block_rows=16)


def test_equal_to_prdc_with_fakes_on_the_real_balls_surfaces(rng):
    # Fakes at prdc's own radius from a real feature, give or take a few float32 ulps: the block product
    # cannot decide d < r for them, the exact recomputation must, as prdc does.
    real = (rng.normal(size=(120, 32)) + 3).astype(np.float32)
    radii = prdc_package.prdc.compute_nearest_neighbour_distances(real, 3)
    centres = rng.integers(0, 120, size=150)
    direction = rng.normal(size=(150, 32))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    scale = 1 + rng.integers(-3, 4, size=(150, 1)) * 6e-8
    fake = (real[centres] + direction * radii[centres, None] * scale).astype(np.float32)
    assert_equal_to_prdc(real, fake, 3, block_rows=25)


def test_mixed_dtypes_and_tensors(rng):
    real = rng.normal(size=(90, 20)).astype(np.float32)
    fake = rng.normal(size=(80, 20))  # float64: prdc compares float64 distances across
    got = assert_equal_to_prdc(real, fake, 4)
    assert fidfast.prdc(torch.from_numpy(real), torch.from_numpy(fake), 4) == got


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_tensors_are_computed_on_their_device(rng, device):
    real = rng.integers(0, 3, size=(150, 6)).astype(np.float32)  # exact ties, a radius of 0
    real[100:110] = real[0]
    fake = (rng.normal(size=(140, 6)) + 1).astype(np.float32)
    got = fidfast.prdc(torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device), 3, block_rows=32)
    assert got == pytest.approx(reference(real, fake, 3), rel=0, abs=1e-9)


def test_fewest_images_and_identical_sets(rng):
    x = rng.normal(size=(7, 5)).astype(np.float32)
    assert_equal_to_prdc(x, x.copy(), 5)  # k + 2 rows: the fewest prdc takes
    same = fidfast.prdc(x, x.copy(), 3)
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0
    fidfast.prdc(x[:6], x[:6], 5)  # k + 1 rows: defined (each has k others), though prdc itself fails


@pytest.mark.parametrize("real, fake, k, message", [
    (np.zeros((5, 4)), np.zeros((9, 4)), 5, "real features: 5 rows; k=5 needs at least 6"),
    (np.ones((9, 4)), np.ones((3, 4)), 5, "fake features: 3 rows"),
    (np.ones((9, 4)), np.ones((9, 3)), 2, "different widths: 4 and 3"),
    (np.ones((9, 4)), np.ones(9), 2, "fake features must be an N×d array"),
    (np.ones((9, 4)), np.ones((9, 4)), 0, "k must be a whole number ≥ 1"),
])
def test_bad_input_is_one_clear_error(real, fake, k, message):
    with pytest.raises(FidfastError, match=message):
        fidfast.prdc(real, fake, k)


def test_non_finite_features_are_refused(rng):
    x = rng.normal(size=(20, 4)).astype(np.float32)
    y = x.copy()
    y[3, 1] = np.nan
    with pytest.raises(FidfastError, match="fake features hold non-finite values"):
        fidfast.prdc(x, y)
    with pytest.raises(FidfastError, match="real features hold non-finite values"):
        fidfast.prdc(np.where(y > 0, np.inf, y), x)
