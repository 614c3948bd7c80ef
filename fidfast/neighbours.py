"""Precision, recall, density and coverage from k-nearest-neighbour balls, equal to prdc 0.2's
``compute_prdc`` (Kynkäänniemi et al. 2019; Naeem et al. 2020).

Each real feature xᵢ gets a ball of radius rᵢ, the distance to its k-th nearest other real feature (the
(k+1)-th smallest distance in its row, its own 0 counted, as prdc takes it); each fake yⱼ a ball r'ⱼ among
the fakes. With d(i, j) = ‖xᵢ − yⱼ‖ and prdc's strict ``<``:

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
``<``.

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
import math
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from fidfast.errors import FidfastError

ArrayLike = Union[np.ndarray, torch.Tensor]
BLOCK_BYTES = 1 << 30  # working memory of one block of distances (beyond the features themselves)
_BYTES_PER_DISTANCE = 32  # the block's float32 values, sums beside them, masks
_PAIR_BYTES = 1 << 23  # float64 rows gathered per batch of exact recomputations (cache-sized: 5× faster than 64 MiB)
_U32, _U64 = 2.0 ** -24, 2.0 ** -53  # unit roundoffs


def prdc(real_features: ArrayLike, fake_features: ArrayLike, k: int = 5, *,
         block_rows: Optional[int] = None) -> Dict[str, float]:
    """Precision, recall, density and coverage of ``fake_features`` against ``real_features``.

    Equal to ``prdc.compute_prdc(real_features, fake_features, nearest_k=k)`` (prdc 0.2) on the same
    arrays; see the module docstring for how, and the one exception.

    Args:
        real_features, fake_features: N×d and M×d arrays or tensors, finite, equal d; float32 (then the
            distances are float32, as prdc's) or any other real dtype (float64 distances). Tensors are
            computed on their device, arrays on the CPU. N, M ≥ k + 1 (prdc itself needs k + 2).
        k: the neighbour that sets each ball's radius (prdc's ``nearest_k``), ≥ 1.
        block_rows: rows per block of distances (default: as many as fit in :data:`BLOCK_BYTES`).
    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as Python floats; density may exceed 1.
    """
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
    with _ieee_float32_products():
        centre = real.double().mean(0)
        sides = _Side(real, centre), _Side(fake, centre)
        radii = [_radii(s, k, block_rows) for s in sides]
        in_real_balls, covered, recalled = _cross(*sides, *radii, block_rows)
    m = fake.shape[0]
    return {"precision": float((in_real_balls > 0).sum()) / m,
            "recall": float(recalled.sum()) / real.shape[0],
            "density": (1.0 / float(k)) * (float(in_real_balls.sum()) / m),
            "coverage": float(covered.sum()) / real.shape[0]}


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
        # the float64 roundings of prdc's formula.
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


def _thresholds(r2: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where a squared distance s decides d < r by itself (float32): d < r surely for s ≤ r²(1 − 8u), where
    rounding s to the distances' dtype and the square root cannot reach r (none for r = 0); d ≥ r surely
    for s ≥ r², as √fl(r²) = r and both roundings are monotone (r²(1 + 8u), for the float32 sums)."""
    inside = torch.where(r2 > 0, r2 * (1 - 8 * _U32), -float("inf"))
    return inside.float(), (r2 * (1 + 8 * _U32)).float()


def _distance_dtype(a: _Side, b: _Side) -> torch.dtype:
    """prdc's distance dtype: float32 when both sides are float32 (sklearn's upcast path), else float64."""
    return torch.float32 if a.x.dtype == b.x.dtype == torch.float32 else torch.float64


def _exact(dot: torch.Tensor, sq_a: torch.Tensor, sq_b: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """prdc's distances from float64 dot products and squared norms: sklearn's (−2x·y + ‖x‖²) + ‖y‖² in
    that order, rounded to ``dtype``, clipped at 0, square root in ``dtype`` — numpy's, correctly rounded
    as IEEE asks: torch's CPU kernels are not (measured: ~17% of float32 and ~1% of float64 square roots
    one ulp off), and one ulp decides a tie."""
    squared = ((-2 * dot + sq_a) + sq_b).to(dtype).clamp_(min=0)
    return torch.from_numpy(np.sqrt(squared.cpu().numpy())).to(squared.device)


def _exact_pairs(a: _Side, i: torch.Tensor, b: _Side, j: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """prdc's distances d(a[i], b[j]) for index tensors i (R,) and j (R,) or (R, m), in batches of bounded
    memory; shape of j."""
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


def _exact_rows(a: _Side, rows: torch.Tensor, b: _Side, dtype: torch.dtype) -> torch.Tensor:
    """prdc's distances of ``a``'s rows to all of ``b`` (float64 product)."""
    dot = a.x[rows].double() @ b.x.double().T
    return _exact(dot, a.sq_norms[rows, None], b.sq_norms[None, :], dtype)


def _row_blocks(n_rows: int, step: int) -> Iterator[slice]:
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _radii(side: _Side, k: int, block_rows: Optional[int]) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row, prdc's value (dtype: the side's distances).

    The distances are symmetric: square blocks on and above the diagonal only, each giving candidates to
    its rows and (transposed) to its columns. A row's m smallest values are its candidates (itself, at
    distance 0, always among them); their exact distances give the (k+1)-th smallest. That is the row's
    radius when every other row's value, less the bound, is at least its square — else the row is
    recomputed whole, exactly."""
    dtype = _distance_dtype(side, side)
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
    exact = _exact_pairs(side, index, side, candidates, dtype)
    exact[candidates == index[:, None]] = 0
    radii = exact.sort(dim=1).values[:, k]
    if m < side.n:
        # Proven when no other row can be nearer: its value, less the bound, is at least r².
        reach = candidate_values[:, -1].double() - (side.bound + side.bound.max())
        for redo in index[reach < _thresholds(radii.double() ** 2)[1]].split(step):
            whole = _exact_rows(side, redo, side, dtype)
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
           block_rows: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over all real×fake distances: per fake, the number of real balls holding it; per real, whether its
    ball holds a fake (coverage) and whether it lies in a fake ball (recall)."""
    dtype = _distance_dtype(real, fake)
    device = real.x.device
    in_real_balls = torch.zeros(fake.n, dtype=torch.int64, device=device)
    covered = torch.zeros(real.n, dtype=torch.bool, device=device)
    recalled = torch.zeros(real.n, dtype=torch.bool, device=device)
    fake_inside, fake_outside = (t[None, :] for t in _thresholds(fake_radii.double() ** 2))
    fake_bound = fake.bound.float()[None, :]
    for rows in _row_blocks(real.n, block_rows or max(1, BLOCK_BYTES // (_BYTES_PER_DISTANCE * fake.n))):
        values = _block_values(real, rows, fake)
        real_inside, real_outside = (t[:, None] for t in _thresholds(real_radii[rows].double() ** 2))
        real_bound = real.bound[rows].float()[:, None]
        # Decided where the value's whole bound lies on one side of a threshold; between, recomputed.
        real_in = values + fake_bound <= real_inside - real_bound
        fake_in = values + real_bound <= fake_inside - fake_bound
        unsure = ~real_in & (values - fake_bound < real_outside + real_bound)
        unsure |= ~fake_in & (values - real_bound < fake_outside + fake_bound)
        i, j = unsure.nonzero(as_tuple=True)
        if i.numel() > unsure.numel() // 256:  # then the block's own float64 product is cheaper (measured)
            d = _exact_rows(real, torch.arange(rows.start, rows.stop, device=device), fake, dtype).double()
            real_in, fake_in = d < real_radii[rows].double()[:, None], d < fake_radii.double()[None, :]
        elif i.numel():
            d = _exact_pairs(real, i + rows.start, fake, j, dtype).double()
            real_in[i, j] = d < real_radii[i + rows.start].double()
            fake_in[i, j] = d < fake_radii[j].double()
        in_real_balls += real_in.sum(0)
        covered[rows] = real_in.any(1)
        recalled[rows] = fake_in.any(1)
    return in_real_balls.cpu(), covered.cpu(), recalled.cpu()
