"""Precision, recall, density and coverage from k-nearest-neighbour balls, equal to prdc 0.2's
``compute_prdc`` (Kynkäänniemi et al. 2019; Naeem et al. 2020).

Each real feature xᵢ gets a ball of radius rᵢ, the distance to its k-th nearest other real feature (the
(k+1)-th smallest distance in its row, its own 0 counted, as prdc takes it); each fake yⱼ a ball r'ⱼ among
the fakes. With d(i, j) = ‖xᵢ − yⱼ‖ and prdc's strict ``<``:

    precision = fraction of fakes in some real ball           (∃i: d(i, j) < rᵢ)
    recall    = fraction of reals in some fake ball           (∃j: d(i, j) < r'ⱼ)
    density   = (1/k) · mean over fakes of the real balls holding each
    coverage  = fraction of real balls holding some fake      (minⱼ d(i, j) < rᵢ)

No distance matrix is held whole: blocks of rows are compared with all columns, each block's squared
distances from one float32 matrix product on the device (both sides centred on the real mean first, which
shrinks the product's rounding). Each such value comes with a proven bound on its distance from the value
prdc computes, so most comparisons are decided from it; a comparison inside that bound (a radius
candidate, a pair near a ball's surface, exact ties) is decided by recomputing the distance as prdc
does — sklearn's ‖x‖² − 2x·y + ‖y‖² in float64, rounded to float32 when both inputs are float32, clipped
at 0, square root in that precision — and comparing it with prdc's ``<``.

The comparisons then come out as prdc's, except where the float64 rounding of a dot product differs
between BLAS kernels and that difference decides: a float64 value within float64 rounding of a float32
rounding boundary, or a radius made of rounding noise (a feature with k or more exact duplicates; its
radius is then ~1e-7, prdc's and fidfast's noise alike). Cost: three N×M×d float32 matrix products and
work linear in the N×M distances, in blocks of about :data:`BLOCK_BYTES`.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from fidfast.errors import FidfastError

ArrayLike = Union[np.ndarray, torch.Tensor]
BLOCK_BYTES = 1 << 30  # working memory of one block of distances (beyond the features themselves)
_BYTES_PER_DISTANCE = 64  # the block's float32 product, float64 values and bounds, masks and temporaries
_PAIR_BYTES = 1 << 26  # the float64 rows gathered per batch of exact recomputations
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
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
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
    """One side's features, prepared once: the originals (for exact recomputation), sklearn's float64
    squared norms, the centred float32 copy for the block products, and each row's share of the bound."""

    def __init__(self, x: torch.Tensor, centre: torch.Tensor) -> None:
        x64 = x.double()
        self.x, self.n, self.d = x, x.shape[0], x.shape[1]
        self.sq_norms = (x64 * x64).sum(1)  # sklearn's row_norms(squared=True), in float64
        self.centred = (x64 - centre).float()
        c64 = self.centred.double()
        self.centred_sq = (c64 * c64).sum(1)
        self.centred_norm = self.centred_sq.sqrt()
        # |block value − prdc's float64 value| ≤ 2γ‖x̃ᵢ‖‖ỹⱼ‖ + slackᵢ + slackⱼ (see _bound): the float32
        # product's rounding (γ), the float32 rounding of the centred features (≤ 6u(‖x̃‖² + ‖ỹ‖²)) and
        # the float64 roundings of prdc's formula and of this one.
        self.slack = 6 * _U32 * self.centred_sq + 4 * (self.d + 4) * _U64 * (self.sq_norms + self.centred_sq)


def _gamma(d: int) -> float:
    """Higham's γ for a float32 dot product of length d, any summation order."""
    return (d + 2) * _U32 / (1 - (d + 2) * _U32)


def _block_values(a: _Side, rows: slice, b: _Side) -> Tuple[torch.Tensor, torch.Tensor]:
    """Squared distances of ``a``'s rows to all of ``b`` from one float32 product (float64 rows×M), and
    their bound: twice the proven one, for the roundings this accounting rounds up."""
    product = (a.centred[rows] @ b.centred.T).double()
    values = (a.centred_sq[rows, None] + b.centred_sq[None, :]) - 2 * product
    bound = 2 * (2 * _gamma(a.d) * a.centred_norm[rows, None] * b.centred_norm[None, :]
                 + a.slack[rows, None] + b.slack[None, :])
    return values, bound


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


def _row_blocks(n_rows: int, n_cols: int, block_rows: Optional[int]) -> Iterator[slice]:
    step = block_rows or max(1, BLOCK_BYTES // (_BYTES_PER_DISTANCE * n_cols))
    for start in range(0, n_rows, step):
        yield slice(start, min(n_rows, start + step))


def _radii(side: _Side, k: int, block_rows: Optional[int]) -> torch.Tensor:
    """Each row's distance to its k-th nearest other row, prdc's value (dtype: the side's distances).

    Per block: the m smallest block values are candidates (the row itself, at distance 0, always among
    them); their exact distances give the (k+1)-th smallest. That is the row's radius when every other
    row's value, less the bound, is at least its square — else the row is recomputed whole, exactly."""
    dtype = _distance_dtype(side, side)
    radii = torch.empty(side.n, dtype=dtype, device=side.x.device)
    m = min(side.n, k + 5)
    max_norm, max_slack = float(side.centred_norm.max()), float(side.slack.max())
    for rows in _row_blocks(side.n, side.n, block_rows):
        index = torch.arange(rows.start, rows.stop, device=side.x.device)
        values, _ = _block_values(side, rows, side)
        values[index - rows.start, index] = -float("inf")  # prdc sets the self-distance to 0
        candidate_values, candidates = torch.topk(values, m, dim=1, largest=False)
        exact = _exact_pairs(side, index, side, candidates, dtype)
        exact[candidates == index[:, None]] = 0
        r = exact.sort(dim=1).values[:, k]
        if m < side.n:
            bound = 2 * (2 * _gamma(side.d) * side.centred_norm[rows] * max_norm + side.slack[rows] + max_slack)
            unproven = candidate_values[:, -1] - bound < r.double() ** 2 * (1 + 4 * _U64)
            if bool(unproven.any()):
                redo = index[unproven]
                whole = _exact_rows(side, redo, side, dtype)
                whole[torch.arange(len(redo), device=redo.device), redo] = 0
                r[unproven] = whole.kthvalue(k + 1, dim=1).values
        radii[rows] = r
    return radii


def _inside(r2: torch.Tensor, u: float) -> torch.Tensor:
    """The largest squared distance s that surely gives d < r: r²(1 − 4u), where rounding s to the
    distances' dtype (unit roundoff u) and the square root cannot reach r; none for r = 0. From r² up,
    d ≥ r surely (√fl(r²) = r, and both roundings are monotone)."""
    return torch.where(r2 > 0, r2 * (1 - 4 * u), -float("inf"))


def _cross(real: _Side, fake: _Side, real_radii: torch.Tensor, fake_radii: torch.Tensor,
           block_rows: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Over all real×fake distances: per fake, the number of real balls holding it; per real, whether its
    ball holds a fake (coverage) and whether it lies in a fake ball (recall)."""
    dtype = _distance_dtype(real, fake)
    u = _U32 if dtype == torch.float32 else _U64
    device = real.x.device
    in_real_balls = torch.zeros(fake.n, dtype=torch.int64, device=device)
    covered = torch.zeros(real.n, dtype=torch.bool, device=device)
    recalled = torch.zeros(real.n, dtype=torch.bool, device=device)
    r2_fake = fake_radii.double() ** 2
    inside_fake = _inside(r2_fake, u)
    for rows in _row_blocks(real.n, fake.n, block_rows):
        values, bound = _block_values(real, rows, fake)
        r2_real = real_radii[rows].double()[:, None] ** 2
        below, above = values + bound, values - bound
        # Decided from the block when the whole bound lies on one side of r² (_inside); between, recomputed.
        real_in = below <= _inside(r2_real, u)
        fake_in = below <= inside_fake
        unsure = (~real_in & (above < r2_real * (1 + 4 * _U64))) | (~fake_in & (above < r2_fake * (1 + 4 * _U64)))
        i, j = unsure.nonzero(as_tuple=True)
        if i.numel() > unsure.numel() // 8:  # degenerate features (many ties): the block's own product is cheaper
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
