"""The statistics stage: the cov_update_/cov_merge_ ops (native and PyTorch twin, against float64
np.cov on fresh random features), FeatureStats' streaming and exact merging, and the .npz files."""
from __future__ import annotations

import os
import stat
from typing import Callable, NamedTuple

import numpy as np
import pytest
import torch

from fidfast import FeatureStats, FidfastError, native, stats

from .helpers import NATIVE_AND_TWIN, busy_stream, cuda_kernels, needs_native, on_gpu, rel


class Impl(NamedTuple):
    device: str
    cov_update_: Callable
    cov_merge_: Callable


NATIVE = Impl("cpu", torch.ops.fidfast.cov_update_ if native.LOADED else None,
              torch.ops.fidfast.cov_merge_ if native.LOADED else None)
TWIN = Impl("cpu", stats._cov_update_torch, stats._cov_merge_torch)


@pytest.fixture(params=NATIVE_AND_TWIN)
def impl(request) -> Impl:
    kind, device = request.param
    base = NATIVE if kind == "native" else TWIN
    return Impl(device, base.cov_update_, base.cov_merge_)


# -- the ops: cov_update_ / cov_merge_ --------------------------------------------------------------

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
    assert rel(comoment / (n - 1), np.cov(ref_x, rowvar=False)) <= 1e-12
    assert rel(mean, ref_x.mean(0)) <= 1e-14


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
        assert rel(cov, ref) <= 1e-12
        assert rel(cov, results[0][1]) <= 1e-13  # rounding of the means (~2e3) enters via delta
        assert rel(mean, results[0][0]) <= 1e-14
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
    assert rel(lc, stream_comoment) <= 1e-13


def test_cov_merge_state_into_itself(impl, rng):
    x = torch.from_numpy(features(rng, "nonneg", 90, 23)).to(impl.device)
    mean, comoment, n = accumulate(impl, x, [40, 50])
    impl.cov_merge_(mean, comoment, n, mean, comoment, n)
    doubled = torch.cat([x, x]).cpu().numpy()
    assert rel(comoment / (2 * n - 1), np.cov(doubled, rowvar=False)) <= 1e-12


@needs_native
def test_cov_native_equals_twin(rng):
    x = torch.from_numpy(features(rng, "large_mean", 300, 31)).float()
    a = accumulate(NATIVE, x, [100, 1, 199])
    b = accumulate(TWIN, x, [100, 1, 199])
    assert rel(a[1], b[1]) <= 1e-14 and rel(a[0], b[0]) <= 1e-15


def test_cov_rejects_bad_input(impl):
    """Whole messages, numbers and shapes included (the native op's, then the twin's where it differs)."""
    native_op = impl.cov_update_ is NATIVE.cov_update_
    mean, comoment = torch.zeros(4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64)
    mean, comoment = mean.to(impl.device), comoment.to(impl.device)
    with pytest.raises(RuntimeError) as error:
        impl.cov_update_(mean, comoment, 0, torch.ones(3, 5, device=impl.device))
    assert str(error.value) == "cov_update_: batch must be [B, 4], got " + ("[3, 5]" if native_op else "(3, 5)")
    with pytest.raises(RuntimeError) as error:
        impl.cov_update_(mean.float(), comoment, 0, torch.ones(3, 4, device=impl.device))
    assert str(error.value) == "cov_update_: mean and comoment must be float64" + (
        ", got Float and Double" if native_op else "")
    with pytest.raises(RuntimeError) as error:
        impl.cov_update_(mean, comoment, -1, torch.ones(3, 4, device=impl.device))
    assert str(error.value) == "cov_update_: n must be >= 0, got -1"
    with pytest.raises(RuntimeError) as error:
        impl.cov_merge_(mean, comoment, 3, mean[:3].clone(), comoment, 2)
    assert str(error.value) == ("cov_merge_: other state has shapes [3] and [4, 4], expected [4] and [4, 4]"
                                if native_op else "cov_merge_: the two states have different shapes")


@on_gpu(cuda_kernels)
def test_cuda_kernels_past_their_grid_cap(rng):
    # 270,000 rows × 64 and a 4,200² merge are each more than 65,536 blocks of 256 threads: threads loop
    x = torch.from_numpy(features(rng, "nonneg", 270_000, 64)).float()
    mean, comoment, n = accumulate(Impl("cuda", *NATIVE[1:]), x.cuda(), [len(x)])
    assert rel(comoment / (n - 1), np.cov(x.double().numpy(), rowvar=False)) <= 1e-12
    d = 4200
    states = []
    for _ in range(2):
        a = torch.from_numpy(rng.standard_normal((d, 40)))
        states.append((torch.from_numpy(rng.standard_normal(d)), a @ a.T, int(rng.integers(10, 100))))
    on_cpu = [t.clone() for t in states[0][:2]]
    on_cuda = [t.cuda() for t in states[0][:2]]
    NATIVE.cov_merge_(*on_cpu, states[0][2], *states[1])
    NATIVE.cov_merge_(*on_cuda, states[0][2], states[1][0].cuda(), states[1][1].cuda(), states[1][2])
    assert rel(on_cuda[0], on_cpu[0]) <= 1e-15 and rel(on_cuda[1], on_cpu[1]) <= 1e-15


@on_gpu(cuda_kernels)
def test_cuda_ops_on_a_side_stream(rng):
    x = torch.from_numpy(features(rng, "large_mean", 300, 48)).float()
    ref = accumulate(NATIVE, x, [100, 200])
    on_cuda, pinned = Impl("cuda", *NATIVE[1:]), x.pin_memory()
    accumulate(on_cuda, pinned.cuda(), [100, 200])  # warm-up: nothing left to load or pin
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        busy_stream()  # the default stream is idle: a kernel wrongly put there would read x too early
        mean, comoment, n = accumulate(on_cuda, pinned.to("cuda", non_blocking=True), [100, 200])
        NATIVE.cov_merge_(mean, comoment, n, mean, comoment, n)  # x twice
    torch.cuda.current_stream().wait_stream(side)
    assert rel(mean, ref[0]) <= 1e-14
    assert rel(comoment / (2 * n - 1), np.cov(torch.cat([x, x]).double().numpy(), rowvar=False)) <= 1e-12


# -- FeatureStats ----------------------------------------------------------------------------------

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


@pytest.mark.parametrize("content", ["no_sigma", "object", "nan", "shape", "garbage", "n_array", "n_zero"])
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
    elif content == "n_zero":
        np.savez(path, mu=rng.normal(size=2), sigma=np.eye(2), n=np.int64(0))
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


def test_merge_in_place_and_from_the_exact_state(rng):
    x = np.abs(rng.normal(size=(90, 12))) * 2 + 5
    a, b = stream(x[:35], 8), stream(x[35:], 16)
    rebuilt = FeatureStats.from_comoment(b.mean.clone(), b.comoment.clone(), b.n)
    assert a.merge_(rebuilt) is a and a.n == 90
    assert rel(a.sigma, np.cov(x, rowvar=False)) < 1e-12 and rel(a.mu, x.mean(0)) < 1e-13
    with pytest.raises(FidfastError, match="dims"):
        a.merge_(stream(x[:, :5], 8))


def test_one_image_is_a_shard_that_saves_loads_and_merges(rng, tmp_path):
    x = np.abs(rng.normal(size=(5, 6))) + 1
    one = stream(x[:1], 1)
    one.save(tmp_path / "one.npz")
    loaded = FeatureStats.load(tmp_path / "one.npz")
    assert loaded.n == 1 and np.array_equal(loaded.mu, x[0])
    with pytest.raises(FidfastError, match="at least 2"):
        loaded.covariance
    merged = FeatureStats.merge([loaded, stream(x[1:], 2)])
    assert merged.n == 5 and rel(merged.sigma, np.cov(x, rowvar=False)) < 1e-12
