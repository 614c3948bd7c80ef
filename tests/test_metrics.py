"""The sweep API (FID held against a reference), the one-call FID, and KID."""
from __future__ import annotations

import json

import numpy as np
import pytest

import fidfast
from fidfast import FidfastError, kernel_inception_distance

from .helpers import FAST, fidfast_cli


def kid_reference(x, y, num_subsets, subset_size, seed):
    """Straight from the definition, with explicit sums over pairs (float64)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    k = lambda a, b: (a @ b / d + 1) ** 3  # noqa: E731
    out = []
    for _ in range(num_subsets):
        xs = x[torch.randperm(len(x), generator=gen)[:subset_size].numpy()]
        ys = y[torch.randperm(len(y), generator=gen)[:subset_size].numpy()]
        m = len(xs)
        kxx = sum(k(xs[i], xs[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kyy = sum(k(ys[i], ys[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        kxy = sum(k(xs[i], ys[j]) for i in range(m) for j in range(m)) / (m * m)
        out.append(kxx + kyy - 2 * kxy)
    return np.mean(out), np.std(out)


def test_kid_matches_the_definition(rng):
    x = np.abs(rng.normal(size=(40, 16)))
    y = np.abs(rng.normal(size=(35, 16))) * 1.3
    mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=20, seed=7)
    ref_mean, ref_std = kid_reference(x, y, 3, 20, 7)
    assert abs(mean - ref_mean) <= 1e-10 * abs(ref_mean) and mean > 0
    assert abs(std - ref_std) <= 1e-8 * abs(ref_std) + 1e-15


def test_kid_is_unbiased_near_zero_for_one_distribution(rng):
    x = np.abs(rng.normal(size=(400, 8)))
    y = np.abs(rng.normal(size=(400, 8)))
    far = np.abs(rng.normal(size=(400, 8))) + 0.5
    same, _ = kernel_inception_distance(x, y, num_subsets=20, subset_size=200)
    different, _ = kernel_inception_distance(x, far, num_subsets=20, subset_size=200)
    assert abs(same) < 0.05 * different


def test_fid_class_matches_calculate_fid_for_every_input_kind(image_dirs):
    a, b = image_dirs
    metric = fidfast.FID(a, **FAST)
    direct = fidfast.calculate_fid(a, b, **FAST)
    assert abs(metric(b) - direct) <= 1e-9 * direct
    stats = fidfast.compute_stats(b, **FAST)
    assert abs(metric(stats) - direct) <= 1e-9 * direct
    assert abs(metric(a)) <= 1e-9 * float(np.trace(metric.reference.sigma))
    with pytest.raises(FidfastError, match="dims"):
        metric(fidfast.compute_stats(b, **{**FAST, "dims": 192}))


def test_cli_kid_and_fid_in_one_pass(image_dirs):
    out = json.loads(fidfast_cli(*image_dirs, "--dims", "64", "--metrics", "fid,kid", "--kid-subsets", "10",
                                 "--kid-subset-size", "8", "--json", check_rc=0).stdout)
    assert out["fid"] > 0 and np.isfinite(out["kid"]) and out["kid_std"] >= 0
    ref = fidfast.calculate_kid(*image_dirs, num_subsets=10, subset_size=8, **FAST)
    assert abs(out["kid"] - ref[0]) <= 1e-9 * abs(ref[0])


def test_bad_kid_options_are_refused_before_any_image_is_read(tmp_path):
    with pytest.raises(FidfastError, match="--kid-subset-size"):
        fidfast.calculate_kid(tmp_path / "none", tmp_path / "none", subset_size=1, **FAST)
    with pytest.raises(FidfastError, match="Fréchet method"):
        fidfast.calculate_fid(tmp_path / "none", tmp_path / "none", method="sqrtm", **FAST)
