"""torch.distributed scale-out: each rank computes the statistics of its shard; an exact merge gives all the whole.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the command line joins a process group
(:func:`init_from_env`: NCCL when the device is CUDA, else Gloo; one GPU per rank, ``cuda:LOCAL_RANK``).
Inside a process group that the user already initialised, the Python API uses that group as it is, so
``fidfast.compute_stats(...)`` called on every rank returns the merged statistics on every rank.

* :func:`shard` gives each rank one contiguous block of the input list (sizes differ by at most one;
  a rank may get none). Contiguous, not strided: the blocks concatenated in rank order are the input
  in its original order, so the rank-order merge folds the images in the order one process sees them,
  and each rank reads neighbouring files (directory and archive locality). It first checks that all
  ranks list the same inputs (count and names), since a rank that saw another list would drop or
  double images.
* :func:`merge_stats` merges the ranks' (n, mean, co-moment) exactly (Chan et al.), in rank order, on
  every rank: a small all_gather of the counts, then one broadcast per non-empty rank of its float64
  mean and co-moment, folded in as it arrives. That keeps one extra d×d buffer per rank (32 MiB at
  d = 2048) whatever the world size, where an all_gather would hold world_size of them. Gloo
  communicates CPU tensors, NCCL CUDA tensors; the statistics move to the backend's device and back.

Outside a process group (or world size 1, or inside :func:`single_process`) every function is a cheap
no-op: one process, all of the input.
"""
from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import PurePath
from typing import Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import torch

from fidfast import _ops
from fidfast.errors import FidfastError

T = TypeVar("T")

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_single_depth = 0  # > 0 inside single_process()
_owned_group = False  # True when init_from_env created the default group (and so destroys it at exit)


def _dist():
    """torch.distributed, or None on builds without it."""
    import torch.distributed as dist

    return dist if dist.is_available() else None


def _group_world() -> int:
    """World size of the initialised default process group, 1 when there is none."""
    dist = _dist()
    if dist is None or not dist.is_initialized():
        return 1
    return dist.get_world_size()


def _active() -> bool:
    return _single_depth == 0 and _group_world() > 1


# -- who am I ----------------------------------------------------------------------------------------

def world_size() -> int:
    """Number of ranks taking part (1 outside a process group or inside :func:`single_process`)."""
    return _group_world() if _single_depth == 0 else 1


def rank() -> int:
    """This process's rank (0 outside a process group or inside :func:`single_process`)."""
    return _dist().get_rank() if _active() else 0


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


# -- torchrun --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TorchrunEnv:
    world_size: int
    rank: int
    local_rank: int
    master: str  # MASTER_ADDR:MASTER_PORT


def _env_int(name: str) -> int:
    value = os.environ[name]
    try:
        return int(value)
    except ValueError:
        raise FidfastError(f"torchrun environment: {name}={value!r} is not an integer") from None


def torchrun_env() -> Optional[TorchrunEnv]:
    """The launch that torchrun describes in the environment, None when not launched for several ranks.

    Raises FidfastError when ``WORLD_SIZE`` > 1 but the rest of it is missing or inconsistent.
    """
    if not os.environ.get("WORLD_SIZE"):
        return None
    world = _env_int("WORLD_SIZE")
    if world < 1:
        raise FidfastError(f"torchrun environment: WORLD_SIZE={world} must be at least 1")
    if world == 1:
        return None
    missing = [name for name in _TORCHRUN_VARS if not os.environ.get(name)]
    if missing:
        raise FidfastError(f"WORLD_SIZE={world} asks for a distributed run, but {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not set: launch with torchrun "
                           "(torchrun --nproc_per_node N -m fidfast ...), or unset WORLD_SIZE for one process")
    rank_, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank_ < world:
        raise FidfastError(f"torchrun environment: RANK={rank_} is not in 0..{world - 1} (WORLD_SIZE={world})")
    if local < 0:
        raise FidfastError(f"torchrun environment: LOCAL_RANK={local} must be at least 0")
    _env_int("MASTER_PORT")
    return TorchrunEnv(world, rank_, local, f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}")


def _device_type(device) -> Optional[str]:
    if device is None:
        return None
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return None  # not a device: the run configuration reports it


def init_from_env(device: Union[str, torch.device, None] = None) -> None:
    """Join the process group that torchrun describes in the environment; a no-op otherwise.

    When a process group is already initialised (fidfast called inside the user's own distributed job)
    it is used as it is. Else, when launched for several ranks, initialise one: NCCL when CUDA is
    available and the device (``device``, or the default when None) is CUDA, Gloo otherwise; with CUDA
    the rank's device is ``cuda:LOCAL_RANK``. Environment or rendezvous problems raise FidfastError.
    """
    global _owned_group
    dist = _dist()
    if dist is not None and dist.is_initialized():
        return
    env = torchrun_env()
    if env is None:
        return
    if dist is None:
        raise FidfastError(f"WORLD_SIZE={env.world_size} asks for a distributed run, but this PyTorch "
                           "build has no torch.distributed")
    use_cuda = torch.cuda.is_available() and _device_type(device) in (None, "cuda")
    if use_cuda:
        count = torch.cuda.device_count()
        if env.local_rank >= count:
            raise FidfastError(f"LOCAL_RANK={env.local_rank}, but this node has {count} CUDA device(s): start at "
                               f"most {count} processes per node (torchrun --nproc_per_node {count}), or use "
                               "--device cpu")
        torch.cuda.set_device(env.local_rank)
    backend = "nccl" if use_cuda and dist.is_nccl_available() else "gloo"
    kwargs = {"device_id": torch.device("cuda", env.local_rank)} if backend == "nccl" else {}
    try:
        dist.init_process_group(backend=backend, init_method="env://", **kwargs)
    except (RuntimeError, ValueError, OSError, TimeoutError) as exc:
        first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0]
        raise FidfastError(f"cannot join the {backend} process group at {env.master} as rank {env.rank} of "
                           f"{env.world_size}: {first}") from None
    _owned_group = True
    atexit.register(_shutdown)


def _shutdown() -> None:
    global _owned_group
    dist = _dist()
    if _owned_group and dist is not None and dist.is_initialized():
        _owned_group = False
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` for a rank of a distributed run on CUDA, ``cuda`` with CUDA otherwise, else ``cpu``."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    launched = _group_world() > 1
    if not launched:
        try:
            launched = int(os.environ.get("WORLD_SIZE") or 1) > 1
        except ValueError:
            launched = False
    if launched:
        try:
            local = int(os.environ["LOCAL_RANK"])
        except (KeyError, ValueError):
            local = -1
        if 0 <= local < torch.cuda.device_count():
            return torch.device("cuda", local)
        if _group_world() > 1:  # the user's own job, e.g. one visible GPU per process: theirs is current
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda")


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
        rank, world_size = _dist().get_rank(), _dist().get_world_size()
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
    computing: a rank that computed alone would wait forever in :func:`merge_stats`."""
    if not _active():
        return bool(flag)
    return all(row[0] for row in _exchange(3, int(bool(flag))))


# -- merging ---------------------------------------------------------------------------------------

def _comm_device(local: torch.device) -> torch.device:
    """Where the default group's backend communicates tensors, preferring the statistics' own device."""
    dist = _dist()
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
_STEPS = {1: "listing its inputs (shard)", 2: "merging statistics", 3: "agreeing on a decision (all_ranks)"}
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
    dist = _dist()
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


def merge_stats(stats, skipped: int):
    """Exact merge of every rank's statistics, in rank order; every rank gets the same result.

    Returns ``(merged FeatureStats on stats' device, total skipped)``. Ranks with no images (n = 0)
    contribute nothing. Outside a process group: ``(stats, skipped)`` unchanged.
    """
    if not _active():
        return stats, skipped
    from fidfast.stats import FeatureStats

    dist = _dist()
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
            buf[d:].view(d, d).copy_(stats._comoment)
        _collective(_STEPS[2], dist.broadcast, buf, src=src)
        part = buf.to(device)
        _ops.cov_merge_(merged._mean, merged._comoment, merged._n, part[:d], part[d:].view(d, d), n_src)
        merged._n += n_src
    return merged, sum(h[2] for h in headers)
