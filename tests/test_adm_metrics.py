"""The feature-level metrics of OpenAI's ADM evaluator (guided-diffusion ``evaluations/evaluator.py``): the
Inception Score of logits, equal to a float64 twin of the evaluator's loop and to torch-fidelity's ``isc``;
improved precision and recall (k = 3, ≤), equal to torch-fidelity's ``prc`` and, with
``distances="fp16-blocks"``, to a numpy twin of the evaluator's float16 ``ManifoldEstimator``."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from fidfast import FidfastError
from fidfast.metrics import inception_score
from fidfast.neighbours import improved_precision_recall, prdc

from .helpers import cuda, make_rng

torch_fidelity = pytest.importorskip("torch_fidelity", reason="needs torch-fidelity==0.4.0 (the reference)")
from torch_fidelity.metric_isc import isc_features_to_metric  # noqa: E402
from torch_fidelity.metric_prc import calculate_precision_recall_part  # noqa: E402


def classifier_logits(rng: np.random.Generator, n: int, classes: int = 1008) -> np.ndarray:
    """float32 N×C logits as the evaluator's pool_3 @ W makes them: non-negative low-rank features through a
    random linear classifier (logits' spread within a row about 45, an Inception Score about 40)."""
    features = np.maximum(rng.normal(size=(n, 64)) @ rng.normal(size=(64, 256)) / 8 + 0.3, 0)
    return (features @ rng.normal(size=(256, classes)) * 0.5).astype(np.float32)


def pool3_like(rng: np.random.Generator, n: int, mix: np.ndarray, shift: float = 0.0, scale: float = 1.0,
               offset: float = 0.4) -> np.ndarray:
    """float32 N×d features shaped like Inception's pool_3: non-negative, low-rank (rank = mix's rows), a
    common mean (0.41 at the defaults, squared norms about 500, 1.6× the median squared distance); the
    samples' latent ``shift``-ed and ``scale``-d so that precision and recall lie strictly inside (0, 1)."""
    latent = rng.normal(size=(n, mix.shape[0])) * scale + shift
    return np.maximum(latent @ mix + offset, 0).astype(np.float32)


def real_and_fake(key: str, n: int, m: int, d: int, rank: int, spread: float):
    rng = make_rng(key)
    mix = rng.normal(size=(rank, d)) / np.sqrt(rank) * spread
    return pool3_like(rng, n, mix), pool3_like(rng, m, mix, shift=0.1, scale=1.05)


# The ADM evaluator's Inception Score loop (compute_inception_score), on a float64 softmax.
def adm_inception_score(logits: np.ndarray, split_size: int = 5000) -> float:
    x = logits.astype(np.float64)
    e = np.exp(x - x.max(1, keepdims=True))
    preds = e / e.sum(1, keepdims=True)
    scores = []
    for i in range(0, len(preds), split_size):
        part = preds[i : i + split_size]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        kl = np.mean(np.sum(kl, 1))
        scores.append(np.exp(kl))
    return float(np.mean(scores))


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    return classifier_logits(make_rng("adm logits"), 12_345)  # ADM's splits: 5000, 5000 and 2345 rows


@pytest.mark.parametrize("split_size", [5000, 1000, 12_345])
def test_inception_score_is_the_adm_evaluators_loop(logits, split_size):
    ref = adm_inception_score(logits, split_size)
    assert 10 < ref < 1008
    got = inception_score(logits) if split_size == 5000 else inception_score(logits, split_size)
    assert isinstance(got, float) and abs(got - ref) <= 1e-12 * ref
    assert inception_score(torch.from_numpy(logits), split_size) == pytest.approx(ref, rel=1e-12, abs=0)


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("splits", [10, 7])
def test_inception_score_is_torch_fidelitys(logits, shuffle, splits):
    ref = isc_features_to_metric(torch.from_numpy(logits), splits=splits, shuffle=shuffle, rng_seed=2020)
    mean, std = inception_score(logits, splits=splits, shuffle_seed=2020 if shuffle else None, return_std=True)
    assert abs(mean - ref["inception_score_mean"]) <= 1e-6 * ref["inception_score_mean"]
    assert abs(std - ref["inception_score_std"]) <= 1e-6 * ref["inception_score_std"] and std > 0


def test_inception_score_shuffles_with_adm_splits_too(logits):
    order = np.random.RandomState(7).permutation(len(logits))
    ref = adm_inception_score(logits[order], 3000)
    assert inception_score(logits, 3000, shuffle_seed=7) == pytest.approx(ref, rel=1e-12, abs=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(split_size=0), "split_size must be a whole number ≥ 1, got 0"),
    (dict(split_size=100, splits=10), "give split_size (ADM's consecutive splits) or splits (torch-fidelity's), "
                                      "not both: got split_size=100 and splits=10"),
    (dict(splits=31), "splits must be a whole number from 1 to the number of rows (30), got 31"),
    (dict(splits=10, shuffle_seed=-1), "shuffle_seed must be a whole number from 0 to 2**32 - 1, or None, got -1"),
])
def test_inception_score_refuses_bad_settings(rng, kwargs, message):
    with pytest.raises(FidfastError, match=f"^{re.escape(message)}$"):
        inception_score(classifier_logits(rng, 30, 10), **kwargs)


def test_inception_score_refuses_bad_logits(rng):
    x = classifier_logits(rng, 30, 10)
    with pytest.raises(FidfastError, match=r"^logits must be an N×C array with N ≥ 1 and C ≥ 2, got shape \(30,\)$"):
        inception_score(x[:, 0])
    x[4, 2] = np.inf
    with pytest.raises(FidfastError, match=r"^logits hold non-finite values \(NaN or inf\)$"):
        inception_score(x)
    with pytest.raises(FidfastError, match="^logits must be real numbers, got bool$"):
        inception_score(x > 0)


def torch_fidelity_pr(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """torch-fidelity 0.4's precision and recall: its features_1 are the generated ones, features_2 real."""
    precision, recall = calculate_precision_recall_part(torch.from_numpy(fake), torch.from_numpy(real), k)
    return {"precision": precision, "recall": recall}


@pytest.mark.parametrize("n, m, d, rank, spread, k, block_rows", [
    (600, 500, 64, 8, 1.0, 3, None),
    (600, 500, 64, 8, 1.0, 1, 97),  # blocks smaller than N, an odd size
    (600, 500, 64, 8, 1.0, 5, None),
    (1000, 1100, 2048, 32, 0.3, 3, None),
])
def test_improved_precision_recall_is_torch_fidelitys(n, m, d, rank, spread, k, block_rows):
    real, fake = real_and_fake(f"prc {n} {d}", n, m, d, rank, spread)
    got, ref = improved_precision_recall(real, fake, k, block_rows=block_rows), torch_fidelity_pr(real, fake, k)
    assert set(got) == {"precision", "recall"}
    for key in got:  # torch-fidelity's means are float32: equal counts are within 1e-6
        assert abs(got[key] - ref[key]) <= 1e-6 and 0 < got[key] < 1, (key, got, ref)


def brute_force_counts(real: np.ndarray, fake: np.ndarray, k: int, strict: bool) -> dict:
    """Precision and recall from exact integer squared distances (small integer features): ≤ or <."""
    def sq(a, b):
        a, b = a.astype(np.int64), b.astype(np.int64)
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    real_r, fake_r = (np.sort(sq(x, x), axis=1)[:, k] for x in (real, fake))
    inside = np.less if strict else np.less_equal
    cross = sq(real, fake)
    return {"precision": float(inside(cross, real_r[:, None]).any(0).mean()),
            "recall": float(inside(cross, fake_r[None, :]).any(1).mean())}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_ties_are_decided_by_at_most(rng, dtype):
    # Small integers: many distances equal a radius exactly, which ≤ counts in (prdc's < leaves out); rows
    # repeat, some k or more times (a radius of 0, whose ball holds the repeats); fakes repeat reals.
    real = rng.integers(0, 3, size=(150, 6)).astype(dtype)
    real[100:110] = real[0]
    fake = rng.integers(0, 3, size=(120, 6)).astype(dtype)
    fake[:30] = real[:30]
    fake[30:35] = real[0]
    for k in (1, 3, 5):
        ref = brute_force_counts(real, fake, k, strict=False)
        assert improved_precision_recall(real, fake, k, block_rows=16) == ref
        assert improved_precision_recall(real, fake, k) == ref
        strict = brute_force_counts(real, fake, k, strict=True)
        assert {key: prdc(real, fake, k)[key] for key in ref} == strict
    assert ref != strict  # the two definitions differ here


# The ADM evaluator's ManifoldEstimator, numpy twin: DistanceBlock (float16 squared distances, float32
# where a block is not finite), manifold_radii (np.partition's k-th value, its own distance counted) and
# evaluate_pr (≤ on the squared distances), in square blocks. Sums and products accumulated exactly
# (float64; float16 squares sum exactly) and rounded through float32, as fidfast's emulation documents.
def batch_pairwise_distances(u: np.ndarray, v: np.ndarray, dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        a, b = u.astype(np.float32).astype(dtype), v.astype(np.float32).astype(dtype)
        norm_a = np.square(a).astype(np.float64).sum(1).astype(np.float32).astype(dtype)
        norm_b = np.square(b).astype(np.float64).sum(1).astype(np.float32).astype(dtype)
        product = (a.astype(np.float64) @ b.astype(np.float64).T).astype(np.float32).astype(dtype)
        return np.maximum(norm_a[:, None] - dtype(2) * product + norm_b[None, :], dtype(0))


def evaluator_distances(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    d = batch_pairwise_distances(u, v, np.float16)
    return d.astype(np.float32) if np.isfinite(d).all() else batch_pairwise_distances(u, v, np.float32)


def evaluator_radii(x: np.ndarray, k: int, block: int) -> np.ndarray:
    radii = np.zeros(len(x), dtype=np.float32)
    for begin1 in range(0, len(x), block):
        rows = x[begin1:begin1 + block]
        d = np.concatenate([evaluator_distances(rows, x[begin2:begin2 + block])
                            for begin2 in range(0, len(x), block)], axis=1)
        radii[begin1:begin1 + block] = np.partition(d, np.arange(k + 1), axis=1)[:, k]
    return radii


def evaluator_precision_recall(ref: np.ndarray, sample: np.ndarray, k: int = 3, block: int = 10_000) -> dict:
    radii_1, radii_2 = evaluator_radii(ref, k, block), evaluator_radii(sample, k, block)
    status_1, status_2 = np.zeros(len(ref), dtype=bool), np.zeros(len(sample), dtype=bool)
    for begin1 in range(0, len(ref), block):
        for begin2 in range(0, len(sample), block):
            d = evaluator_distances(ref[begin1:begin1 + block], sample[begin2:begin2 + block])
            status_1[begin1:begin1 + block] |= (d <= radii_2[None, begin2:begin2 + block]).any(1)
            status_2[begin2:begin2 + block] |= (d <= radii_1[begin1:begin1 + block, None]).any(0)
    return {"precision": float(status_2.mean()), "recall": float(status_1.mean())}


@pytest.fixture(scope="module")
def pool3_features():
    return real_and_fake("adm pool3-like", 1500, 1400, 2048, 32, 0.3)


def test_fp16_blocks_are_the_evaluators_arithmetic(pool3_features):
    real, fake = pool3_features
    got = improved_precision_recall(real, fake, distances="fp16-blocks")
    assert got == evaluator_precision_recall(real, fake)
    assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1


def test_fp16_blocks_fall_back_to_float32_per_block(rng):
    # Blocks of 96: the large rows' blocks overflow float16 (squared norms over 65504) and are computed in
    # float32, the others in float16; fakes overlap the large rows, so both kinds of block decide.
    real, fake = real_and_fake("adm fallback", 300, 250, 256, 16, 0.5)
    real[:96] *= 40
    fake[200:] *= 40
    assert not np.isfinite(batch_pairwise_distances(real[:96], fake[:96], np.float16)).all()
    assert np.isfinite(batch_pairwise_distances(real[96:192], fake[:96], np.float16)).all()
    got = improved_precision_recall(real, fake, distances="fp16-blocks", block_rows=96)
    assert got == evaluator_precision_recall(real, fake, block=96)
    assert improved_precision_recall(real, fake, distances="fp16-blocks") == evaluator_precision_recall(real, fake)


# fp16-blocks − exact, measured on these pool3-like features (squared norms 1.6× the median squared distance,
# 1500 × 1400 × 2048) over 40 seeds: +0.002 on average, at most 0.0047 either way (7 of 1500 reals); at
# 10,000²: +0.004 and +0.002. Features with a larger common mean differ more (squared norms 8.7× the median
# squared distance, 10,000²: +0.015 and +0.014).
FP16_DIFFERENCE_BOUND = 0.01


def test_fp16_blocks_differ_from_exact_by_little(pool3_features):
    real, fake = pool3_features
    exact = improved_precision_recall(real, fake)
    fp16 = improved_precision_recall(real, fake, distances="fp16-blocks")
    for key in exact:
        assert abs(fp16[key] - exact[key]) <= FP16_DIFFERENCE_BOUND, (key, exact, fp16)


@pytest.mark.parametrize("distances", ["exact", "fp16-blocks"])
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_tensors_are_computed_on_their_device(distances, device):
    real, fake = real_and_fake("adm device", 700, 650, 2048, 32, 0.3)
    got = improved_precision_recall(torch.from_numpy(real).to(device), torch.from_numpy(fake).to(device),
                                    distances=distances, block_rows=256)
    assert got == improved_precision_recall(real, fake, distances=distances, block_rows=256)
    if distances == "fp16-blocks":
        assert got == evaluator_precision_recall(real, fake, block=256)
    else:
        assert got == pytest.approx(torch_fidelity_pr(real, fake, 3), rel=0, abs=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(distances="fp8"), "distances must be one of 'exact', 'fp16-blocks', got 'fp8'"),
    (dict(k=0), "k must be a whole number ≥ 1, got 0"),
    (dict(k=9), "fake features: 9 rows; k=9 needs at least 10"),
    (dict(block_rows=0, distances="fp16-blocks"), "block_rows must be a whole number ≥ 1, got 0"),
])
def test_improved_precision_recall_refuses_bad_settings(rng, kwargs, message):
    real, fake = rng.normal(size=(12, 4)), rng.normal(size=(9, 4))
    with pytest.raises(FidfastError, match=f"^{re.escape(message)}"):
        improved_precision_recall(real, fake, **kwargs)
