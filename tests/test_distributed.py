"""torch.distributed: sharding, the exact cross-rank merge (two Gloo processes) and torchrun end to end, on CPU."""
import datetime
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fidfast import FeatureStats, FidfastError, distributed

from .helpers import TORCHRUN_VARS, clean_env, free_port, rel, write_images

# -- sharding --------------------------------------------------------------------------------------

@pytest.mark.parametrize("world", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 7, 10])
def test_shard_gives_every_item_to_exactly_one_rank(world, n, rng):
    items = [f"img_{v}.png" for v in rng.choice(10**9, size=n, replace=False)]
    shards = [distributed.shard(items, rank=r, world_size=world) for r in range(world)]
    flat = [x for s in shards for x in s]
    assert flat == items  # complete, disjoint, and contiguous blocks in rank order
    sizes = [len(s) for s in shards]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1
    assert all(distributed.shard_bounds(n, r, world) == (sum(sizes[:r]), sum(sizes[: r + 1])) for r in range(world))


def test_shard_rejects_a_rank_outside_the_world():
    with pytest.raises(ValueError):
        distributed.shard([1, 2, 3], rank=2, world_size=2)
    with pytest.raises(ValueError):
        distributed.shard([1, 2, 3], rank=0)


# -- one process -----------------------------------------------------------------------------------

def test_outside_a_process_group_everything_is_a_no_op(monkeypatch, rng):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)
    assert not dist.is_initialized()
    assert (distributed.world_size(), distributed.rank(), distributed.is_primary()) == (1, 0, True)
    items = [f"{v}.png" for v in rng.integers(0, 10**9, size=7)]
    assert distributed.shard(items) == items
    stats = FeatureStats(5).update(torch.from_numpy(rng.normal(size=(9, 5))))
    merged, skipped = distributed.merge(stats, 3)
    assert merged is stats and skipped == 3
    assert distributed.all_ranks(True) and not distributed.all_ranks(False)


# -- two Gloo processes ----------------------------------------------------------------------------

def _merge_worker(rank, port, out_dir, cases):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))  # a hang fails instead of blocking CI
    out = {"world": (distributed.world_size(), distributed.rank(), distributed.is_primary())}
    try:
        for name, parts, skipped in cases:
            rows = parts[rank]
            stats = FeatureStats(rows.shape[1])
            for chunk in np.array_split(rows, 3):  # streamed in batches, as the pipeline does
                stats.update(torch.from_numpy(chunk))
            merged, total = distributed.merge(stats, skipped[rank])
            out[name] = (merged.n, merged.mu, merged.sigma, total, str(merged.device))
        try:
            distributed.merge(FeatureStats(4 if rank == 0 else 8), 0)
        except FidfastError as exc:
            out["dims_error"] = str(exc)
        items = [f"img_{i:04d}.png" for i in range(9)]
        out["shard"] = distributed.shard(items)
        for case, mine in (("order", items if rank == 0 else items[::-1]), ("count", items[: 9 - rank])):
            try:
                distributed.shard(mine)
            except FidfastError as exc:
                out[f"{case}_error"] = str(exc)
        out["all_ranks"] = (distributed.all_ranks(True), distributed.all_ranks(rank == 1))
        with distributed.single_process():
            out["single"] = (distributed.shard(items), distributed.world_size(), distributed.is_primary())
        distributed.all_ranks(True)  # both ranks are here; now rank 1 leaves, as a failed rank would
        if rank == 0:
            try:
                distributed.merge(FeatureStats(4).update(torch.ones(2, 4)), 0)
            except FidfastError as exc:
                out["lost_error"] = str(exc)
    finally:
        with open(os.path.join(out_dir, f"{rank}.pkl"), "wb") as f:
            pickle.dump(out, f)
        dist.destroy_process_group()


def test_merge_stats_across_two_gloo_processes_is_exact(tmp_path, rng):
    d = 12
    cases, full = [], {}
    for name, (n0, n1) in {"uneven": (7, 12), "rank0_empty": (0, 19), "rank1_empty": (19, 0),
                           "one_each": (1, 1)}.items():
        # correlated features with a large common mean: what a naive merge would get wrong
        x = rng.normal(size=(n0 + n1, d)) @ rng.normal(size=(d, d)) + rng.normal(50, 10, size=d)
        skipped = [int(v) for v in rng.integers(1, 5, size=2)]
        cases.append((name, [x[:n0], x[n0:]], skipped))
        full[name] = (x, sum(skipped))
    mp.spawn(_merge_worker, args=(free_port(), str(tmp_path), cases), nprocs=2, join=True)
    results = []
    for r in range(2):
        with open(tmp_path / f"{r}.pkl", "rb") as f:
            results.append(pickle.load(f))

    assert results[0]["world"] == (2, 0, True) and results[1]["world"] == (2, 1, False)
    for name, (x, skipped) in full.items():
        n, mu, sigma, total, device = results[0][name]
        assert (n, total, device) == (len(x), skipped, "cpu")
        assert np.isfinite(mu).all() and np.isfinite(sigma).all()
        assert rel(mu, x.mean(0)) <= 1e-12, name
        assert rel(sigma, np.cov(x, rowvar=False)) <= 1e-12, name
        other = results[1][name]  # every rank holds the very same merge
        assert other[0] == n and other[3] == total
        assert np.array_equal(other[1], mu) and np.array_equal(other[2], sigma)

    items = [f"img_{i:04d}.png" for i in range(9)]
    for r, res in enumerate(results):
        assert "dims [4, 8]" in res["dims_error"]
        assert res["shard"] == distributed.shard(items, rank=r, world_size=2)
        assert "different inputs" in res["order_error"] and "other names or order" in res["order_error"]
        assert "9 vs 8 images" in res["count_error"]
        assert res["single"] == (items, 1, True)
        assert res["all_ranks"] == (True, False)
    assert results[0]["shard"] + results[1]["shard"] == items
    assert "lost contact with the other ranks while merging statistics" in results[0]["lost_error"]


def _api_worker(rank, port, out_dir, folder, weights, cache_dirs, arrays, npz):
    import fidfast

    os.environ.update(XDG_CACHE_HOME=cache_dirs[rank], FIDFAST_WEIGHTS=weights)  # each rank its own cache
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    kwargs = dict(dims=64, device="cpu", num_workers=0, progress=False)
    try:
        # rank 0 finds these statistics in its cache, rank 1 does not: both must still agree
        folder_stats = fidfast.compute_stats(folder, **kwargs)
        array_stats = fidfast.compute_stats(arrays[rank], **kwargs)  # each rank's own samples: merged
        npz_stats = fidfast.compute_stats(npz, **kwargs)  # one file of samples: each rank reads its share
        drop_in = None
        if rank == 0:  # the drop-in, on one rank alone: all of the folder, and no collective to wait in
            model = fidfast.fid_score.InceptionV3([0])
            drop_in = fidfast.fid_score.compute_statistics_of_path(folder, model, 3, 64, "cpu", 0)
            files = sorted(Path(folder).iterdir())
            n_activations = len(fidfast.fid_score.get_activations(files, model, 3, 64, "cpu", 0))
            drop_in = (n_activations, *drop_in)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"{rank}.pkl"), "wb") as f:
        pickle.dump([(s.n, s.mu, s.sigma) for s in (folder_stats, array_stats, npz_stats)] + [drop_in], f)


def test_python_api_inside_a_process_group_returns_the_merged_stats(tmp_path, rng, monkeypatch):
    import fidfast
    from fidfast.weights import resolve_weights

    folder = tmp_path / "images"
    write_images(folder, rng, _sizes(rng, 7))
    arrays = [rng.integers(0, 256, size=(n, 48, 64, 3), dtype=np.uint8) for n in (3, 4)]
    weights = resolve_weights().path
    cache_dirs = [str(tmp_path / "cache0"), str(tmp_path / "cache1")]
    monkeypatch.setenv("FIDFAST_WEIGHTS", weights)
    monkeypatch.setenv("XDG_CACHE_HOME", cache_dirs[0])
    kwargs = dict(dims=64, device="cpu", num_workers=0, progress=False)
    ref_folder = fidfast.compute_stats(folder, **kwargs)  # one process; fills rank 0's cache
    ref_arrays = fidfast.compute_stats(np.concatenate(arrays), **kwargs)
    npz = tmp_path / "samples.npz"
    np.savez(npz, np.concatenate(arrays))
    assert list(os.scandir(cache_dirs[0])) and not os.path.exists(cache_dirs[1])

    out = tmp_path / "out"
    out.mkdir()
    mp.spawn(_api_worker, args=(free_port(), str(out), str(folder), weights, cache_dirs, arrays, str(npz)), nprocs=2)
    results = []
    for r in range(2):
        with open(out / f"{r}.pkl", "rb") as f:
            results.append(pickle.load(f))
    for got, ref in zip(results[0], (ref_folder, ref_arrays, ref_arrays, ref_folder)):  # last: rank 0's drop-in
        n, mu, sigma = got
        assert n == ref.n
        assert rel(mu, ref.mu) <= 1e-5 and rel(sigma, ref.sigma) <= 1e-5
    for mine, other in zip(results[0][:3], results[1][:3]):
        assert mine[0] == other[0] and np.array_equal(mine[1], other[1]) and np.array_equal(mine[2], other[2])


# -- torchrun end to end ---------------------------------------------------------------------------

# --no-cache: every run computes, none reads what a concurrent one just stored
CLI_OPTS = ["--dims", "64", "--device", "cpu", "--num-workers", "0", "--quiet", "--no-cache"]


def _launch(args, nproc=None) -> subprocess.Popen:
    """fidfast in one process, or under torchrun with nproc Gloo ranks on a free port (not waited for)."""
    from fidfast.weights import resolve_weights

    resolve_weights()  # convert the weights once, before several processes look for them
    launcher = [] if nproc is None else ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                                         "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    return subprocess.Popen([sys.executable, *launcher, "-m", "fidfast", *map(str, args), *CLI_OPTS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())


def _stdouts(*procs, timeout=300):
    outs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, stderr
            outs.append(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return outs


def _sizes(rng, n):
    return [(int(h), int(w)) for h, w in rng.integers(40, 120, size=(n, 2))]


def test_torchrun_two_ranks_give_the_fid_of_one_process(tmp_path, rng):
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, rng, _sizes(rng, 11))  # odd counts: N is not a multiple of the world size
    write_images(b, rng, _sizes(rng, 13), shift=0.25)
    one, two = _stdouts(_launch([a, b, "--json"]), _launch([a, b, "--json"], nproc=2))
    assert len(one.strip().splitlines()) == 1
    assert len(two.strip().splitlines()) == 1, two  # only rank 0 prints
    one, two = json.loads(one), json.loads(two)
    assert one["n_images"] == two["n_images"] == [11, 13]
    assert one["skipped"] == two["skipped"] == [0, 0]
    assert np.isfinite(one["fid"]) and one["fid"] > 0
    assert abs(two["fid"] - one["fid"]) <= 1e-5 * one["fid"], (one["fid"], two["fid"])


def test_torchrun_rank_with_no_images_and_save_stats_on_rank_0_only(tmp_path, rng):
    """3 ranks, 2 images: rank 0 (the one that writes) gets none; the file equals one process's statistics."""
    import fidfast

    a = tmp_path / "a"
    write_images(a, rng, _sizes(rng, 2))
    proc = _launch([a, tmp_path / "three.npz", "--save-stats", "--json"], nproc=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 images < dims
        one = fidfast.compute_stats(a, dims=64, device="cpu", num_workers=0, progress=False, cache=False)
    (out,) = _stdouts(proc)
    assert len(out.strip().splitlines()) == 1, out  # only rank 0 prints
    assert json.loads(out)["n_images"] == 2
    three = FeatureStats.load(tmp_path / "three.npz")
    assert one.n == three.n == 2
    assert np.isfinite(three.sigma).all() and np.abs(three.sigma).max() > 0
    assert rel(three.mu, one.mu) <= 1e-5 and rel(three.sigma, one.sigma) <= 1e-5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "three.npz"]


def test_torchrun_every_metric_is_that_of_one_process(tmp_path, rng):
    a, b = tmp_path / "a", tmp_path / "b"
    write_images(a, rng, _sizes(rng, 9))
    write_images(b, rng, _sizes(rng, 10), shift=0.25)
    args = [a, b, "--metrics", "fid,kid,prdc,fid-inf,fid-ci", "--kid-subsets", "7", "--kid-subset-size", "6",
            "--prdc-k", "3", "--fid-ci-resamples", "20", "--json"]
    one, two = (json.loads(out) for out in _stdouts(_launch(args), _launch(args, nproc=2)))
    assert one["kid"] > 0 and one["kid_std"] > 0
    # the features gathered from the ranks are the same, in the same order: the metrics made from them agree
    assert abs(two["kid"] - one["kid"]) <= 1e-9 * abs(one["kid"])
    assert abs(two["kid_std"] - one["kid_std"]) <= 1e-9 * one["kid_std"]
    assert two["prdc"] == one["prdc"] and 0 < one["prdc"]["coverage"] <= 1
    assert abs(two["fid_inf"] - one["fid_inf"]) <= 1e-6 * abs(one["fid_inf"])
    assert one["fid_ci"][0] < one["fid_ci"][1]
    assert np.allclose(two["fid_ci"], one["fid_ci"], rtol=1e-6, atol=0)
    assert abs(two["fid"] - one["fid"]) <= 1e-5 * one["fid"]  # from statistics merged across ranks


def _stderr_of(proc: subprocess.Popen) -> str:
    try:
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return stderr


def test_torchrun_only_rank_0_speaks(tmp_path, rng):
    a = tmp_path / "a"
    write_images(a, rng, _sizes(rng, 4))
    stderr = _stderr_of(_launch([a, a, "--batch-size", "0"], nproc=2))  # every rank hits it: rank 0 says it
    ours = [line for line in stderr.splitlines() if line.startswith("fidfast:")]
    assert len(ours) == 1 and "--batch-size" in ours[0], stderr
    stderr = _stderr_of(_launch([a, a, "--verbose"], nproc=2))
    assert stderr.count("FID Inception weights") == 1, stderr  # one process's --verbose lines, not two
    (out,) = _stdouts(_launch(["--version"], nproc=2))
    assert out.count("fidfast 0.1.0") == 1, out


def test_torchrun_a_ranks_own_failure_names_the_rank(tmp_path, rng):
    a = tmp_path / "a"
    write_images(a, rng, _sizes(rng, 3))
    (a / "img_0009.png").write_bytes(b"not an image")  # last in name order: in rank 1's share of 4
    stderr = _stderr_of(_launch([a, a], nproc=2))
    ours = [line for line in stderr.splitlines() if line.startswith("fidfast:")]
    assert any(line.startswith("fidfast: error: rank 1: ") and "img_0009.png" in line for line in ours), stderr
    assert len(ours) == len(set(ours)) <= 2, stderr  # at most rank 0's "lost contact" besides it
