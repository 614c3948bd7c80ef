"""fidfast.FrechetInceptionDistance and KernelInceptionDistance against torchmetrics 1.9's own metrics
(installed as a test reference; offline with fidfast's converted weights), their state, errors and
torch.distributed behaviour."""
from __future__ import annotations

import datetime
import os
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fidfast
from fidfast import FidfastError, FrechetInceptionDistance, KernelInceptionDistance
from fidfast.errors import MetricError

from .helpers import cuda, free_port, natural_image, on_gpu, rel, requires_weights


def _batch(rng, n, h, w) -> torch.Tensor:
    """n photo-like uint8 images, N×3×H×W (torchmetrics' layout)."""
    return torch.from_numpy(np.stack([natural_image(rng, h, w) for _ in range(n)])).permute(0, 3, 1, 2).contiguous()


@pytest.fixture
def batches(rng):
    """(images, real) batches: 72 real and 72 fake images (more than dims 64: full-rank covariances) in
    batches of different sizes and shapes, up- and downsampled to 299."""
    shapes = [(24, 120, 160, True), (48, 330, 300, True), (40, 96, 96, False), (32, 200, 410, False)]
    return [(_batch(rng, n, h, w), real) for n, h, w, real in shapes]


def _run(metric, batches):
    for imgs, real in batches:
        metric.update(imgs, real=real)
    return metric


@pytest.mark.parametrize("antialias", [True, False])
def test_fid_equals_torchmetrics(antialias, batches, pytorch_fid_weights):
    pytest.importorskip("torch_fidelity")
    tm = pytest.importorskip("torchmetrics.image.fid")
    theirs = _run(tm.FrechetInceptionDistance(feature=64, antialias=antialias,
                                              feature_extractor_weights_path=str(pytorch_fid_weights)), batches)
    ours = _run(FrechetInceptionDistance(feature=64, antialias=antialias,
                                         feature_extractor_weights_path=str(pytorch_fid_weights)), batches)
    expected, got = float(theirs.compute()), ours.compute()
    assert got.dtype == torch.float32 and got.shape == ()
    assert expected > 1 and rel(float(got), expected) <= 1e-5


def test_normalized_float_input_is_torchmetrics_too(batches, pytorch_fid_weights):
    pytest.importorskip("torch_fidelity")
    tm = pytest.importorskip("torchmetrics.image.fid")
    floats = [((imgs.float() + 0.3) / 255.3, real) for imgs, real in batches]  # in [0, 1], off the byte grid
    theirs = _run(tm.FrechetInceptionDistance(feature=64, normalize=True,
                                              feature_extractor_weights_path=str(pytorch_fid_weights)), floats)
    ours = _run(FrechetInceptionDistance(feature=64, normalize=True,
                                         feature_extractor_weights_path=str(pytorch_fid_weights)), floats)
    assert rel(float(ours.compute()), float(theirs.compute())) <= 1e-5


class TinyFeatures(nn.Module):
    """A small feature network built here (nothing downloaded): uint8 N×3×H×W → N×12."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 12, 5, stride=3)

    def forward(self, x):
        return torch.tanh(self.conv(x.float() / 255)).mean((2, 3)) * 3


def test_fid_with_a_custom_module_equals_torchmetrics(batches):
    tm = pytest.importorskip("torchmetrics.image.fid")
    module = TinyFeatures()
    same_size = [(torch.nn.functional.interpolate(x.float(), size=(64, 64)).round().byte(), real)
                 for x, real in batches]  # a module given as is sees one size per batch; torchmetrics stacks
    theirs = _run(tm.FrechetInceptionDistance(feature=module), same_size)
    ours = _run(FrechetInceptionDistance(feature=module), same_size)
    assert ours.num_features == 12
    assert "inception.conv.weight" in ours.state_dict()  # its weights are part of the state, as torchmetrics'
    assert rel(float(ours.compute()), float(theirs.compute())) <= 1e-6


def test_kid_is_torchmetrics_within_its_spread(batches, pytorch_fid_weights):
    pytest.importorskip("torch_fidelity")
    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    from torchmetrics.image.fid import NoTrainInceptionV3

    # torchmetrics' KID takes no weights path: its own Inception, given as the feature module
    network = NoTrainInceptionV3(name="inception-v3-compat", features_list=["64"],
                                 feature_extractor_weights_path=str(pytorch_fid_weights))
    theirs = _run(tm_kid.KernelInceptionDistance(feature=network, subsets=50, subset_size=40), batches)
    ours = _run(KernelInceptionDistance(feature=64, subsets=50, subset_size=40,
                                        feature_extractor_weights_path=str(pytorch_fid_weights)), batches)
    (their_mean, their_std), (mean, std) = theirs.compute(), ours.compute()
    assert float(std) > 0 and abs(float(mean) - float(their_mean)) <= float(their_std)
    assert 0.5 <= float(std) / float(their_std) <= 2
    # the same features give the same KID as fidfast's own function, seeded
    again = fidfast.kernel_inception_distance(ours.features("real"), ours.features("fake"), 50, 40, seed=0)
    assert again == (pytest.approx(float(mean), rel=1e-6), pytest.approx(float(std), rel=1e-6))


def test_kid_kernel_options_are_torchmetrics(rng):
    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    x = torch.from_numpy(rng.normal(size=(30, 6)))
    y = torch.from_numpy(rng.normal(0.3, 1.2, size=(30, 6)))
    for degree, gamma, coef in ((3, None, 1.0), (2, 0.5, 2.0)):
        theirs = float(tm_kid.poly_mmd(x, y, degree, gamma, coef))
        ours, spread = fidfast.kernel_inception_distance(x, y, 1, 30, degree=degree, gamma=gamma, coef=coef)
        assert spread == 0 and rel(ours, theirs) <= 1e-12


def test_state_dict_resumes_exactly_and_survives_casts(batches, tmp_path):
    whole = _run(FrechetInceptionDistance(feature=64), batches)
    first = _run(FrechetInceptionDistance(feature=64), batches[:3])
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = FrechetInceptionDistance(feature=64)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt"))
    resumed.half().to("cpu")  # Lightning's precision casts: the float64 state stays float64
    assert resumed.fake_comoment.dtype == torch.float64 and int(resumed.real_n) == 72
    _run(resumed, batches[3:])
    assert float(resumed.compute()) == pytest.approx(float(whole.compute()), rel=1e-12)
    with pytest.raises(FidfastError, match="not comparable"):
        FrechetInceptionDistance(feature=64, antialias=False).load_state_dict(first.state_dict())

    kid = _run(KernelInceptionDistance(feature=64, subset_size=30), batches[:3])
    again = KernelInceptionDistance(feature=64, subset_size=30)
    again.load_state_dict(kid.state_dict())
    assert torch.equal(again.features("real"), kid.features("real"))
    _run(again, batches[3:])
    _run(kid, batches[3:])
    assert again.compute() == kid.compute()


def test_memory_does_not_grow_with_updates(rng):
    metric = FrechetInceptionDistance(feature=64)
    imgs = _batch(rng, 4, 50, 60)
    sizes = []
    for _ in range(6):
        metric.update(imgs, real=True)
        sizes.append(sum(t.numel() * t.element_size() for t in metric.state_dict().values() if torch.is_tensor(t)))
    assert len(set(sizes)) == 1 and int(metric.real_n) == 24


def test_reset_keeps_the_real_side_only_when_asked(batches):
    for keep in (False, True):
        metric = _run(FrechetInceptionDistance(feature=64, reset_real_features=not keep), batches)
        before = float(metric.compute())
        metric.reset()
        assert int(metric.fake_n) == 0 and int(metric.real_n) == (72 if keep else 0)
        with pytest.raises(MetricError, match="More than one sample"):
            metric.compute()  # no fake images: an error, never NaN (a RuntimeError, as torchmetrics raises)
        _run(metric, [b for b in batches if keep is False or not b[1]])
        assert float(metric.compute()) == pytest.approx(before, rel=1e-12)


def test_a_callers_autocast_and_grad_do_not_reach_the_features(batches):
    plain = _run(FrechetInceptionDistance(feature=64), batches[:2])
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.enable_grad():
        mixed = _run(FrechetInceptionDistance(feature=64), batches[:2])
    assert torch.equal(plain.real_mean, mixed.real_mean) and torch.equal(plain.real_comoment, mixed.real_comoment)


@on_gpu(cuda)
@requires_weights
def test_moved_to_a_gpu_it_computes_what_the_cpu_does(batches):
    cpu = _run(FrechetInceptionDistance(feature=2048), batches)
    metric = FrechetInceptionDistance(feature=2048).to("cuda")  # Lightning's move; fp32 as asked by default
    gpu = _run(metric, [(imgs.cuda(), real) for imgs, real in batches])
    assert gpu.real_mean.is_cuda and gpu.real_comoment.dtype == torch.float64
    # fp32 without TF32; a rank-deficient covariance at d = 2048 amplifies ~1e-6 feature differences
    assert rel(gpu.real_mean, cpu.real_mean) <= 1e-5 and rel(gpu.fake_comoment, cpu.fake_comoment) <= 1e-4
    assert rel(float(gpu.compute()), float(cpu.compute())) <= 1e-4


def test_bad_input_is_one_clear_error(rng):
    uint8 = FrechetInceptionDistance(feature=64)
    floats = FrechetInceptionDistance(feature=64, normalize=True)
    img = _batch(rng, 2, 40, 50)
    cases = [
        (uint8, img.float() / 255, "construct the metric with normalize=True"),
        (floats, img, "construct the metric with normalize=False"),
        (floats, img.float(), "got values from"),
        (floats, torch.full((2, 3, 40, 50), float("nan")), "got values from nan"),
        (uint8, img.permute(0, 2, 3, 1), "channels last"),
        (uint8, img[0], "N×3×H×W"),
        (uint8, img.numpy(), "torch.Tensor"),
    ]
    for metric, x, fragment in cases:
        with pytest.raises(FidfastError, match=fragment):
            metric.update(x, real=True)
    for kwargs, fragment in (({"feature": 100}, "feature must be"), ({"antialias": False, "protocol": "clean"},
                             "antialias=False means"), ({"reset_real_features": 1}, "True or False"),
                             ({"precision": "fp16"}, "fp16 needs a CUDA")):
        with pytest.raises(FidfastError, match=fragment):
            FrechetInceptionDistance(**kwargs)
    with pytest.raises(FidfastError, match="subset_size=1000 is more than"):
        _run(KernelInceptionDistance(feature=64), [(img, True), (img, False)]).compute()
    with pytest.raises(FidfastError, match="coef must be"):
        KernelInceptionDistance(feature=64, coef=0.0)


# -- what code written for torchmetrics touches beyond update/compute/reset ---------------------------

def test_torchmetrics_state_names_read_and_load(batches, pytorch_fid_weights):
    # Σx, Σxxᵀ and n under torchmetrics' names, and a torchmetrics checkpoint (states persistent) loaded
    pytest.importorskip("torch_fidelity")
    tm = pytest.importorskip("torchmetrics.image.fid")
    theirs = tm.FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(pytorch_fid_weights))
    theirs.persistent(True)
    _run(theirs, batches)
    ours = _run(FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(pytorch_fid_weights)),
                batches)
    for side in ("real", "fake"):
        assert torch.equal(getattr(ours, f"{side}_features_num_samples"), getattr(theirs, f"{side}_features_num_samples"))
        for part in ("sum", "cov_sum"):
            mine, expected = getattr(ours, f"{side}_features_{part}"), getattr(theirs, f"{side}_features_{part}")
            assert mine.dtype == torch.float64 and rel(mine, expected) <= 1e-5
    loaded = FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(pytorch_fid_weights))
    loaded.load_state_dict(theirs.state_dict())  # strict: its Inception's weights are left out, not refused
    assert int(loaded.fake_n) == int(theirs.fake_features_num_samples)
    assert rel(float(loaded.compute()), float(theirs.compute())) <= 1e-6

    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    kid = tm_kid.KernelInceptionDistance(feature=theirs.inception, subset_size=30)
    kid.persistent(True)
    _run(kid, batches[:2])
    mine = KernelInceptionDistance(feature=64, subset_size=30, feature_extractor_weights_path=str(pytorch_fid_weights))
    mine.load_state_dict(kid.state_dict())
    assert torch.equal(torch.cat(mine.real_features), torch.cat(kid.real_features))


def test_inception_is_a_module_to_hand_to_kid(batches, pytorch_fid_weights):
    # torchmetrics users pass fid.inception to KID as feature=: an eval-mode module without the weights in it
    pytest.importorskip("torch_fidelity")
    tm_kid = pytest.importorskip("torchmetrics.image.kid")
    fid = FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(pytorch_fid_weights))
    assert isinstance(fid.inception, nn.Module) and not fid.inception.training
    assert fid.inception.num_features == 64 and not list(fid.inception.parameters())
    assert all(not k.startswith("inception.") for k in fid.state_dict())
    plain = _run(KernelInceptionDistance(feature=64, subsets=20, subset_size=30,
                                         feature_extractor_weights_path=str(pytorch_fid_weights)), batches)
    handed = _run(KernelInceptionDistance(feature=fid.inception, subsets=20, subset_size=30), batches)
    assert torch.equal(handed.features("fake"), plain.features("fake"))
    theirs = _run(tm_kid.KernelInceptionDistance(feature=fid.inception, subsets=20, subset_size=30), batches)
    assert rel(torch.cat(theirs.real_features), plain.features("real")) <= 1e-12


@pytest.mark.parametrize("metric,kwargs", [
    ("fid", {"feature": 100}), ("fid", {"feature": "2048"}), ("fid", {"feature": 64, "reset_real_features": 1}),
    ("fid", {"feature": 64, "normalize": "yes"}), ("kid", {"feature": 64, "subsets": 0}),
    ("kid", {"feature": 64, "subset_size": 0}), ("kid", {"feature": 64, "degree": 0}),
    ("kid", {"feature": 64, "gamma": -1.0}), ("kid", {"feature": 64, "coef": 0.0}),
])
def test_bad_arguments_raise_torchmetrics_exception_types(metric, kwargs, pytorch_fid_weights):
    # code that catches torchmetrics' ValueError or TypeError catches fidfast's too (a FidfastError besides)
    pytest.importorskip("torch_fidelity")
    from torchmetrics.image import fid as tm_fid
    from torchmetrics.image import kid as tm_kid

    theirs_cls = tm_fid.FrechetInceptionDistance if metric == "fid" else tm_kid.KernelInceptionDistance
    ours_cls = FrechetInceptionDistance if metric == "fid" else KernelInceptionDistance
    their_kwargs = {**kwargs, "feature_extractor_weights_path": str(pytorch_fid_weights)}
    if metric == "kid":  # torchmetrics' KID takes no weights path: its Inception, offline, as the module
        their_kwargs = {**kwargs, "feature": tm_fid.NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["64"], feature_extractor_weights_path=str(pytorch_fid_weights))}
    with pytest.raises(Exception) as theirs:
        theirs_cls(**their_kwargs)
    with pytest.raises(FidfastError) as ours:
        ours_cls(feature_extractor_weights_path=str(pytorch_fid_weights), **kwargs)
    assert isinstance(ours.value, type(theirs.value)), (type(theirs.value), ours.value)


def test_compute_with_too_few_images_raises_torchmetrics_type(rng, pytorch_fid_weights):
    pytest.importorskip("torch_fidelity")
    tm = pytest.importorskip("torchmetrics.image.fid")
    one = _batch(rng, 1, 40, 40)
    theirs = tm.FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(pytorch_fid_weights))
    ours = FrechetInceptionDistance(feature=64, feature_extractor_weights_path=str(pytorch_fid_weights))
    for metric in (theirs, ours):
        _run(metric, [(one, True), (one, False)])
    with pytest.raises(Exception) as their_error:
        theirs.compute()
    with pytest.raises(MetricError) as our_error:
        ours.compute()
    assert isinstance(our_error.value, type(their_error.value))


# -- two Gloo processes ----------------------------------------------------------------------------

def _rank_worker(rank, port, out_dir, shares):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=120))
    try:
        fid = _run(FrechetInceptionDistance(feature=64), shares[rank])
        kid = _run(KernelInceptionDistance(feature=64, subsets=20, subset_size=30), shares[rank])
        out = (float(fid.compute()), [float(v) for v in kid.compute()], int(fid.real_n))
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"{rank}.pkl"), "wb") as f:
        pickle.dump(out, f)


def test_compute_inside_a_process_group_is_the_metric_of_all_ranks_images(batches, tmp_path):
    """Each rank updates with its own images; compute() on every rank gives the one-process value."""
    fid = _run(FrechetInceptionDistance(feature=64), batches)
    kid = _run(KernelInceptionDistance(feature=64, subsets=20, subset_size=30), batches)
    halves = [[(x[: len(x) // 2], r) for x, r in batches], [(x[len(x) // 2:], r) for x, r in batches]]
    # KID's features are gathered in rank order: one process sees them in that order too
    kid_ordered = _run(KernelInceptionDistance(feature=64, subsets=20, subset_size=30), halves[0] + halves[1])
    mp.spawn(_rank_worker, args=(free_port(), str(tmp_path), halves), nprocs=2)
    results = [pickle.load(open(tmp_path / f"{r}.pkl", "rb")) for r in range(2)]
    assert results[0][:2] == results[1][:2]
    assert [r[2] for r in results] == [36, 36]  # update never communicates: each rank holds its own
    assert rel(results[0][0], float(fid.compute())) <= 1e-9
    assert results[0][1] == pytest.approx([float(v) for v in kid_ordered.compute()], rel=1e-6)
    assert abs(results[0][1][0] - float(kid.compute()[0])) <= 3 * float(kid.compute()[1])
