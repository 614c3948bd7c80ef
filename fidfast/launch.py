"""Process-group lifecycle: joining the group that ``torchrun`` describes, and each rank's device.

Launched by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the command line joins a process group
(:func:`init_from_env`: NCCL when the device is CUDA, else Gloo; one GPU per rank, ``cuda:LOCAL_RANK``)
and leaves it at exit. Inside a process group that the user already initialised, fidfast uses that
group as it is. What the ranks then say to each other is :mod:`fidfast.distributed`.
"""
from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

from fidfast.errors import FidfastError

_TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_owned_group = False  # True when init_from_env created the default group (and so destroys it at exit)


def torch_distributed():
    """torch.distributed, or None on builds without it."""
    import torch.distributed as dist

    return dist if dist.is_available() else None


def group_world_size() -> int:
    """World size of the initialised default process group, 1 when there is none."""
    dist = torch_distributed()
    if dist is None or not dist.is_initialized():
        return 1
    return dist.get_world_size()


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
    rank, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= rank < world:
        raise FidfastError(f"torchrun environment: RANK={rank} is not in 0..{world - 1} (WORLD_SIZE={world})")
    if local < 0:
        raise FidfastError(f"torchrun environment: LOCAL_RANK={local} must be at least 0")
    _env_int("MASTER_PORT")
    return TorchrunEnv(world, rank, local, f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}")


def _device_type(device) -> Optional[str]:
    if device is None:
        return None
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return None  # not a device: the settings report it


def init_from_env(device: Union[str, torch.device, None] = None) -> None:
    """Join the process group that torchrun describes in the environment; a no-op otherwise.

    When a process group is already initialised (fidfast called inside the user's own distributed job)
    it is used as it is. Else, when launched for several ranks, initialise one: NCCL when CUDA is
    available and the device (``device``, or the default when None) is CUDA, Gloo otherwise; with CUDA
    the rank's device is ``cuda:LOCAL_RANK``. Environment or rendezvous problems raise FidfastError.
    """
    global _owned_group
    dist = torch_distributed()
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
    dist = torch_distributed()
    if _owned_group and dist is not None and dist.is_initialized():
        _owned_group = False
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` for a rank of a distributed run on CUDA, ``cuda`` with CUDA otherwise, else ``cpu``."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    launched = group_world_size() > 1
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
        if group_world_size() > 1:  # the user's own job, e.g. one visible GPU per process: theirs is current
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cuda")
