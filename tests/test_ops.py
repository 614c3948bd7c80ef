"""The native ops (torch.ops.fidfast.*) and their pure-PyTorch twins in fidfast._ops, run through
the same checks against float64 / PyTorch references on fresh random inputs."""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from fidfast import _ops

HAS_CUDA = torch.cuda.is_available()


class Impl(NamedTuple):
    name: str
    device: str
    resize_normalize: Callable
    cov_update_: Callable
    cov_merge_: Callable
    sqrtm_newton_schulz: Callable


def _native(device: str) -> Impl:
    ops = torch.ops.fidfast
    return Impl("native", device, ops.resize_normalize, ops.cov_update_, ops.cov_merge_, ops.sqrtm_newton_schulz)


def _torch(device: str) -> Impl:
    return Impl("torch", device, _ops._resize_normalize_torch, _ops._cov_update_torch, _ops._cov_merge_torch,
                _ops._sqrtm_newton_schulz_torch)


_cuda_marks = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]


@pytest.fixture(params=[
    pytest.param(("native", "cpu"), id="native-cpu",
                 marks=pytest.mark.skipif(not _ops.NATIVE, reason="fidfast._C not built")),
    pytest.param(("torch", "cpu"), id="torch-cpu"),
    pytest.param(("native", "cuda"), id="native-cuda", marks=_cuda_marks + [
        pytest.mark.skipif(not _ops.native_cuda(), reason="fidfast._C built without CUDA")]),
    pytest.param(("torch", "cuda"), id="torch-cuda", marks=_cuda_marks),
])
def impl(request) -> Impl:
    kind, device = request.param
    return _native(device) if kind == "native" else _torch(device)


@pytest.fixture
def rng() -> np.random.Generator:
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"rng seed {seed}")  # shown by pytest when a test fails
    return np.random.default_rng(seed)


def rel_err(x, ref) -> float:
    """Relative Frobenius error; NaN/Inf anywhere fails the comparison instead of passing it."""
    x = torch.as_tensor(x).double().cpu()
    ref = torch.as_tensor(ref).double().cpu()
    assert torch.isfinite(x).all() and torch.isfinite(ref).all()
    return float((x - ref).norm() / ref.norm())


# -- extension ----------------------------------------------------------------------------------

def test_extension_registers_all_ops():
    if not _ops.NATIVE:
        assert _ops.op_names() == [] and not _ops.native_cuda()
        pytest.skip("fidfast._C not built")
    assert _ops.op_names() == ["resize_normalize", "cov_update_", "cov_merge_", "sqrtm_newton_schulz"]
    from fidfast import _C
    assert _ops.native_cuda() == _C.cuda_compiled()


# -- pack_images + resize_normalize ---------------------------------------------------------------

def resize_reference(img: np.ndarray, size: int, dtype=torch.float32) -> torch.Tensor:
    """pytorch-fid's preprocessing of one H×W×C image: 3×size×size."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype) / 255
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1
    return y[0].expand(3, -1, -1)


# (H, W, C): 1×1, odd, up- and down-sampling, identity at 299, tall, wide, large, grey and colour
SHAPES = [(1, 1, 3), (1, 1, 1), (2, 3, 3), (7, 5, 1), (37, 53, 3), (299, 299, 3), (300, 200, 1),
          (1000, 7, 3), (9, 1000, 1), (1000, 700, 3)]


@pytest.mark.parametrize("out_size", [299, 37, 1])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_resize_normalize_matches_interpolate(impl, rng, out_size, channels_last):
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES]
    data, meta = _ops.pack_images(images)
    poison = torch.full((len(images) * 3 * out_size ** 2,), float("nan"), device=impl.device)
    del poison  # the output may reuse this NaN memory: every element must be written
    out = impl.resize_normalize(data.to(impl.device), meta.to(impl.device), out_size, torch.float32, channels_last)
    assert out.shape == (len(images), 3, out_size, out_size) and out.dtype == torch.float32
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    out = out.cpu()
    for i, img in enumerate(images):
        assert torch.isfinite(out[i]).all()
        assert (out[i] - resize_reference(img, out_size)).abs().max() <= 1e-6, f"image {i} {img.shape}"
        # independent float64 reference; float32 source indices put it ~1e-4 away at these sizes
        assert (out[i] - resize_reference(img, out_size, torch.float64)).abs().max() <= 3e-4, f"image {i}"


def test_resize_normalize_float16(impl, rng):
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES[:6]]
    data, meta = _ops.pack_images(images)
    for channels_last in (False, True):
        out = impl.resize_normalize(data.to(impl.device), meta.to(impl.device), 64, torch.float16, channels_last)
        assert out.dtype == torch.float16
        out = out.float().cpu()
        for i, img in enumerate(images):
            assert torch.isfinite(out[i]).all()
            # half an fp16 ulp in [0.5, 1) is 2^-12; allow a full ulp
            assert (out[i] - resize_reference(img, 64)).abs().max() <= 2 ** -11


def test_resize_normalize_native_equals_fallback(rng):
    if not _ops.NATIVE:
        pytest.skip("fidfast._C not built")
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES]
    data, meta = _ops.pack_images(images)
    a = torch.ops.fidfast.resize_normalize(data, meta, 299, torch.float32, False)
    b = _ops._resize_normalize_torch(data, meta, 299, torch.float32, False)
    assert torch.equal(a, b)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_resize_normalize_takes_meta_on_the_host_or_the_device(rng):
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES[:5]]
    data, meta = _ops.pack_images(images)
    ref = _ops.resize_normalize(data, meta, out_size=41)
    for meta_here in (meta, meta.pin_memory(), meta.cuda()):
        out = _ops.resize_normalize(data.cuda(), meta_here, out_size=41)
        assert out.is_cuda
        assert (out.cpu() - ref).abs().max() <= 1e-6


def test_pack_images_layout(rng):
    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(3, 6, 3), dtype=np.uint8)
    strided = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)[::2, ::-1]
    data, meta = _ops.pack_images([grey, torch.from_numpy(colour), grey[:, :, None], strided])
    assert data.dtype == torch.uint8 and meta.dtype == torch.int64
    assert meta.tolist() == [[0, 5, 4, 1], [20, 3, 6, 3], [74, 5, 4, 1], [94, 4, 6, 3]]
    assert data.numel() == 94 + strided.size
    assert np.array_equal(data[94:].numpy().reshape(strided.shape), strided)
    assert np.array_equal(data[20:74].numpy().reshape(colour.shape), colour)


def test_pack_images_rejects_bad_images():
    with pytest.raises(TypeError, match="image 1"):
        _ops.pack_images([np.ones((2, 2), np.uint8), np.ones((2, 2), np.float32)])
    with pytest.raises(ValueError, match="image 0"):
        _ops.pack_images([np.ones((2, 2, 4), np.uint8)])


BAD_META = {"C=2": [0, 4, 5, 2], "H=0": [0, 0, 5, 3], "past the end": [1, 4, 5, 3],
            "negative offset": [-1, 4, 5, 3], "H*W*C overflows": [0, 2**40, 2**40, 3]}


@pytest.mark.parametrize("row", BAD_META.values(), ids=BAD_META.keys())
def test_resize_normalize_rejects_bad_meta(impl, rng, row):
    data, _ = _ops.pack_images([rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)])
    with pytest.raises(RuntimeError):
        impl.resize_normalize(data.to(impl.device), torch.tensor([row], device=impl.device), 8, torch.float32, False)


def test_resize_normalize_rejects_bad_args(impl, rng):
    data, meta = _ops.pack_images([rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)])
    data, meta = data.to(impl.device), meta.to(impl.device)
    with pytest.raises(RuntimeError):
        impl.resize_normalize(data, meta, 0, torch.float32, False)
    with pytest.raises(RuntimeError):
        impl.resize_normalize(data, meta, 8, torch.float64, False)
    with pytest.raises(RuntimeError):
        impl.resize_normalize(data.float(), meta, 8, torch.float32, False)
    with pytest.raises(RuntimeError):
        impl.resize_normalize(data, meta[:, :3], 8, torch.float32, False)


# -- cov_update_ / cov_merge_ ---------------------------------------------------------------------

def features(rng: np.random.Generator, kind: str, rows: int, d: int) -> np.ndarray:
    """Correlated feature rows: centred, with mean/std ≥ 1e3, or non-negative (ReLU-like)."""
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    x = rng.standard_normal((rows, d)) @ mix
    if kind == "large_mean":
        return 2e3 + rng.uniform(-50, 50, size=d) + x  # mean/std ~ 2e3
    if kind == "nonneg":
        return np.abs(x) * rng.exponential(1.0, size=d)
    return x


def new_state(d: int, device: str):
    """An empty (n = 0) state whose buffers hold NaN: the ops must not read them."""
    nan = float("nan")
    return (torch.full((d,), nan, dtype=torch.float64, device=device),
            torch.full((d, d), nan, dtype=torch.float64, device=device))


def accumulate(impl: Impl, x: torch.Tensor, sizes):
    mean, comoment = new_state(x.shape[1], impl.device)
    n = 0
    for batch in x.split(sizes):
        impl.cov_update_(mean, comoment, n, batch)
        n += batch.shape[0]
    return mean, comoment, n


@pytest.mark.parametrize("kind", ["centred", "large_mean", "nonneg"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=["f32", "f16", "f64"])
def test_cov_update_matches_np_cov(impl, rng, kind, dtype):
    d = 67
    sizes = [1, 37, 0, 200, 63, 2]
    x = torch.from_numpy(features(rng, kind, sum(sizes), d)).to(dtype)
    ref_x = x.double().numpy()  # the exact values the op sees
    mean, comoment, n = accumulate(impl, x.to(impl.device), sizes)
    assert n == ref_x.shape[0]
    assert torch.equal(comoment, comoment.T), "comoment must be exactly symmetric"
    assert rel_err(comoment / (n - 1), np.cov(ref_x, rowvar=False)) <= 1e-12
    assert rel_err(mean, ref_x.mean(0)) <= 1e-14


def test_cov_update_empty_batch_is_noop(impl, rng):
    x = torch.from_numpy(features(rng, "centred", 20, 9)).float().to(impl.device)
    mean, comoment, n = accumulate(impl, x, [20])
    before = (mean.clone(), comoment.clone())
    impl.cov_update_(mean, comoment, n, x[:0])
    assert torch.equal(mean, before[0]) and torch.equal(comoment, before[1])


def test_cov_merge_any_order(impl, rng):
    d = 41
    sizes = [50, 1, 120, 33, 7]
    x = torch.from_numpy(features(rng, "large_mean", sum(sizes), d)).float()
    ref = np.cov(x.double().numpy(), rowvar=False)
    parts = [accumulate(impl, part.to(impl.device), [len(part)]) for part in x.split(sizes)]
    parts.insert(2, (*new_state(d, impl.device), 0))  # an empty part merges as a no-op

    def merged(order):
        mean, comoment = new_state(d, impl.device)
        n = 0
        for i in order:
            impl.cov_merge_(mean, comoment, n, *parts[i])
            n += parts[i][2]
        return mean, comoment / (n - 1)

    orders = [range(len(parts)), reversed(range(len(parts))), rng.permutation(len(parts))]
    results = [merged(list(o)) for o in orders]
    for mean, cov in results:
        assert torch.equal(cov, cov.T)
        assert rel_err(cov, ref) <= 1e-12
        assert rel_err(cov, results[0][1]) <= 1e-13  # rounding of the means (~2e3) enters via delta
        assert rel_err(mean, results[0][0]) <= 1e-14
    # a tree of merges gives the same statistics as one stream
    left = parts[0]
    lm, lc, ln = left[0].clone(), left[1].clone(), left[2]
    impl.cov_merge_(lm, lc, ln, *parts[1])
    stream_mean, stream_comoment, n = accumulate(impl, x.to(impl.device), [len(x)])
    rm, rc, rn = new_state(d, impl.device) + (0,)
    for p in parts[2:]:
        impl.cov_merge_(rm, rc, rn, *p)
        rn += p[2]
    impl.cov_merge_(lm, lc, ln + parts[1][2], rm, rc, rn)
    assert rel_err(lc, stream_comoment) <= 1e-13


def test_cov_merge_state_into_itself(impl, rng):
    x = torch.from_numpy(features(rng, "nonneg", 90, 23)).to(impl.device)
    mean, comoment, n = accumulate(impl, x, [40, 50])
    impl.cov_merge_(mean, comoment, n, mean, comoment, n)
    doubled = torch.cat([x, x]).cpu().numpy()
    assert rel_err(comoment / (2 * n - 1), np.cov(doubled, rowvar=False)) <= 1e-12


def test_cov_native_equals_fallback(rng):
    if not _ops.NATIVE:
        pytest.skip("fidfast._C not built")
    x = torch.from_numpy(features(rng, "large_mean", 300, 31)).float()
    a = accumulate(_native("cpu"), x, [100, 1, 199])
    b = accumulate(_torch("cpu"), x, [100, 1, 199])
    assert rel_err(a[1], b[1]) <= 1e-14 and rel_err(a[0], b[0]) <= 1e-15


def test_cov_rejects_bad_input(impl):
    mean, comoment = torch.zeros(4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64)
    mean, comoment = mean.to(impl.device), comoment.to(impl.device)
    with pytest.raises(RuntimeError):
        impl.cov_update_(mean, comoment, 0, torch.ones(3, 5, device=impl.device))
    with pytest.raises(RuntimeError):
        impl.cov_update_(mean.float(), comoment, 0, torch.ones(3, 4, device=impl.device))
    with pytest.raises(RuntimeError):
        impl.cov_update_(mean, comoment, -1, torch.ones(3, 4, device=impl.device))
    with pytest.raises(RuntimeError):
        impl.cov_merge_(mean, comoment, 3, mean[:3].clone(), comoment, 2)


# -- sqrtm_newton_schulz --------------------------------------------------------------------------

def sqrt_eigh(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_sqrtm_full_rank(impl, rng):
    # covariance with a spectrum spanning 1e4 (accuracy of any sqrt degrades with the condition number)
    d = 96
    q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    a = np.cov(rng.standard_normal((4 * d, d)) * np.geomspace(1, 1e-2, d) @ q.T * 7.0, rowvar=False)
    x, res, iters = impl.sqrtm_newton_schulz(torch.from_numpy(a).to(impl.device), 100, 1e-14)
    assert isinstance(res, float) and isinstance(iters, int) and 0 < iters <= 100
    assert x.dtype == torch.float64 and x.shape == (d, d)
    assert res <= 1e-12
    assert rel_err(x @ x, a) <= 2e-12
    assert rel_err(x, sqrt_eigh(a)) <= 1e-12
    assert rel_err(x, np.real(scipy.linalg.sqrtm(a))) <= 1e-12


def test_sqrtm_rank_deficient(impl, rng):
    # covariance of 60 samples in 160 dims: rank 59, where plain Newton-Schulz ends in NaN
    d = 160
    a = np.cov(rng.standard_normal((60, d)), rowvar=False)
    x, res, iters = impl.sqrtm_newton_schulz(torch.from_numpy(a).to(impl.device), 100, 1e-14)
    ref = sqrt_eigh(a)
    assert res <= 1e-10
    assert rel_err(x, ref) <= 1e-6
    assert abs(float(torch.trace(x)) - np.trace(ref)) <= 1e-7 * np.trace(ref)
    # running to max_iter without a usable tol still returns the best (finite) iterate
    x2, res2, _ = impl.sqrtm_newton_schulz(torch.from_numpy(a).to(impl.device), 100, 0.0)
    assert res2 <= 1e-10 and rel_err(x2, ref) <= 1e-6


def test_sqrtm_small_and_edge_cases(impl, rng):
    v = 0.5 + rng.random()
    x, res, _ = impl.sqrtm_newton_schulz(torch.tensor([[v]], dtype=torch.float64, device=impl.device), 100, 1e-14)
    assert abs(float(x) - np.sqrt(v)) <= 1e-15 and res <= 1e-15
    a = torch.from_numpy(np.cov(rng.standard_normal((50, 5)), rowvar=False)).to(impl.device)
    x, res, iters = impl.sqrtm_newton_schulz(a, 0, 1e-14)  # no iterations: the scaled input itself
    assert iters == 0 and rel_err(x, a / a.norm().sqrt()) <= 1e-15


def test_sqrtm_native_equals_fallback(rng):
    if not _ops.NATIVE:
        pytest.skip("fidfast._C not built")
    a = torch.from_numpy(np.cov(rng.standard_normal((100, 70)), rowvar=False))
    xa, ra, ia = _native("cpu").sqrtm_newton_schulz(a, 100, 1e-14)
    xb, rb, ib = _torch("cpu").sqrtm_newton_schulz(a, 100, 1e-14)
    assert rel_err(xa, xb) <= 1e-12 and ia == ib and ra == pytest.approx(rb, rel=1e-6)


def test_sqrtm_rejects_bad_input(impl):
    dev = impl.device
    with pytest.raises(RuntimeError):
        impl.sqrtm_newton_schulz(torch.eye(3, 4, dtype=torch.float64, device=dev), 10, 1e-14)
    with pytest.raises(RuntimeError):
        impl.sqrtm_newton_schulz(torch.eye(3, device=dev), 10, 1e-14)
    bad = torch.eye(3, dtype=torch.float64, device=dev)
    bad[1, 2] = float("nan")
    with pytest.raises(RuntimeError):
        impl.sqrtm_newton_schulz(bad, 10, 1e-14)
