"""Precision and recall from k-nearest-neighbour balls (Kynkäänniemi et al. 2019) under its two
definitions in use, and density and coverage (Naeem et al. 2020):

- :func:`prdc`: equal to prdc 0.2's ``compute_prdc`` (k = 5, strict ``<``, prdc's distances);
- :func:`improved_precision_recall`: the definition of the authors' own code, of OpenAI's ADM evaluator
  (guided-diffusion ``evaluations/evaluator.py``) and of torch-fidelity's ``prc`` (k = 3, ``≤``), decided on
  exact squared distances, or (``distances="fp16-blocks"``) on the evaluator's own float16 ones.

Each real feature xᵢ gets a ball of radius rᵢ, the distance to its k-th nearest other real feature (the
(k+1)-th smallest distance in its row, its own 0 counted, as prdc takes it); each fake yⱼ a ball r'ⱼ among
the fakes. With d(i, j) = ‖xᵢ − yⱼ‖ and prdc's strict ``<`` (``≤`` for :func:`improved_precision_recall`):

    precision = fraction of fakes in some real ball           (∃i: d(i, j) < rᵢ)
    recall    = fraction of reals in some fake ball           (∃j: d(i, j) < r'ⱼ)
    density   = (1/k) · mean over fakes of the real balls holding each
    coverage  = fraction of real balls holding some fake      (minⱼ d(i, j) < rᵢ)

No distance matrix is held whole: blocks of rows are compared with blocks of columns, each block's
squared distances from one float32 matrix product on the device (both sides centred on the real mean
first, which shrinks the product's rounding; the symmetric real×real and fake×fake distances above the
diagonal only). Each value comes with a proven bound on its distance from the value prdc computes
(Higham's γ_d for the product, plus every other rounding), so most comparisons are decided from it; a
comparison inside that bound (a radius candidate, a pair near a ball's surface, exact ties) is decided by
recomputing the distance as prdc does — sklearn's ‖x‖² − 2x·y + ‖y‖² in float64, rounded to float32
when both inputs are float32, clipped at 0, square root in that precision — and comparing it with prdc's
``<`` (:func:`improved_precision_recall`: recomputing the squared distance Σ(xₗ − yₗ)² in float64 and
comparing it with ``≤``; see there).

The comparisons then come out as prdc's, except where the float64 rounding of a dot product differs
between BLAS kernels and that difference decides: a float64 value within float64 rounding of a float32
rounding boundary, or a radius made of rounding noise (a feature with k or more exact duplicates; its
radius is then ~1e-7, prdc's and fidfast's noise alike). Cost: N·M + (N² + M²)/2 float32 dot products of
length d, work linear in the N·M distances, and the float64 recomputations (about 0.4% of the pairs on
random 2048-d features, whose distances are all alike); memory: the features, a centred float32 copy
plus blocks of about :data:`BLOCK_BYTES`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from fidfast.errors import FidfastError

ArrayLike = Union[np.ndarray, torch.Tensor]
BLOCK_BYTES = 1 << 30  # working memory of one block of distances (beyond the features themselves)
_BYTES_PER_DISTANCE = 32  # the block's float32 values, sums beside them, masks
_PAIR_BYTES = 1 << 23  # float64 rows gathered per batch of exact recomputations (cache-sized: 5× faster than 64 MiB)
# float64 differences held per batch of squared distances: on the CPU cache-sized (measured on 2 cores: 2 MiB
# 25× faster than 4 MiB), on a GPU large enough that the kernels' launches do not count
_DIFF_BYTES = {"cpu": 1 << 21, "cuda": 1 << 26}
_U32, _U64 = 2.0 ** -24, 2.0 ** -53  # unit roundoffs
EVALUATOR_BLOCK = 10_000  # the ADM evaluator's row_batch_size and col_batch_size (its ManifoldEstimator's)
DISTANCES = ("exact", "fp16-blocks")  # improved_precision_recall's choices


@dataclasses.dataclass(frozen=True)
class _Rule:
    """What one definition decides on. ``strict``: d < r (prdc's) rather than d ≤ r. ``squared``: the values
    are exact squared distances Σ(xₗ − yₗ)² in float64 (radii squared too) rather than prdc's distances."""

    strict: bool
    squared: bool


_PRDC = _Rule(strict=True, squared=False)
_IMPROVED = _Rule(strict=False, squared=True)


def prdc(real_features: ArrayLike, fake_features: ArrayLike, k: int = 5, *,
         block_rows: Optional[int] = None) -> Dict[str, float]:
    """Precision, recall, density and coverage of ``fake_features`` against ``real_features``.

    Equal to ``prdc.compute_prdc(real_features, fake_features, nearest_k=k)`` (prdc 0.2) on the same
    arrays; see the module docstring for how, and the one exception. Not the precision and recall of the
    ADM evaluator and torch-fidelity (k = 3, ``≤``): that is :func:`improved_precision_recall`.

    Args:
        real_features, fake_features: N×d and M×d arrays or tensors, finite, equal d; float32 (then the
            distances are float32, as prdc's) or any other real dtype (float64 distances). Tensors are
            computed on their device, arrays on the CPU. N, M ≥ k + 1 (prdc itself needs k + 2).
        k: the neighbour that sets each ball's radius (prdc's ``nearest_k``), ≥ 1.
        block_rows: rows per block of distances (default: as many as fit in :data:`BLOCK_BYTES`).
    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as Python floats; density may exceed 1.
    """
    real, fake = _checked(real_features, fake_features, k, block_rows)
    in_real_balls, covered, recalled = _balls(real, fake, k, block_rows, _PRDC)
    m = fake.shape[0]
    return {"precision": float((in_real_balls > 0).sum()) / m,
            "recall": float(recalled.sum()) / real.shape[0],
            "density": (1.0 / float(k)) * (float(in_real_balls.sum()) / m),
            "coverage": float(covered.sum()) / real.shape[0]}


def improved_precision_recall(real_features: ArrayLike, fake_features: ArrayLike, k: int = 3, *,
                              distances: str = "exact", block_rows: Optional[int] = None) -> Dict[str, float]:
    """Precision and recall of ``fake_features`` against ``real_features`` as Kynkäänniemi et al.'s own code
    defines them, and OpenAI's ADM evaluator and torch-fidelity's ``prc`` compute them: k = 3 and ``≤``
    (:func:`prdc` is prdc's: k = 5 and a strict ``<``).

    Each feature's radius is the distance to its k-th nearest other feature of its own set (a repeated row
    counts, at distance 0). precision = the fraction of fakes within (≤) the radius of some real feature;
    recall = the fraction of reals within the radius of some fake. Equal to torch-fidelity 0.4's
    ``calculate_precision_recall_part(fake, real, neighborhood=k)`` (its ``features_1`` are the generated
    ones) on the same features, except where its float32 ``torch.cdist`` rounding decides.

    Args:
        real_features, fake_features: N×d and M×d arrays or tensors (the ADM evaluator's reference batch and
            sample batch), finite, equal d, any real dtype. Tensors are computed on their device, arrays on
            the CPU. N, M ≥ k + 1.
        k: the neighbour that sets each radius (torch-fidelity's ``neighborhood``, the evaluator's
            ``nhood_sizes=(3,)``), ≥ 1.
        distances: ``"exact"`` (default): each decision is that of the exact squared distances, computed as
            Σ(xₗ − yₗ)² in float64 — it can differ from real arithmetic only where a squared distance lies
            within float64 rounding (about d·1e-16 relative) of a squared radius, and exactly equal values
            (repeated rows, integer features) are decided exactly. Computed in blocks as :func:`prdc`, each
            comparison that float32 blocks cannot decide recomputed in float64.
            ``"fp16-blocks"``: the evaluator's own arithmetic (its ``ManifoldEstimator``, ``DistanceBlock``):
            features rounded to float32 then float16; squared distances max(‖u‖² − 2u·v + ‖v‖², 0) in
            float16 — squares, sums and the product each rounded to float16, the sums and the product
            accumulated exactly and rounded through float32 — per square block of rows × columns, and the
            whole block again in float32 where any of its float16 values is not finite; radii the (k+1)-th
            smallest squared distance of a row, its own (float16 noise, not 0) counted; ``≤`` on the squared
            distances in float32. The accumulation is that of the evaluator's platform (``tensorflow-gpu``,
            float32 accumulators) without its order, so single float16 values, and rarely a decision, can
            differ from a given run of it. TensorFlow's CPU kernels round the norms' partial sums to
            float16 (measured with TensorFlow 2.21: 28% of the norms differ by an ulp or more), so the
            evaluator run on a CPU gives precision and recall up to about 0.005 away from these. Against
            ``"exact"``, measured on pool3-like features, 10,000 real and 10,000 fake: 0.004 and 0.002
            higher where the squared norms are 1.6× the median squared distance, 0.015 and 0.014 higher
            at 8.7× (the cancellation in ‖u‖² − 2u·v + ‖v‖² grows with the features' common mean).
        block_rows: ``"exact"``: rows per block of distances (default: as many as fit in
            :data:`BLOCK_BYTES`); the values do not depend on it. ``"fp16-blocks"``: the side of the square
            blocks (default :data:`EVALUATOR_BLOCK`, 10,000, the evaluator's ``row_batch_size`` and
            ``col_batch_size``); the float32 fallback is decided per block, so another side can change
            the values where some block is not finite in float16.
    Returns:
        ``{"precision", "recall"}`` as Python floats in [0, 1].
    """
    if distances not in DISTANCES:
        raise FidfastError(f"distances must be one of {', '.join(map(repr, DISTANCES))}, got {distances!r}")
    real, fake = _checked(real_features, fake_features, k, block_rows)
    if distances == "fp16-blocks":
        return _evaluator_precision_recall(real, fake, k, block_rows or EVALUATOR_BLOCK)
    in_real_balls, _, recalled = _balls(real, fake, k, block_rows, _IMPROVED)
    return {"precision": float((in_real_balls > 0).sum()) / fake.shape[0],
            "recall": float(recalled.sum()) / real.shape[0]}


def _checked(real_features: ArrayLike, fake_features: ArrayLike, k: int,
             block_rows: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The two feature sets as tensors on the real features' device, after checking every argument."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise FidfastError(f"k must be a whole number ≥ 1, got {k!r}")
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1):
        raise FidfastError(f"block_rows must be a whole number ≥ 1, got {block_rows!r}")
    real, fake = _as_features(real_features, "real"), _as_features(fake_features, "fake")
    fake = fake.to(real.device)
    if real.shape[1] != fake.shape[1]:
        raise FidfastError(f"real and fake features have different widths: {real.shape[1]} and {fake.shape[1]}")
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < k + 1:
            raise FidfastError(f"{name} features: {x.shape[0]} rows; k={k} needs at least {k + 1} (each one's "
                               f"k-th nearest neighbour among the others)")
    return real, fake


def _balls(real: torch.Tensor, fake: torch.Tensor, k: int, block_rows: Optional[int],
           rule: _Rule) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Under ``rule``: per fake, the number of real balls holding it; per real, whether its ball holds a fake
    and whether it lies in a fake ball."""
    with _ieee_float32_products():
        centre = real.double().mean(0)
        sides = _Side(real, centre), _Side(fake, centre)
        radii = [_radii(s, k, block_rows, rule) for s in sides]
        return _cross(*sides, *radii, block_rows, rule)

def _as_features(x: ArrayLike, name: str) -> torch.Tensor:
    """A 2-D finite float32 or float64 tensor: float32 stays float32 (prdc's float32 distances), any other
    dtype becomes float64 (as sklearn casts it)."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    if t.ndim != 2:
        raise FidfastError(f"{name} features must be an N×d array, got shape {tuple(t.shape)}")
    if t.is_complex() or t.dtype == torch.bool:
        raise FidfastError(f"{name} features must be real numbers, got {t.dtype}")
    if t.dtype != torch.float32:
        t = t.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise FidfastError(f"{name} features hold non-finite values (NaN or inf)")
    return t


@contextlib.contextmanager
def _ieee_float32_products() -> Iterator[None]:
    """float32 products in float32 (not TF32 or bf16), which the error bounds below assume."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)


class _Side:
    """One side's features, prepared once: the originals and sklearn's float64 squared norms (for exact
    recomputation), the float32 factors of the block product, and each row's share of its bound."""

    def __init__(self, x: torch.Tensor, centre: torch.Tensor) -> None:
        x64 = x.double()
        self.x, self.n, self.d = x, x.shape[0], x.shape[1]
        self.sq_norms = (x64 * x64).sum(1)  # sklearn's row_norms(squared=True), in float64
        self.centred = (x64 - centre).float()  # x̃: translation leaves distances alone and shrinks the norms
        centred_sq = self.centred.double().square().sum(1)
        self.centred_sq = centred_sq.float()
        # |block value − prdc's float64 value| ≤ boundᵢ + boundⱼ: the product's rounding, 2γ‖x̃‖‖ỹ‖ ≤
        # γ(‖x̃‖² + ‖ỹ‖²); the float32 roundings of x̃ (≤ 4.1u(‖x̃‖² + ‖ỹ‖²)), of ‖x̃‖², of the block's sums
        # and of the sums that compare it with a threshold (≤ 2u each, of values ≤ 2.1(‖x̃‖² + ‖ỹ‖²));
        # the float64 roundings of prdc's formula — or of the float64 differences' squares and sum, within
        # (d + 2)u‖x − y‖² ≤ 2.1(d + 2)u(‖x̃‖² + ‖ỹ‖²), which the same term holds.
        self.bound = ((_gamma(self.d) + 16 * _U32) * centred_sq
                      + 4 * (self.d + 4) * _U64 * (self.sq_norms + centred_sq))


def _gamma(n: int) -> float:
    """Higham's γₙ = nu/(1 − nu): the relative rounding bound of a float32 dot product of length n, in any
    summation order."""
    return n * _U32 / (1 - n * _U32)


def _block_values(a: _Side, rows: slice, b: _Side, cols: slice = slice(None)) -> torch.Tensor:
    """Squared distances ‖x̃‖² + ‖ỹ‖² − 2x̃·ỹ of ``a``'s rows to ``b``'s columns from one float32 product,
    float32 rows×cols, each within boundᵢ + boundⱼ of prdc's."""
    values = a.centred[rows] @ b.centred[cols].T
    return values.mul_(-2).add_(b.centred_sq[None, cols]).add_(a.centred_sq[rows, None])


def _thresholds(r2: torch.Tensor, strict: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where a squared distance s decides its comparison with a radius r by itself (float32 thresholds),
    d < r if ``strict``, else d ≤ r. Inside surely for s ≤ r²(1 − 8u), where rounding s to the distances'
    dtype and the square root cannot reach r (for ``<``, none when r = 0). Outside surely for s ≥ r²(1 + 8u)
    (the margin for the float32 sums): for ``<`` s ≥ r² would do, as √fl(r²) = r and both roundings are
    monotone; for ``≤`` the margin makes s > r² (when r = 0: s ≥ the smallest normal float32, so that
    fl(s) > 0). For exact squared values compared with squared radii, the margins cover the thresholds'
    own float32 rounding."""
    inside, outside = r2 * (1 - 8 * _U32), r2 * (1 + 8 * _U32)
    if strict:
        inside = torch.where(r2 > 0, inside, -float("inf"))
    else:
        outside = torch.where(r2 > 0, outside, torch.finfo(torch.float32).tiny)
    return inside.float(), outside.float()


def _within(d: torch.Tensor, r: torch.Tensor, strict: bool) -> torch.Tensor:
    """The exact comparison: d < r (prdc's) or d ≤ r."""
    return d < r if strict else d <= r


def _radius_squares(radii: torch.Tensor, rule: _Rule) -> torch.Tensor:
    """r² in float64, the scale of the block values (radii already squared under a ``squared`` rule)."""
    return radii.double() if rule.squared else radii.double() ** 2


def _distance_dtype(a: _Side, b: _Side, rule: _Rule) -> torch.dtype:
    """The exact values' dtype: float64 for squared distances; prdc's: float32 when both sides are float32
    (sklearn's upcast path), else float64."""
    if rule.squared:
        return torch.float64
    return torch.float32 if a.x.dtype == b.x.dtype == torch.float32 else torch.float64


def _exact(dot: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """prdc's distances from float64 dot products and squared norms: sklearn's (−2x·y + ‖x‖²) + ‖y‖² in
    that order, rounded to ``dtype``, clipped at 0, square root in ``dtype`` — numpy's, correctly rounded
    as IEEE asks: torch's CPU kernels are not (measured: ~17% of float32 and ~1% of float64 square roots
    one ulp off), and one ulp decides a tie."""
    squared = ((-2 * dot + sq_a) + sq_b).to(dtype).clamp_(min=0)
    return torch.from_numpy(np.sqrt(squared.cpu().numpy())).to(squared.device)


def _exact_pairs(a: _Side, i: torch.Tensor, b: _Side, j: torch.Tensor, rule: _Rule) -> torch.Tensor:
    """The exact values of (a[i], b[j]) under ``rule`` for index tensors i (R,) and j (R,) or (R, m), in
    batches of bounded memory; shape of j."""
    if rule.squared:
        return _squared_pairs(a, i, b, j)
    dtype = _distance_dtype(a, b, rule)
    out = torch.empty(j.shape, dtype=dtype, device=a.x.device)
    per_row = j[0].numel() if j.ndim == 2 else 1
    step = max(1, _PAIR_BYTES // (8 * a.d * (per_row + 1)))
    for s in range(0, i.shape[0], step):
        ii, jj = i[s:s + step], j[s:s + step]
        y = b.x[jj].double().reshape(len(ii), per_row, a.d)
        dot = (y @ a.x[ii].double()[:, :, None]).reshape(jj.shape)
        sq_a = a.sq_norms[ii] if j.ndim == 1 else a.sq_norms[ii, None]
        out[s:s + step] = _exact(dot, sq_a, b.sq_norms[jj], dtype)
    return out


def _exact_rows(a: _Side, rows: torch.Tensor, b: _Side, rule: _Rule) -> torch.Tensor:
    """The exact values of ``a``'s rows to all of ``b`` under ``rule`` (prdc's: from one float64 product)."""
    if rule.squared:
        return _squared_pairs(a, rows, b, torch.arange(b.n, device=b.x.device).expand(len(rows), b.n))
    dot = a.x[rows].double() @ b.x.double().T
    return _exact(dot, a.sq_norms[rows, None], b.sq_norms[None, :], _distance_dtype(a, b, rule))


def _squared_pairs(a: _Side, i: torch.Tensor, b: _Side, j: torch.Tensor) -> torch.Tensor:
    """Squared distances Σ(a[i]ₗ − b[j]ₗ)² in float64 for index tensors i (R,) and j (R,) or (R, m); shape
    of j. From the differences, not the norms: 0 for equal rows, within about (d + 2)·u of the true value,
    the same for (i, j) as for (j, i), and independent of the summation order wherever the partial sums
    are exact (integer features), so exact ties are decided exactly."""
    columns = j if j.ndim == 2 else j[:, None]
    out = torch.empty(columns.shape, dtype=torch.float64, device=a.x.device)
    budget = _DIFF_BYTES.get(a.x.device.type, _DIFF_BYTES["cpu"])
    col_step = max(1, min(columns.shape[1], budget // (8 * a.d)))
    row_step = max(1, budget // (8 * a.d * col_step))
    for r in range(0, len(i), row_step):
        x = a.x[i[r:r + row_step]].double()[:, None, :]
        for c in range(0, columns.shape[1], col_step):
            diff = b.x[columns[r:r + row_step, c:c + col_step]].double() - x
            out[r:r + row_step, c:c + col_step] = diff.square_().sum(-1)
    return out.reshape(j.shape)


def _row_blocks(n_rows: int, step: int) -> Iterator[slice]:
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _radii(side: _Side, k: int, block_rows: Optional[int], rule: _Rule) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row, the exact value under ``rule`` (prdc's, dtype the
    side's distances; or the squared distance, float64).

    The distances are symmetric: square blocks on and above the diagonal only, each giving candidates to
    its rows and (transposed) to its columns. A row's m smallest values are its candidates (itself, at
    distance 0, always among them); their exact distances give the (k+1)-th smallest. That is the row's
    radius when every other row's value, less the bound, is at least its square — else the row is
    recomputed whole, exactly."""
    device = side.x.device
    m = min(side.n, k + 5)
    best = torch.full((side.n, m), float("inf"), device=device), torch.zeros(side.n, m, dtype=torch.int64,
                                                                             device=device)
    # Square blocks: ≥ 8 a side, so the half that is skipped is most of the work (≥ 512 rows each, for the
    # products' speed), within BLOCK_BYTES.
    step = block_rows or min(math.isqrt(BLOCK_BYTES // _BYTES_PER_DISTANCE), max(512, -(-side.n // 8)))
    blocks = list(_row_blocks(side.n, step))
    for b, rows in enumerate(blocks):
        for cols in blocks[b:]:
            values = _block_values(side, rows, side, cols)
            if cols == rows:
                diagonal = torch.arange(rows.stop - rows.start, device=device)
                values[diagonal, diagonal] = -float("inf")  # prdc sets the self-distance to 0
            _keep_smallest(best, rows, values, cols.start, dim=1)
            if cols != rows:
                _keep_smallest(best, cols, values, rows.start, dim=0)
    candidate_values, candidates = best
    index = torch.arange(side.n, device=device)
    exact = _exact_pairs(side, index, side, candidates, rule)
    exact[candidates == index[:, None]] = 0
    radii = exact.sort(dim=1).values[:, k]
    if m < side.n:
        # Proven when no other row can be nearer: its value, less the bound, is at least r² (a value equal
        # to the radius leaves it as it is, whatever the rule's comparison).
        reach = candidate_values[:, -1].double() - (side.bound + side.bound.max())
        for redo in index[reach < _thresholds(_radius_squares(radii, rule), strict=True)[1]].split(step):
            whole = _exact_rows(side, redo, side, rule)
            whole[torch.arange(len(redo), device=device), redo] = 0
            radii[redo] = whole.kthvalue(k + 1, dim=1).values
    return radii


def _keep_smallest(best: Tuple[torch.Tensor, torch.Tensor], rows: slice, values: torch.Tensor, offset: int,
                   dim: int) -> None:
    """Merge the smallest block values along ``dim`` (indices from ``offset``) into the m best (values,
    indices) of ``rows``, which index the other dim."""
    best_values, best_index = best
    m = best_values.shape[1]
    new_values, new_index = torch.topk(values, min(m, values.shape[dim]), dim=dim, largest=False)
    if dim == 0:
        new_values, new_index = new_values.T, new_index.T
    merged_values = torch.cat([best_values[rows], new_values], 1)
    merged_index = torch.cat([best_index[rows], new_index + offset], 1)
    best_values[rows], order = torch.topk(merged_values, m, dim=1, largest=False)
    best_index[rows] = merged_index.gather(1, order)


def _cross(real: _Side, fake: _Side, real_radii: torch.Tensor, fake_radii: torch.Tensor,
           block_rows: Optional[int], rule: _Rule) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over all real×fake distances, compared under ``rule``: per fake, the number of real balls holding it;
    per real, whether its ball holds a fake (coverage) and whether it lies in a fake ball (recall)."""
    device = real.x.device
    in_real_balls = torch.zeros(fake.n, dtype=torch.int64, device=device)
    covered = torch.zeros(real.n, dtype=torch.bool, device=device)
    recalled = torch.zeros(real.n, dtype=torch.bool, device=device)
    fake_inside, fake_outside = (t[None, :] for t in _thresholds(_radius_squares(fake_radii, rule), rule.strict))
    fake_bound = fake.bound.float()[None, :]
    for rows in _row_blocks(real.n, block_rows or max(1, BLOCK_BYTES // (_BYTES_PER_DISTANCE * fake.n))):
        values = _block_values(real, rows, fake)
        real_inside, real_outside = (t[:, None] for t in _thresholds(_radius_squares(real_radii[rows], rule),
                                                                     rule.strict))
        real_bound = real.bound[rows].float()[:, None]
        # Decided where the value's whole bound lies on one side of a threshold; between, recomputed.
        real_in = values + fake_bound <= real_inside - real_bound
        fake_in = values + real_bound <= fake_inside - fake_bound
        unsure = ~real_in & (values - fake_bound < real_outside + real_bound)
        unsure |= ~fake_in & (values - real_bound < fake_outside + fake_bound)
        i, j = unsure.nonzero(as_tuple=True)
        # Many unsure pairs: the block's own float64 product is cheaper (measured); the squared distances
        # come from differences, pair by pair either way.
        if not rule.squared and i.numel() > unsure.numel() // 256:
            d = _exact_rows(real, torch.arange(rows.start, rows.stop, device=device), fake, rule).double()
            real_in = _within(d, real_radii[rows].double()[:, None], rule.strict)
            fake_in = _within(d, fake_radii.double()[None, :], rule.strict)
        elif i.numel():
            d = _exact_pairs(real, i + rows.start, fake, j, rule).double()
            real_in[i, j] = _within(d, real_radii[i + rows.start].double(), rule.strict)
            fake_in[i, j] = _within(d, fake_radii[j].double(), rule.strict)
        in_real_balls += real_in.sum(0)
        covered[rows] = real_in.any(1)
        recalled[rows] = fake_in.any(1)
    return in_real_balls.cpu(), covered.cpu(), recalled.cpu()


def _evaluator_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int, block: int) -> Dict[str, float]:
    """The ADM evaluator's ``compute_prec_recall``: radii from ``manifold_radii``, then ``evaluate_pr`` with
    the reference batch as rows and the samples as columns, in square blocks of side ``block``."""
    real, fake = real.float(), fake.float()  # the evaluator's float32 placeholders
    real_radii, fake_radii = _evaluator_radii(real, k, block), _evaluator_radii(fake, k, block)
    real_in = torch.zeros(real.shape[0], dtype=torch.bool, device=real.device)  # its features_1_status
    fake_in = torch.zeros(fake.shape[0], dtype=torch.bool, device=real.device)  # its features_2_status
    for rows in _row_blocks(real.shape[0], block):
        for cols in _row_blocks(fake.shape[0], block):
            d = _evaluator_distances(real[rows], fake[cols])
            real_in[rows] |= (d <= fake_radii[None, cols]).any(1)
            fake_in[cols] |= (d <= real_radii[rows, None]).any(0)
    return {"precision": float(fake_in.sum()) / fake.shape[0], "recall": float(real_in.sum()) / real.shape[0]}


def _evaluator_radii(x: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """The evaluator's ``manifold_radii``: per row, the (k+1)-th smallest of its squared distances to every
    row, its own counted (``np.partition(..., k)[:, k]``), blocks of rows × blocks of columns; float32."""
    radii = torch.empty(x.shape[0], device=x.device)
    for rows in _row_blocks(x.shape[0], block):
        smallest = torch.empty(rows.stop - rows.start, 0, device=x.device)
        for cols in _row_blocks(x.shape[0], block):
            d = _evaluator_distances(x[rows], x[cols])
            smallest = torch.cat([smallest, d.topk(min(k + 1, d.shape[1]), dim=1, largest=False).values], 1)
            smallest = smallest.topk(min(k + 1, smallest.shape[1]), dim=1, largest=False).values
        radii[rows] = smallest.kthvalue(k + 1, dim=1).values
    return radii


def _evaluator_distances(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One block of the evaluator's ``DistanceBlock``: the squared distances of float32 rows ``u`` to float32
    rows ``v`` in float16 (``_batch_pairwise_distances`` on the float16 casts), or in float32 where any of
    the block's float16 values is not finite (its ``tf.cond``); float32 |u|×|v|."""
    u16, v16 = u.half(), v.half()
    d = _evaluator_formula(_evaluator_norms(u16), _evaluator_product(u16, v16), _evaluator_norms(v16))
    if bool(torch.isfinite(d).all()):
        return d.float()
    return _evaluator_formula(_evaluator_norms(u), _evaluator_product(u, v), _evaluator_norms(v))


def _evaluator_norms(x: torch.Tensor) -> torch.Tensor:
    """``reduce_sum(square(x), 1)`` in x's dtype: each square rounded to it, the sum accumulated exactly
    (float16 squares sum exactly in float64) and rounded through float32 to it."""
    return (x * x).double().sum(1).float().to(x.dtype)


def _evaluator_product(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``matmul(u, v, transpose_b=True)`` in u's dtype: accumulated in float64, rounded through float32
    to it; by row blocks of bounded memory."""
    out = torch.empty(u.shape[0], v.shape[0], dtype=u.dtype, device=u.device)
    v64 = v.double()
    for rows in _row_blocks(u.shape[0], max(1, _PAIR_BYTES // (8 * max(1, v.shape[0])))):
        out[rows] = (u[rows].double() @ v64.T).float().to(u.dtype)
    return out


def _evaluator_formula(norm_u: torch.Tensor, product: torch.Tensor, norm_v: torch.Tensor) -> torch.Tensor:
    """``maximum(norm_u - 2 * matmul + norm_v, 0)`` in the operands' dtype, each operation rounded to it
    (an overflow to inf included: inf − inf is NaN, which sends a float16 block to float32)."""
    return ((norm_u[:, None] - 2 * product) + norm_v[None, :]).clamp_min_(0)
