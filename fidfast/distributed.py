"""What the ranks of a process group say to each other: who speaks, who takes which files, the merge.

Distribution happens at one level, the statistics (:func:`fidfast.pipeline.statistics`): each rank
takes a shard of an input's files, accumulates its own statistics, and every rank gets the exact merge.
Nothing below that level (decoding, features, the drop-in's ``get_activations``) communicates.

* :func:`shard` gives each rank one contiguous block of the input list (sizes differ by at most one;
  a rank may get none). Contiguous, not strided: the blocks concatenated in rank order are the input
  in its original order, so the rank-order merge folds the images in the order one process sees them,
  and each rank reads neighbouring files (directory and archive locality). It first checks that all
  ranks list the same inputs (count and names), since a rank that saw another list would drop or
  double images.
* :func:`merge` merges the ranks' statistics exactly with :meth:`FeatureStats.merge_`, in rank order,
  on every rank: a small all_gather of the counts, then one broadcast per non-empty rank of its
  float64 mean and co-moment, folded in as it arrives. That keeps one extra d×d buffer per rank
  (32 MiB at d = 2048) whatever the world size, where an all_gather would hold world_size of them.
  Gloo communicates CPU tensors, NCCL CUDA tensors; the statistics move to the backend's device and back.

* :func:`concatenate` gathers the ranks' features for the metrics that need them (KID).

Outside a process group (or world size 1, or inside :func:`single_process`) every function is a cheap
no-op: one process, all of the input. Joining and leaving the group is :mod:`fidfast.launch`.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import PurePath
from typing import Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch

from fidfast.errors import FidfastError
from fidfast.launch import group_world_size, torch_distributed
from fidfast.stats import FeatureStats

T = TypeVar("T")

_single_depth = 0  # > 0 inside single_process()


def _active() -> bool:
    return _single_depth == 0 and group_world_size() > 1


# -- who am I ----------------------------------------------------------------------------------------

def world_size() -> int:
    """Number of ranks taking part (1 outside a process group or inside :func:`single_process`)."""
    return group_world_size() if _single_depth == 0 else 1


def rank() -> int:
    """This process's rank (0 outside a process group or inside :func:`single_process`)."""
    return torch_distributed().get_rank() if _active() else 0


def is_primary() -> bool:
    """True on the rank that prints and writes files (rank 0; always True in one process)."""
    return rank() == 0


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Within this block fidfast ignores the process group: this rank alone computes all of its input.

    For a distributed job that scores on one rank only (``if rank == 0: fidfast.calculate_fid(...)``);
    without it, the other ranks would never join the merge and rank 0 would wait for them.
    """
    global _single_depth
    _single_depth += 1
    try:
        yield
    finally:
        _single_depth -= 1


# -- sharding --------------------------------------------------------------------------------------

def shard_bounds(n: int, rank: int, world_size: int) -> Tuple[int, int]:
    """[start, stop) of rank's contiguous block of n items: sizes differ by at most one, blocks in rank order."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
    return rank * n // world_size, (rank + 1) * n // world_size


def shard(items: Sequence[T], rank: Optional[int] = None, world_size: Optional[int] = None) -> List[T]:
    """This rank's share of ``items``: disjoint across ranks, all of them together, each item once.

    With ``rank`` and ``world_size`` given, the share of that rank (no communication). Else the process
    group decides; all ranks must call this together, with the same items (checked: FidfastError if not).
    """
    items = list(items)
    if rank is None and world_size is None:
        if not _active():
            return items
        _check_same_items(items)
        dist = torch_distributed()
        rank, world_size = dist.get_rank(), dist.get_world_size()
    elif rank is None or world_size is None:
        raise ValueError("pass both rank and world_size, or neither")
    start, stop = shard_bounds(len(items), rank, world_size)
    return items[start:stop]


def _name(item) -> str:
    """The file name that identifies an input (a path's last part; an archive member's name)."""
    if isinstance(item, tuple):
        return str(item[-1])
    if isinstance(item, (str, os.PathLike)):
        return PurePath(item).name
    return str(item)


def _check_same_items(items: List) -> None:
    digest = hashlib.blake2b("\n".join(map(_name, items)).encode("utf-8", "surrogateescape"), digest_size=8)
    seen = _exchange(1, len(items), int.from_bytes(digest.digest(), "little", signed=True))
    for r, (n, h) in enumerate(seen):
        if (n, h) != tuple(seen[0]):
            how = f"{seen[0][0]} vs {n} images" if n != seen[0][0] else "the same count, other names or order"
            raise FidfastError(f"the ranks see different inputs (rank 0 and rank {r}: {how}); every rank must "
                               "list the same images (same paths on a shared file system)")


def all_ranks(flag: bool) -> bool:
    """True when ``flag`` is True on every rank (a collective: all ranks call it together); ``flag`` alone
    in one process. For decisions every rank must take alike, such as using a cached result instead of
    computing: a rank that computed alone would wait forever in :func:`merge`."""
    if not _active():
        return bool(flag)
    return all(row[0] for row in _exchange(3, int(bool(flag))))


# -- merging ---------------------------------------------------------------------------------------

def _comm_device(local: torch.device) -> torch.device:
    """Where the default group's backend communicates tensors, preferring the statistics' own device."""
    dist = torch_distributed()
    try:
        config = dist.get_backend_config()
        backends = dict(part.split(":", 1) for part in config.split(",") if ":" in part)
    except (AttributeError, ValueError, RuntimeError):
        backends = {"cuda": "nccl"} if dist.get_backend() == "nccl" else {"cpu": dist.get_backend()}
    cuda_backend = backends.get("cuda")
    if local.type == "cuda" and cuda_backend not in (None, "gloo"):
        return local  # NCCL: the statistics' own GPU (in the user's group it may not be the current one)
    if "cpu" in backends:
        return torch.device("cpu")
    if cuda_backend is not None:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# What each rank is doing when it exchanges a header; a mismatch means the ranks are out of step.
_STEPS = {1: "listing its inputs (shard)", 2: "merging statistics", 3: "agreeing on a decision (all_ranks)",
          4: "gathering features"}
_HEADER = 4  # int64s per exchange, the same for every step so that a mismatch is reported, not a crash


def _collective(doing: str, op, *args, **kwargs) -> None:
    """Run a collective; a peer that went away (it failed, and says why in its own output) is one line."""
    try:
        op(*args, **kwargs)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise FidfastError(f"lost contact with the other ranks while {doing}; another rank has probably failed "
                           f"(see its message): {first}") from None


def _exchange(step: int, *values: int) -> List[List[int]]:
    """all_gather of a step tag and up to 3 ints; every rank gets every rank's values in rank order.

    Raises FidfastError on every rank when the ranks are at different steps (say, one rank found a
    cached result and skipped a computation that the others do), instead of a hang or a mismatch.
    """
    dist = torch_distributed()
    row = torch.tensor([step, *values, *[0] * (_HEADER - 1 - len(values))], dtype=torch.int64)
    row = row.to(_comm_device(torch.device("cpu")))
    out = [torch.empty_like(row) for _ in range(dist.get_world_size())]
    _collective(_STEPS[step], dist.all_gather, out, row)
    rows = [r.tolist() for r in out]
    if any(r[0] != step for r in rows):
        doing = "; ".join(f"rank {i} is {_STEPS.get(r[0], f'at step {r[0]}')}" for i, r in enumerate(rows))
        raise FidfastError(f"the ranks are out of step ({doing}): every rank must make the same fidfast calls "
                           "on the same inputs")
    return [r[1: 1 + len(values)] for r in rows]


def merge(stats: FeatureStats, skipped: int) -> Tuple[FeatureStats, int]:
    """Exact merge of every rank's statistics, in rank order; every rank gets the same result.

    Returns ``(merged FeatureStats on stats' device, total skipped)``. Ranks with no images (n = 0)
    contribute nothing. Outside a process group: ``(stats, skipped)`` unchanged.
    """
    if not _active():
        return stats, skipped
    dist = torch_distributed()
    me = dist.get_rank()
    device = stats.device
    headers = _exchange(2, stats.dims, -1 if stats.n is None else stats.n, int(skipped))
    dims = sorted({h[0] for h in headers})
    if len(dims) != 1:
        raise FidfastError(f"cannot merge statistics across ranks: the ranks have dims {dims}")
    if any(h[1] < 0 for h in headers):
        raise FidfastError("cannot merge statistics without a sample count across ranks")
    d = dims[0]
    merged = FeatureStats(d, device=device)
    merged.meta = dict(stats.meta)
    comm = _comm_device(device)
    buf = torch.empty(d + d * d, dtype=torch.float64, device=comm)
    for src, (_, n_src, _) in enumerate(headers):
        if n_src == 0:
            continue
        if src == me:
            buf[:d].copy_(stats.mean)
            buf[d:].view(d, d).copy_(stats.comoment)
        _collective(_STEPS[2], dist.broadcast, buf, src=src)
        part = buf.to(device)
        merged.merge_(FeatureStats.from_comoment(part[:d], part[d:].view(d, d), n_src))
    return merged, sum(h[2] for h in headers)


def concatenate(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (N_r×d) stacked in rank order, on every rank: for metrics that need the features
    themselves (KID), which under torchrun come in the order one process would see them. ``rows`` alone
    outside a process group. Holds world size × the largest N_r rows while gathering."""
    if not _active():
        return rows
    dist = torch_distributed()
    headers = _exchange(4, rows.shape[0], rows.shape[1])
    widths = sorted({h[1] for h in headers})
    if len(widths) != 1:
        raise FidfastError(f"cannot gather features across ranks: the ranks have widths {widths}")
    comm = _comm_device(rows.device)
    padded = torch.zeros(max(h[0] for h in headers), widths[0], dtype=rows.dtype, device=comm)
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in headers]
    _collective(_STEPS[4], dist.all_gather, gathered, padded)
    return torch.cat([g[:n].to(rows.device) for g, (n, _) in zip(gathered, headers)])
