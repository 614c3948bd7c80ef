"""How features are computed: one keyword-only, validated settings object, built at each API edge.

The command line, :func:`fidfast.compute_stats`, :class:`fidfast.FID` and the drop-in build a
:class:`Settings` before any file is listed, so a bad value is refused at once; the stages below take
it as it is. Values are resolved when it is built (``device=None`` → the default device,
``precision="auto"`` → fp16 on CUDA, fp32 elsewhere, batch size and workers by device); the weights
are resolved on first use, once (two statistics files need none).
"""
from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass, field, replace
from typing import Optional, Union

import torch
from torch import nn

from fidfast import distributed, launch
from fidfast.errors import FidfastError, warn
from fidfast.features import module_digest, module_width
from fidfast.network import DIMS
from fidfast.preprocess import PROTOCOLS, Protocol, protocols_of
from fidfast.weights import Weights, resolve_weights

PRECISIONS = ("auto", "fp32", "fp16")
DEFAULT_DIMS = 2048
DEFAULT_PROTOCOL = "pytorch-fid"


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """None → the default device (:func:`fidfast.launch.default_device`); a CUDA device that does not
    exist is a user error; ``cuda`` is pinned to the current CUDA device."""
    if device is None:
        device = launch.default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FidfastError(f"--device {device!r}: not a device (try cpu, cuda or cuda:0)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FidfastError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FidfastError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        if dev.index is None:  # pinned now: the cached model and later batches must agree after set_device
            dev = torch.device("cuda", torch.cuda.current_device())
    elif dev.type != "cpu":
        raise FidfastError(f"--device {device}: fidfast runs on cpu or cuda")
    return dev


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is fp16 on CUDA and fp32 elsewhere; fp16 needs CUDA."""
    if precision not in PRECISIONS:
        raise FidfastError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise FidfastError("--precision fp16 needs a CUDA device (fp16 convolutions on CPU are slow and "
                           "not what FID tools compare against); use fp32 or auto")
    return precision


def default_batch_size(device: torch.device) -> int:
    return 500 if device.type == "cuda" else 50


def usable_cpus() -> int:
    """The CPUs this process may use (its affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_num_workers(device: torch.device) -> int:
    """Decoding processes. On CUDA every CPU but the one the main process feeds the GPU from: decoding is
    what bounds the rate there. On the CPU one per 8 CPUs: the network takes every core and decodes ~50×
    slower than a core decodes, so more workers only take cores from it."""
    cpus = usable_cpus()
    return max(1, cpus - 1) if device.type == "cuda" else max(1, min(8, cpus // 8))


def _whole(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FidfastError(f"--{name.replace('_', '-')} must be a whole number ≥ {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything that says how features are computed, validated and resolved when built.

    Args (all keyword-only; each has a default):
        dims: feature dims, 64, 192, 768 or 2048 (pool3, the standard FID); None: 2048, or the dims of
            a statistics file that images are compared with (``dims_given`` says which).
        protocol: how pixels become the network's input, as one FID tool does it: ``pytorch-fid``,
            ``tf``, ``clean`` or ``torchmetrics`` (:data:`fidfast.preprocess.PROTOCOLS`); None:
            pytorch-fid's, or the protocol a statistics file records (``protocol_given`` says which).
        device: ``cpu``, ``cuda`` or ``cuda:N``; None = CUDA when available (``cuda:LOCAL_RANK`` under
            torchrun), else the CPU.
        precision: ``auto`` (fp16 on CUDA, fp32 elsewhere), ``fp32`` (pytorch-fid's numbers) or ``fp16``.
        weights: the FID Inception weights file (None: resolved as README's "Weights" says).
        batch_size: images per batch (None: 500 on CUDA, 50 on the CPU).
        num_workers: decoding processes (None: the CPUs less one on CUDA, one per 8 CPUs on the CPU; 0
            decodes in this process).
        skip_bad_images: skip unreadable images (counted, warned about) instead of stopping.
        progress: a progress line on stderr (None: when stderr is a terminal, on rank 0 only).
        cache: read and write the statistics cache.
        recursive: read the images in a folder's subfolders too.
        compile: run the FID Inception compiled ahead of time for this GPU (AOTInductor, CUDA only): built
            once per GPU kind, torch version, precision and batch size and cached; faster, features within
            the precision's rounding of the default network's.
        features: an ``nn.Module`` to use instead of the FID Inception (DINOv2, CLIP, ...): it gets float
            N×3×S×S in [0, 1] in its parameters' dtype on ``device``, S its ``input_size`` (resampled by the
            protocol's filter; without one, images at their own size) and returns N×D; D is its
            ``num_features`` or found by one call. ``dims`` is then D; ``weights`` and ``precision`` do not
            apply (README: "Any feature network").
    """

    dims: Optional[int] = None
    protocol: Optional[str] = None
    device: Union[str, torch.device, None] = None
    precision: str = "auto"
    weights: Union[str, os.PathLike, Weights, None] = None
    batch_size: Optional[int] = None
    num_workers: Optional[int] = None
    skip_bad_images: bool = False
    progress: Optional[bool] = None
    cache: bool = True
    recursive: bool = False
    compile: bool = False
    features: Optional[nn.Module] = None
    dims_given: bool = field(init=False, default=True)
    protocol_given: bool = field(init=False, default=True)

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        device = resolve_device(self.device)
        if self.features is not None:
            self._check_features(device)
            set_("dims", module_width(self.features, device))
        elif self.dims is None:
            set_("dims", DEFAULT_DIMS)
            set_("dims_given", False)
        elif self.dims not in DIMS:
            raise FidfastError(f"--dims must be one of {', '.join(map(str, DIMS))}, got {self.dims!r}")
        if self.protocol is None:
            set_("protocol", DEFAULT_PROTOCOL)
            set_("protocol_given", False)
        elif self.protocol not in PROTOCOLS:
            raise FidfastError(f"--protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        elif self.features is None and PROTOCOLS[self.protocol].network != "inception":
            raise FidfastError(f"--protocol {self.protocol} feeds {PROTOCOLS[self.protocol].network} (FD_DINOv2: "
                               f"--metrics fd-dinov2), not the FID Inception; its protocols: "
                               f"{', '.join(protocols_of('inception'))}")
        set_("device", device)
        set_("precision", resolve_precision(self.precision, device))
        set_("batch_size", default_batch_size(device) if self.batch_size is None
             else _whole("batch_size", self.batch_size, 1))
        set_("num_workers", default_num_workers(device) if self.num_workers is None
             else _whole("num_workers", self.num_workers, 0))
        if self.progress is None:
            set_("progress", sys.stderr.isatty() and distributed.is_primary())
        for name in ("skip_bad_images", "progress", "cache", "recursive", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise FidfastError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.compile and device.type != "cuda":
            raise FidfastError("--compile needs a CUDA device (it compiles the network for a GPU)")
        if self.weights is not None and not isinstance(self.weights, (str, os.PathLike, Weights)):
            raise FidfastError(f"weights must be a path, got {type(self.weights).__name__}")
        if self.features is None and (self.weights is not None or os.environ.get("FIDFAST_WEIGHTS")):
            self.inception_weights  # a named file is checked now, before any image is listed (it costs a stat)

    def _check_features(self, device: torch.device) -> None:
        module = self.features
        if not isinstance(module, nn.Module):
            raise FidfastError(f"features must be an nn.Module, got {type(module).__name__}")
        if self.dims is not None or self.weights is not None:
            raise FidfastError("dims= and weights= choose the FID Inception's features; a features module gives its "
                               "own (leave them out)")
        places = {p.device for p in module.parameters()}
        if places and places != {device}:
            raise FidfastError(f"the features module is on {', '.join(sorted(map(str, places)))}, the images go to "
                               f"{device}: move it with module.to({str(device)!r}) or pass device=")
        if module.training:
            warn("fidfast: the features module is in training mode (dropout, batch-norm updates): call "
                 "module.eval() for reproducible features")

    @functools.cached_property
    def network(self) -> str:
        """What makes the features: ``inception <weights digest>`` or ``module <fingerprint>``."""
        if self.features is not None:
            return f"module {module_digest(self.features)}"
        return f"inception {self.inception_weights.digest}"

    @property
    def dtype(self) -> torch.dtype:
        """The network's dtype."""
        return torch.float16 if self.precision == "fp16" else torch.float32

    def like(self, dims: int, protocol: Optional[str]) -> "Settings":
        """These settings for images compared with statistics of ``dims`` made by ``protocol`` (None: not
        recorded): the same, or with those dims and that protocol where none were asked for. A mismatch
        with asked ones is left to the caller to report."""
        fed = PROTOCOLS[protocol].network if protocol in PROTOCOLS else None
        if self.features is None and fed not in (None, "inception"):
            raise FidfastError(f"statistics of protocol {protocol} are of {fed}'s features (FD_DINOv2: --metrics "
                               "fd-dinov2), not the FID Inception's")
        changes = {}
        if not self.dims_given and dims != self.dims:
            changes["dims"] = dims
        if not self.protocol_given and protocol is not None and protocol != self.protocol:
            changes["protocol"] = protocol
        return replace(self, **changes) if changes else self

    @property
    def preprocessing(self) -> Protocol:
        """The protocol's tables and reference (:class:`fidfast.preprocess.Protocol`)."""
        return PROTOCOLS[self.protocol]

    @functools.cached_property
    def inception_weights(self) -> Weights:
        """The FID Inception weights, resolved on first use (when named, when built) and then kept: a
        value, passed down."""
        return resolve_weights(self.weights)
