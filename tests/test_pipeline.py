"""The pipeline end to end on every input kind: the same statistics from folders, archives, file lists,
path lists, arrays and iterables; pytorch-fid's numbers at any batch size; too few images."""
from __future__ import annotations

import tarfile
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fidfast
from fidfast import files

from .helpers import FAST, cuda, fidfast_cli, make_rng, natural_image, on_gpu, rel, requires_weights, write_images


def test_archives_file_lists_and_path_lists_match_the_folder(folder, tmp_path):
    root, paths = folder
    ref = fidfast.compute_stats(root, **FAST)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for p in paths:
            z.write(p, f"inner/{p.name}")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as t:
        for p in paths:
            t.add(p, p.name)
    (tmp_path / "list.txt").write_text("# my images\n" + "\n".join(f"imgs/{p.name}" for p in paths) + "\n")
    for source in (tmp_path / "a.zip", tmp_path / "a.tar.gz", tmp_path / "list.txt", [str(p) for p in paths]):
        stats = fidfast.compute_stats(source, **FAST)
        assert stats.n == 7
        assert rel(stats.mu, ref.mu) < 1e-6 and rel(stats.sigma, ref.sigma) < 1e-5, source


def test_tar_with_workers_sees_every_image_once(folder, tmp_path):
    root, paths = folder
    with tarfile.open(tmp_path / "a.tar", "w") as t:
        for p in paths:
            t.add(p, p.name)
    stats = fidfast.compute_stats(tmp_path / "a.tar", **{**FAST, "num_workers": 2, "batch_size": 2})
    assert stats.n == 7
    assert rel(stats.sigma, fidfast.compute_stats(root, **FAST).sigma) < 1e-5


def test_arrays_tensors_and_iterables_match_the_files(tmp_path, rng):
    imgs = np.stack([natural_image(rng, 50, 70) for _ in range(6)])
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    ref = fidfast.compute_stats(tmp_path, **FAST)
    nchw = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    sources = {
        "uint8 NHWC numpy": imgs,
        "uint8 NCHW tensor": nchw.contiguous(),
        "float [0,1] NCHW": nchw.float() / 255,
        "iterable of batches": (b for b in (imgs[:4], imgs[4:])),
    }
    for name, source in sources.items():
        stats = fidfast.compute_stats(source, **{**FAST, "batch_size": 4})
        assert stats.n == 6, name
        assert rel(stats.sigma, ref.sigma) < 1e-5, name


def test_mixed_sizes_at_any_batch_size_give_pytorch_fids_batch_size_1_numbers(folder, pytorch_fid_weights):
    """pytorch-fid crashes on mixed sizes unless its batch size is 1; fidfast gives those features at any
    batch size. (Its covariance of 7 images is not compared with pytorch-fid's: the compiled network's
    ~5e-7 feature differences reach ~1e-5 there, the bound, on about one seed in eight.)"""
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    from fidfast import fid_score

    root, paths = folder
    theirs = get_activations(sorted(paths), InceptionV3([0]), batch_size=1, dims=64, device="cpu", num_workers=0)
    ours = fid_score.get_activations(sorted(paths), fid_score.InceptionV3([0]), batch_size=3, dims=64, device="cpu",
                                     num_workers=0)
    assert rel(ours, theirs) < 1e-5
    for batch_size in (1, 3, 50):
        stats = fidfast.compute_stats(root, **{**FAST, "batch_size": batch_size})
        assert rel(stats.mu, theirs.mean(0)) < 1e-5
        assert rel(stats.sigma, np.cov(ours, rowvar=False)) < 1e-12  # the same features at every batch size


def test_fewer_images_than_dims_warns_and_stays_finite(image_dirs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fid = fidfast.calculate_fid(*image_dirs, dims=192, device="cpu", num_workers=0, cache=False)
    assert np.isfinite(fid) and fid > 0
    assert any("fewer than dims=192" in str(w.message) for w in caught)


def test_nested_folders_lists_and_archives_give_the_same_bits(tmp_path, rng):
    """One name order everywhere: subfolders 'd' and 'd-1' sort alike in a folder (--recursive), an
    archive and a shuffled file list; a tar's links are read as the images they point to."""
    root = tmp_path / "n"
    paths = write_images(root / "d", rng, [(30, 40)] * 2) + write_images(root / "d-1", rng, [(40, 30)] * 3)
    names = [p.relative_to(root).as_posix() for p in paths]
    kwargs = {**FAST, "batch_size": 2, "recursive": True}
    ref = fidfast.compute_stats(root, **kwargs)
    (root / "list.txt").write_text("\n".join(names[::-1][:2] + names[:3]))  # shuffled
    with zipfile.ZipFile(tmp_path / "n.zip", "w") as z:
        for p, name in zip(paths[::-1], names[::-1]):
            z.write(p, name)
    with tarfile.open(tmp_path / "n.tar.gz", "w:gz") as t:
        for p, name in zip(paths[::-1], names[::-1]):
            t.add(p, name)
    for source in (root / "list.txt", tmp_path / "n.zip", tmp_path / "n.tar.gz"):
        stats = fidfast.compute_stats(source, **kwargs)
        assert np.array_equal(stats.sigma, ref.sigma), source
    with tarfile.open(tmp_path / "links.tar", "w") as t:  # a hard link and a symbolic one: 2 more images
        for p, name in zip(paths, names):
            t.add(p, name)
        for kind, name in ((tarfile.LNKTYPE, "hard.png"), (tarfile.SYMTYPE, "soft.png")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, names[0]
            t.addfile(link)
    assert fidfast.compute_stats(tmp_path / "links.tar", **kwargs).n == 7


def test_the_same_images_give_the_same_bits_from_a_folder_zip_or_tar(folder, tmp_path):
    """Every input is read in name order, in the same batches: archives whose members were added in
    another order (here reversed) give the folder's statistics bit for bit, compressed or not."""
    root, paths = folder
    ref = fidfast.compute_stats(root, **{**FAST, "batch_size": 3})
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for p in reversed(paths):
            z.write(p, p.name)
    for mode, name in (("w", "a.tar"), ("w:gz", "a.tar.gz"), ("w:xz", "a.txz")):
        with tarfile.open(tmp_path / name, mode) as t:
            for p in reversed(paths):
                t.add(p, p.name)
    for name in ("a.zip", "a.tar", "a.tar.gz", "a.txz"):
        for workers in (0, 2):
            stats = fidfast.compute_stats(tmp_path / name, **{**FAST, "batch_size": 3, "num_workers": workers})
            assert np.array_equal(stats.mu, ref.mu) and np.array_equal(stats.sigma, ref.sigma), (name, workers)


def test_one_image_is_statistics_to_merge_and_only_a_fid_needs_two(tmp_path, rng):
    paths = write_images(tmp_path / "d", rng, [(40, 50)] * 3)
    one = fidfast.compute_stats([str(paths[0])], **FAST)
    assert one.n == 1
    rest = fidfast.compute_stats([str(p) for p in paths[1:]], **FAST)
    merged = fidfast.FeatureStats.merge([one, rest])
    whole = fidfast.compute_stats(tmp_path / "d", **FAST)
    assert merged.n == 3 and rel(merged.sigma, whole.sigma) < 1e-12
    with pytest.raises(fidfast.FidfastError, match="at least 2 images, got 1"):
        fidfast.calculate_fid([str(paths[0])], tmp_path / "d", **FAST)


def test_a_list_of_images_of_any_sizes_is_one_batch(tmp_path, rng):
    images = [natural_image(rng, h, w) for h, w in [(40, 52), (64, 64), (33, 90), (48, 48), (75, 61)]]
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    files = fidfast.compute_stats(tmp_path, **FAST)
    for listed in (images, [torch.from_numpy(img) for img in images]):
        stats = fidfast.compute_stats(listed, **{**FAST, "batch_size": 2})
        assert stats.n == 5 and rel(stats.sigma, files.sigma) < 1e-12 and rel(stats.mu, files.mu) < 1e-12
    same = [natural_image(rng, 30, 40) for _ in range(3)]  # floats 3×H×W in [0, 1], stacked
    floats = fidfast.compute_stats([torch.from_numpy(img).permute(2, 0, 1) / 255 for img in same], **FAST)
    assert rel(floats.sigma, fidfast.compute_stats(np.stack(same), **FAST).sigma) < 1e-5
    with pytest.raises(fidfast.FidfastError, match="image 1 of the list"):
        fidfast.compute_stats([images[0], np.ones((4, 5, 2), np.uint8)], **FAST)


def test_compute_features_are_the_rows_behind_compute_stats(folder, tmp_path):
    root, paths = folder
    features = fidfast.compute_features(root, **{**FAST, "batch_size": 3})
    stats = fidfast.compute_stats(root, **FAST)
    assert isinstance(features, np.ndarray) and features.dtype == np.float32 and features.shape == (len(paths), 64)
    assert rel(features.astype(np.float64).mean(0), stats.mu) <= 1e-6
    assert rel(np.cov(features.astype(np.float64), rowvar=False), stats.sigma) <= 1e-6
    one = fidfast.compute_features([str(paths[2])], **FAST)  # input order: row 2 is the third file's
    assert rel(one[0], features[2]) <= 1e-6
    stats.save(tmp_path / "s.npz")
    with pytest.raises(fidfast.FidfastError, match="holds no features"):
        fidfast.compute_features(tmp_path / "s.npz", **FAST)


# -- cuDNN's settings as the network sees them, and the whole pipeline on a GPU -----------------------

class CudnnProbe(nn.Module):
    """A features module that records (cudnn.deterministic, cudnn.benchmark) as the network sees them."""
    num_features = 3

    def __init__(self):
        super().__init__()
        self.seen = set()

    def forward(self, x):
        self.seen.add((torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark))
        return x.mean((2, 3)) * x.std((2, 3))


@pytest.mark.parametrize("ask", ["nothing", "cudnn.deterministic", "use_deterministic_algorithms"])
def test_the_network_autotunes_unless_the_caller_asked_for_determinism(rng, monkeypatch, ask):
    images = np.stack([natural_image(rng, 32, 40) for _ in range(4)])
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    if ask == "cudnn.deterministic":
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    elif ask == "use_deterministic_algorithms":
        monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
        torch.use_deterministic_algorithms(True)
    try:
        probe = CudnnProbe().eval()
        fidfast.compute_stats(images, features=probe, **{k: v for k, v in FAST.items() if k != "dims"})
    finally:
        torch.use_deterministic_algorithms(False)
    assert probe.seen == ({(False, True)} if ask == "nothing" else {(True, False)})
    assert not torch.backends.cudnn.benchmark  # the caller's own settings are back


GPU_KW = dict(dims=2048, num_workers=2, batch_size=16, cache=False, progress=False)


@pytest.fixture(scope="module")
def photo_dirs(tmp_path_factory):
    """Two folders of 48 photo-like JPEGs of mixed sizes (ragged batches), the second tinted."""
    rng = make_rng("photo_dirs")
    root = tmp_path_factory.mktemp("photos")
    sizes = [(int(rng.integers(120, 400)), int(rng.integers(120, 400))) for _ in range(48)]
    write_images(root / "a", rng, sizes, ext="jpg")
    write_images(root / "b", rng, sizes, ext="jpg", shift=0.2)
    return root / "a", root / "b"


@on_gpu(cuda)
@requires_weights
def test_the_gpu_pipeline_equals_the_cpu(photo_dirs):
    # pinned loader → non-blocking copy → resize_normalize → channels_last network → cov_update_ on the GPU
    cpu = [fidfast.compute_stats(d, device="cpu", precision="fp32", **GPU_KW) for d in photo_dirs]
    gpu = [fidfast.compute_stats(d, device="cuda", precision="fp32", **GPU_KW) for d in photo_dirs]
    # fp32 without TF32: features ~1e-6 apart (other convolution algorithms), which a rank-47 covariance
    # at d = 2048 and its FID amplify (see the CPU-vs-pytorch-fid note above)
    for c, g in zip(cpu, gpu):
        assert g.n == c.n == 48
        assert rel(g.mu, c.mu) <= 1e-5 and rel(g.sigma, c.sigma) <= 1e-4
    fid_cpu = fidfast.frechet_distance(cpu[0].mu, cpu[0].sigma, cpu[1].mu, cpu[1].sigma)
    fid_gpu = fidfast.frechet_distance(gpu[0].mu, gpu[0].sigma, gpu[1].mu, gpu[1].sigma)
    assert fid_cpu > 1 and rel(fid_gpu, fid_cpu) <= 1e-4
    half = [fidfast.compute_stats(d, device="cuda", precision="fp16", **GPU_KW) for d in photo_dirs]
    assert all(rel(h.mu, c.mu) <= 1e-2 and rel(h.sigma, c.sigma) <= 2e-2 for h, c in zip(half, cpu))
    fid_half = fidfast.frechet_distance(half[0].mu, half[0].sigma, half[1].mu, half[1].sigma)
    assert rel(fid_half, fid_cpu) <= 1e-2  # a bound that catches a broken path; the shift itself: benchmarks


@on_gpu(cuda)
@requires_weights
def test_deterministic_gpu_runs_give_the_same_bits(photo_dirs, tmp_path):
    # two processes, so cuDNN chooses its kernels afresh in each
    for i in range(2):
        fidfast_cli(photo_dirs[0], tmp_path / f"{i}.npz", "--save-stats", "--device", "cuda", "--deterministic",
                    "--no-cache", "--batch-size", "16", check_rc=0)
    a, b = (fidfast.FeatureStats.load(tmp_path / f"{i}.npz") for i in range(2))
    assert a.n == 48 and np.array_equal(a.mu, b.mu) and np.array_equal(a.sigma, b.sigma)


@on_gpu(cuda)
@requires_weights
def test_the_compiled_network_computes_the_default_networks_features(photo_dirs):
    # AOTInductor's network at the default batch (shared with the benchmarks' cache), against TorchScript's
    # fp16 and the fp32 network: within fp16's rounding, as amplified by a rank-47 covariance at d = 2048.
    kw = {**GPU_KW, "batch_size": 500}
    fp32 = [fidfast.compute_stats(d, device="cuda", precision="fp32", **kw) for d in photo_dirs]
    plain = [fidfast.compute_stats(d, device="cuda", precision="fp16", **kw) for d in photo_dirs]
    compiled = [fidfast.compute_stats(d, device="cuda", precision="fp16", compile=True, **kw) for d in photo_dirs]
    assert list(files.cache_dir().glob("compiled/*_aoti_fp16_b500_*.pt2"))  # built and cached, not fallen back
    for c, p in zip(compiled, plain):
        assert c.n == p.n == 48 and rel(c.mu, p.mu) <= 1e-2 and rel(c.sigma, p.sigma) <= 2e-2
    fids = [fidfast.frechet_distance(s[0].mu, s[0].sigma, s[1].mu, s[1].sigma) for s in (fp32, plain, compiled)]
    assert fids[0] > 1 and rel(fids[2], fids[0]) <= 1e-2 and rel(fids[2], fids[1]) <= 1e-2
