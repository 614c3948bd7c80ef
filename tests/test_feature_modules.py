"""features=<nn.Module>: any feature network through fidfast's loader, statistics, cache and Fréchet
distance (small modules built here; nothing downloaded)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fidfast
from fidfast import FidfastError
from fidfast.decode import decode_image
from fidfast.preprocess import to_unit

from .helpers import FAST, rel, write_images

KW = {k: v for k, v in FAST.items() if k != "dims"}


class Pooled(nn.Module):
    """float N×3×S×S in [0, 1] → N×10 (a conv, tanh, mean): non-linear, so every pixel matters."""

    def __init__(self, input_size=None, num_features=None, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 10, 5, stride=3)
        if input_size is not None:
            self.input_size = input_size
        if num_features is not None:
            self.num_features = num_features

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean((2, 3)) * 4


def _reference_stats(module, paths, size):
    """float64 mean and covariance of the module's features, images resized as pytorch-fid resizes."""
    rows = []
    with torch.no_grad():
        for p in paths:
            x = to_unit(torch.from_numpy(decode_image(p)))[None]
            if size is not None:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            rows.append(module(x).double())
    f = torch.cat(rows).numpy()
    return f.mean(0), np.cov(f, rowvar=False)


def test_a_modules_statistics_are_its_features_of_the_resized_images(tmp_path, rng):
    paths = write_images(tmp_path / "a", rng, [(40, 52), (90, 64), (33, 90), (120, 80)] * 4)
    module = Pooled(input_size=37).eval()
    stats = fidfast.compute_stats(tmp_path / "a", features=module, batch_size=5, **KW)
    mu, sigma = _reference_stats(module, paths, 37)
    assert stats.dims == 10 and stats.n == 16
    assert rel(stats.mu, mu) <= 1e-5 and rel(stats.sigma, sigma) <= 1e-5


def test_without_input_size_images_come_at_their_own_size(tmp_path, rng):
    paths = write_images(tmp_path / "a", rng, [(48, 64)] * 12)
    module = Pooled(num_features=10).eval()
    stats = fidfast.compute_stats(tmp_path / "a", features=module, **KW)
    mu, sigma = _reference_stats(module, paths, None)
    assert rel(stats.mu, mu) <= 1e-5 and rel(stats.sigma, sigma) <= 1e-5
    write_images(tmp_path / "b", rng, [(48, 64), (50, 64)])
    with pytest.raises(FidfastError, match="module.input_size = S"):
        fidfast.compute_stats(tmp_path / "b", features=module, **KW)


def test_fid_of_a_module_and_its_cache_entry(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_images(tmp_path / "a", rng, [(64, 64)] * 14)
    write_images(tmp_path / "b", rng, [(64, 80)] * 14, shift=0.25)
    kw = {**KW, "cache": True}
    module = Pooled(input_size=32).eval()
    fid = fidfast.calculate_fid(tmp_path / "a", tmp_path / "b", features=module, **kw)
    s1 = fidfast.compute_stats(tmp_path / "a", features=module, **kw)
    s2 = fidfast.compute_stats(tmp_path / "b", features=module, **kw)
    assert fid > 0 and rel(fid, fidfast.frechet_distance(s1.mu, s1.sigma, s2.mu, s2.sigma)) <= 1e-12
    assert fidfast.FID(tmp_path / "a", features=module, **kw)(tmp_path / "b") == pytest.approx(fid, rel=1e-9)
    entries = len(list((tmp_path / "cache" / "fidfast" / "stats").glob("*.npz")))
    other = Pooled(input_size=32, seed=1).eval()  # other weights: another entry, other statistics
    s3 = fidfast.compute_stats(tmp_path / "a", features=other, **kw)
    assert len(list((tmp_path / "cache" / "fidfast" / "stats").glob("*.npz"))) == entries + 1
    assert rel(s3.mu, s1.mu) > 1e-3
    s1.save(tmp_path / "module.npz")
    inception = fidfast.compute_stats(tmp_path / "b", dims=64, **{k: v for k, v in kw.items()})
    inception.save(tmp_path / "inception.npz")
    with pytest.raises(FidfastError, match="their distance means nothing"):
        fidfast.calculate_fid(tmp_path / "module.npz", tmp_path / "inception.npz")


def test_bad_modules_are_one_clear_error(tmp_path, rng):
    write_images(tmp_path / "a", rng, [(40, 40)] * 3)
    cases = [
        (dict(features=Pooled().eval()), "needs num_features"),
        (dict(features=Pooled(input_size=0).eval()), "input_size must be"),
        (dict(features=Pooled(input_size=32).eval(), dims=64), "leave them out"),
        (dict(features="dinov2"), "must be an nn.Module"),
        (dict(features=Pooled(num_features=7).eval()), "expected 3×7"),
    ]
    for kwargs, fragment in cases:
        with pytest.raises(FidfastError, match=fragment):
            fidfast.compute_stats(tmp_path / "a", **kwargs, **KW)
    with pytest.warns(UserWarning, match="training mode"):
        fidfast.compute_stats(tmp_path / "a", features=Pooled(input_size=16), **KW)
