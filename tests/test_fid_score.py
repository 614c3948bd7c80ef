"""The drop-in ``fidfast.fid_score`` against pytorch-fid 0.3.0 itself (same converted weights), on images
the tests generate: names and signatures, numbers, and that a caller's model is the model used."""
from __future__ import annotations

import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import fidfast
from fidfast import FidfastError, fid_score

from .helpers import params, reference_fid, rel, write_images

pytest.importorskip("pytorch_fid")
import pytorch_fid.fid_score  # noqa: E402
from pytorch_fid.inception import InceptionV3 as TheirInception  # noqa: E402

NAMES = ["calculate_fid_given_paths", "calculate_frechet_distance", "calculate_activation_statistics",
         "compute_statistics_of_path", "get_activations", "save_fid_stats", "ImagePathDataset", "IMAGE_EXTENSIONS"]


@pytest.mark.parametrize("name", NAMES)
def test_names_and_signatures(name):
    ours, theirs = getattr(fid_score, name), getattr(pytorch_fid.fid_score, name)
    if callable(theirs):
        assert params(ours) == params(theirs)
    else:
        assert ours == theirs


def test_frechet_distance_equals_pytorch_fids(rng):
    def moments(scale):
        x = np.abs(rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32))) * scale
        return x.mean(0), np.cov(x, rowvar=False)

    (mu1, s1), (mu2, s2) = moments(1.0), moments(0.8)
    ours = fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(ours, float)
    assert rel(ours, pytorch_fid.fid_score.calculate_frechet_distance(mu1, s1, mu2, s2)) < 1e-9


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


def test_dims2048_statistics_equal_pytorch_fids(image_dirs, pytorch_fid_weights):
    """pool3 statistics equal pytorch-fid's; FID equal on them (N < 2048, so through an independent eigen
    route: pytorch-fid's own sqrtm is unreliable there, which is one reason fidfast exists)."""
    model = TheirInception([3]).eval()
    theirs = [pytorch_fid.fid_score.compute_statistics_of_path(str(d), model, 6, 2048, "cpu", 0) for d in image_dirs]
    ours = [fidfast.compute_stats(d, dims=2048, device="cpu", batch_size=5, num_workers=1) for d in image_dirs]
    for (mu, sigma), stats in zip(theirs, ours):
        assert stats.n == 12
        assert rel(stats.mu, mu) < 1e-5
        assert rel(stats.sigma, sigma) < 1e-5
    # The drop-in function itself, on a folder (the pipeline runs for its own pristine model).
    mu, sigma = fid_score.compute_statistics_of_path(str(image_dirs[0]), fid_score.InceptionV3([3]), 6, 2048, "cpu", 0)
    assert rel(mu, theirs[0][0]) < 1e-5 and rel(sigma, theirs[0][1]) < 1e-5
    fid_theirs = reference_fid(*theirs[0], *theirs[1])
    fid_ours = fidfast.frechet_distance(ours[0].mu, ours[0].sigma, ours[1].mu, ours[1].sigma)
    assert fid_ours > 1.0
    assert rel(fid_ours, fid_theirs) <= 1e-5


def test_get_activations_shape_type_and_values(image_dirs, pytorch_fid_weights):
    files = sorted(image_dirs[0].glob("*.png"))[:4]
    ours = fid_score.get_activations(files, fid_score.InceptionV3([1]), batch_size=3, dims=192, device="cpu")
    theirs = pytorch_fid.fid_score.get_activations(files, TheirInception([1]), 3, 192, "cpu", 0)
    assert isinstance(ours, np.ndarray) and ours.shape == (4, 192) and ours.dtype == np.float64
    assert rel(ours, theirs) < 1e-5


def _perturbed(model: torch.nn.Module, rng: np.random.Generator) -> dict:
    """The model's state dict with its first convolution's weights scaled by a random 0.5..1.5 per filter."""
    state = model.state_dict()
    key = next(k for k in state if k.endswith("conv.weight"))
    scale = torch.from_numpy(rng.uniform(0.5, 1.5, size=(state[key].shape[0], 1, 1, 1))).float()
    state[key] = state[key] * scale
    return state


def test_a_callers_changed_weights_are_the_weights_used(image_dirs, rng, pytorch_fid_weights):
    files = sorted(image_dirs[0].glob("*.png"))[:5]
    ours, theirs = fid_score.InceptionV3([0]), TheirInception([0]).eval()
    state = _perturbed(ours, rng)
    ours.load_state_dict(state)
    theirs.load_state_dict(state)
    changed = fid_score.get_activations(files, ours, batch_size=2, dims=64, device="cpu", num_workers=0)
    expected = pytorch_fid.fid_score.get_activations(files, theirs, 2, 64, "cpu", 0)
    pristine = fid_score.get_activations(files, fid_score.InceptionV3([0]), batch_size=2, dims=64, device="cpu",
                                         num_workers=0)
    assert rel(changed, expected) < 1e-5
    assert rel(changed, pristine) > 1e-3
    mu, sigma = fid_score.calculate_activation_statistics(files, ours, 2, 64, "cpu", 0)
    assert rel(mu, expected.mean(0)) < 1e-5 and rel(sigma, np.cov(expected, rowvar=False)) < 1e-5


def test_another_model_reads_mixed_sizes_as_pytorch_fid_at_batch_size_1(tmp_path, rng, pytorch_fid_weights):
    """pytorch-fid's own model, called by fidfast's loop: images of different sizes go one at a time."""
    files = write_images(tmp_path / "mixed", rng, [(40, 52), (64, 64), (33, 90), (40, 52)])
    model = TheirInception([0]).eval()
    ours = fid_score.get_activations(files, model, batch_size=4, dims=64, device="cpu", num_workers=0)
    theirs = pytorch_fid.fid_score.get_activations(files, model, 1, 64, "cpu", 0)
    assert rel(ours, theirs) < 1e-6


def test_the_pipeline_runs_only_for_a_model_that_computes_what_it_computes(folder_zip, rng):
    """A zip is read by the pipeline (fidfast's own pristine model); any other model reads image files."""
    pristine = fid_score.InceptionV3([0])
    mu, sigma = fid_score.compute_statistics_of_path(str(folder_zip), pristine, 4, 64, "cpu", 0)
    assert mu.shape == (64,) and np.isfinite(sigma).all()
    changed = fid_score.InceptionV3([0])
    changed.load_state_dict(_perturbed(changed, rng))
    with pytest.raises(FidfastError, match="archives"):
        fid_score.compute_statistics_of_path(str(folder_zip), changed, 4, 64, "cpu", 0)


@pytest.fixture
def folder_zip(tmp_path, rng):
    paths = write_images(tmp_path / "imgs", rng, [(40, 40)] * 4)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for p in paths:
            z.write(p, p.name)
    return tmp_path / "imgs.zip"


def test_path_errors_are_runtime_errors_as_pytorch_fids(image_dirs, tmp_path):
    """Callers catch pytorch-fid's RuntimeError; fidfast's are also FidfastErrors (one line in its CLI)."""
    with pytest.raises(RuntimeError, match="Invalid path"):
        fid_score.calculate_fid_given_paths([str(tmp_path / "none"), str(image_dirs[0])], 50, "cpu", 64)
    with pytest.raises(RuntimeError, match="Invalid path"):
        fid_score.save_fid_stats([str(tmp_path / "none"), str(tmp_path / "s.npz")], 50, "cpu", 64)
    (tmp_path / "s.npz").write_bytes(b"kept")
    with pytest.raises(RuntimeError, match="Existing output file"):
        fid_score.save_fid_stats([str(image_dirs[0]), str(tmp_path / "s.npz")], 50, "cpu", 64)
    with pytest.raises(FidfastError):
        fid_score.calculate_fid_given_paths([str(tmp_path / "none"), str(image_dirs[0])], 50, "cpu", 64)
    assert (tmp_path / "s.npz").read_bytes() == b"kept"


def test_main_is_pytorch_fids_command_line(image_dirs, tmp_path, capsys):
    a, b = map(str, image_dirs)
    fid_score.main([a, b, "--dims", "64", "--device", "cpu", "--num-workers", "0"])
    printed = capsys.readouterr().out
    assert printed.startswith("FID:  ")
    expected = fid_score.calculate_fid_given_paths([a, b], 50, "cpu", 64, 0)
    assert rel(float(printed.split()[-1]), expected) < 1e-12
    fid_score.main(["--save-stats", a, str(tmp_path / "a.npz"), "--dims", "64", "--device", "cpu"])
    assert fidfast.FeatureStats.load(tmp_path / "a.npz").n == 12
    with pytest.raises(SystemExit) as end:
        fid_score.main([a, str(tmp_path / "none"), "--dims", "64"])
    assert end.value.code == 2 and capsys.readouterr().err.strip().startswith("fidfast: error: Invalid path")
    proc = subprocess.run([sys.executable, "-m", "fidfast.fid_score", a, b, "--dims", "64", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and rel(float(proc.stdout.split()[-1]), expected) < 1e-12, proc.stderr
