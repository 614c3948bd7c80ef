"""The Inception stage: a compiled FID Inception that maps network input to pooled features.

Compiled with TorchScript (script → freeze, which folds batch norm into the convolutions; on CPU in fp32
also ``optimize_for_inference``, oneDNN). Falls back to eager PyTorch where ``torch.jit`` is missing or
fails, or when ``FIDFAST_JIT=0``. TorchScript's deprecation FutureWarnings are kept from users.

On the CPU the frozen module is cached in ``$XDG_CACHE_HOME/fidfast/compiled/`` (written atomically with a
SHA-256 sidecar, keyed by the weights' digest, dims, fidfast and torch versions and the network's source):
loading it takes ~0.1 s where building, scripting and freezing take ~1.3 s, a fixed cost of every run.

fp16 runs the network with half-precision weights and activations in channels_last (cuDNN accumulates
in fp32). For this all-convolution network that is what fp16 autocast would do, minus a cast of every
weight on every call.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from fidfast import network
from fidfast.errors import FidfastError
from fidfast.files import cache_dir, is_intact, serialized, write_cache
from fidfast.network import FIDInception3, PooledInception, SuiteInception, fold_batch_norms
from fidfast.version import __version__
from fidfast.weights import Weights, quiet_jit

log = logging.getLogger("fidfast")

# On the CPU the network runs this many images at a time, whatever the loader's batch: measured on the
# 2-core CI machine (AVX-512), 18.5 images/s at 4 or 8 against 14.5 at 48 (the activations of a few
# images stay in cache). The features do not depend on it.
CPU_MICRO_BATCH = 8


class FeatureExtractor:
    """The Inception stage as one callable: N×3×299×299 network input → N×dims features.

    Attributes:
        module: the compiled network (a ``torch.jit.ScriptModule``) or, without TorchScript, the eager one.
        micro_batch: how many images it sees per call (0: whole batches).
    """

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], micro_batch: int = 0) -> None:
        self.module, self.micro_batch = module, micro_batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.micro_batch <= 0 or x.shape[0] <= self.micro_batch:
            return self.module(x)
        return torch.cat([self.module(part) for part in x.split(self.micro_batch)])


def eager_network(weights: Weights, dims: int, device: torch.device, precision: str, suite: bool = False
                  ) -> nn.Module:
    """The FID Inception up to ``dims``, pooled, with ``weights`` loaded, on ``device`` in ``precision``; with
    ``suite``, the ADM suite's three heads instead (:class:`fidfast.network.SuiteInception`, dims 2048)."""
    trunk = FIDInception3()
    trunk.load_state_dict(weights.state_dict())
    model = (SuiteInception(trunk, weights.classifier()) if suite else PooledInception(trunk, dims)).eval().to(device)
    if precision == "fp16":
        # Fold in fp32, then round once: TorchScript's freeze would fold the already-rounded fp16 weights.
        model = fold_batch_norms(model).half()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    return model


def _cache_key(weights: Weights, dims: int, device: torch.device, precision: str, extra: str = "") -> str:
    """What a compiled network depends on: fidfast, torch and CUDA versions, the GPU's kind, the weights,
    dims, precision and the network's source (a change to any builds it again)."""
    gpu = ""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name}|{props.major}.{props.minor}|{torch.version.cuda}"
    what = f"{__version__}|{torch.__version__}|{gpu}|{weights.digest}|{dims}|{precision}|{extra}|"
    key = hashlib.sha256(what.encode() + Path(network.__file__).read_bytes() + Path(__file__).read_bytes())
    return key.hexdigest()[:20]


def compiled_cache_path(weights: Weights, dims: int, device: torch.device = torch.device("cpu"),
                        precision: str = "fp32", suite: bool = False) -> Path:
    """Where the frozen TorchScript module for these weights, dims (or the suite's heads), device kind and
    precision is cached."""
    kind = "cpu" if device.type == "cpu" else f"cuda_{precision}"
    key = _cache_key(weights, dims, device, precision, "suite" if suite else "")
    return cache_dir() / "compiled" / f"inception_{'suite' if suite else f'd{dims}'}_{kind}_{key}.pt"


def _frozen(weights: Weights, dims: int, device: torch.device, precision: str, suite: bool = False
            ) -> torch.jit.ScriptModule:
    """The frozen module: from the cache (~0.1 s, no weights read), else built, scripted, frozen (~1.3 s)
    and cached."""
    path = compiled_cache_path(weights, dims, device, precision, suite)
    if is_intact(path):
        log.debug("fidfast: compiled Inception from %s", path)
        return quiet_jit(torch.jit.load, str(path), device)
    eager = eager_network(weights, dims, device, precision, suite)
    frozen = quiet_jit(torch.jit.freeze, quiet_jit(torch.jit.script, eager))
    # in memory first: torch.jit.save aborts the process when the disk fills under it
    write_cache(path, serialized(lambda f: quiet_jit(torch.jit.save, frozen, f)), sidecar=True)
    return frozen


def _compiled(weights: Weights, dims: int, device: torch.device, precision: str, suite: bool = False
              ) -> torch.jit.ScriptModule:
    frozen = _frozen(weights, dims, device, precision, suite)
    return quiet_jit(torch.jit.optimize_for_inference, frozen) if device.type == "cpu" else frozen


class StaticBatch:
    """A network compiled for batches of exactly ``batch`` images, called with any number: whole batches
    as they are, the rest zero-padded (each image's features are its own: padding changes no row)."""

    def __init__(self, module: Callable[[torch.Tensor], torch.Tensor], batch: int) -> None:
        self.module, self.batch = module, batch

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for part in x.split(self.batch):
            n = part.shape[0]
            if n < self.batch:
                padded = part.new_zeros((self.batch, *part.shape[1:])).contiguous(memory_format=torch.channels_last)
                padded[:n] = part
                part = padded
            outs.append(self.module(part.contiguous(memory_format=torch.channels_last))[:n])
        return outs[0] if len(outs) == 1 else torch.cat(outs)


def aot_cache_path(weights: Weights, dims: int, device: torch.device, precision: str, batch: int) -> Path:
    """Where the AOTInductor package of the network is cached (per GPU kind, precision and batch)."""
    key = _cache_key(weights, dims, device, precision, f"aoti|{batch}")
    return cache_dir() / "compiled" / f"inception_d{dims}_aoti_{precision}_b{batch}_{key}.pt2"


def _aot_compiled(weights: Weights, dims: int, device: torch.device, precision: str, batch: int) -> StaticBatch:
    """The network compiled ahead of time by AOTInductor (torch.export, then Triton and cuDNN kernels chosen
    and fused for this GPU): built once per GPU kind, torch version, precision and batch size (about a
    minute), cached, then loaded in about a second."""
    path = aot_cache_path(weights, dims, device, precision, batch)
    if not is_intact(path):
        log.warning("fidfast: compiling the Inception for this GPU (once; cached in %s)", path.parent)
        model = eager_network(weights, dims, device, precision)
        example = torch.zeros(batch, 3, 299, 299, device=device, dtype=model_dtype(precision)
                              ).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            program = torch.export.export(model, (example,))
        package = io.BytesIO()  # built in memory, then written whole (a full disk leaves no partial file)
        torch._inductor.aoti_compile_and_package(program, package_path=package)
        if not write_cache(path, package.getvalue(), sidecar=True):
            package.seek(0)
            return StaticBatch(torch._inductor.aoti_load_package(package), batch)
    return StaticBatch(torch._inductor.aoti_load_package(str(path)), batch)


def model_dtype(precision: str) -> torch.dtype:
    return torch.float16 if precision == "fp16" else torch.float32


@functools.lru_cache(maxsize=4)
def feature_extractor(weights: Weights, dims: int, device: torch.device, precision: str,
                      compile: Optional[bool] = None, aot_batch: int = 0, suite: bool = False) -> FeatureExtractor:
    """The FID Inception up to ``dims`` with ``weights``, on ``device`` in ``precision`` (fp32 or fp16),
    compiled unless ``compile`` is False or ``FIDFAST_JIT=0`` (or TorchScript is missing or fails: then
    eager, with a log warning). With ``aot_batch`` (CUDA only), the AOTInductor-compiled network for batches
    of that size instead (TorchScript if it fails, with a warning). With ``suite``, the ADM suite's three
    heads (N×5079, :class:`fidfast.network.SuiteInception`; TorchScript or eager). Kept per process: a second
    call with the same values returns the same one."""
    micro_batch = CPU_MICRO_BATCH if device.type == "cpu" else 0
    log.debug("fidfast: FID Inception weights %s (%s)", weights.path, weights.source)
    if compile is None:
        compile = os.environ.get("FIDFAST_JIT", "1") != "0"
    if suite:
        weights.classifier()  # no classifier: one clear error, not a compilation failure
    if aot_batch and device.type == "cuda" and not suite:
        try:
            return FeatureExtractor(_aot_compiled(weights, dims, device, precision, aot_batch))
        except FidfastError:
            raise
        except Exception as exc:  # noqa: BLE001 - the TorchScript network computes the same features
            log.warning("fidfast: ahead-of-time compilation failed (%s: %s); running the TorchScript network",
                        exc.__class__.__name__, str(exc).splitlines()[0] if str(exc) else "")
    if compile and hasattr(torch, "jit"):
        try:
            return FeatureExtractor(_compiled(weights, dims, device, precision, suite), micro_batch)
        except FidfastError:
            raise
        except Exception as exc:  # noqa: BLE001 - any TorchScript failure leaves the eager model, which is correct
            log.warning("fidfast: TorchScript compilation failed (%s); running eager", exc)
    return FeatureExtractor(eager_network(weights, dims, device, precision, suite), micro_batch)


# -- any feature network -----------------------------------------------------------------------------
# A module given as ``features=`` replaces the FID Inception: it gets float N×3×S×S in [0, 1] (its
# parameters' dtype) on the settings' device, S = its ``input_size`` (images resampled by the protocol's
# filter), or the images at their own size when it has none; it returns N×D features.

def module_input_size(module: nn.Module) -> Optional[int]:
    """The side S a features module wants its images resized to (its ``input_size``), or None."""
    size = getattr(module, "input_size", None)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise FidfastError(f"the features module's input_size must be a whole number ≥ 1 (the side of the square "
                           f"its images are resized to), got {size!r}")
    return size


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of the module's first parameter (float32 without one): its input's dtype."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def module_width(module: nn.Module, device: torch.device) -> int:
    """A features module's D: its ``num_features``, else that of one random image of its ``input_size``."""
    width = getattr(module, "num_features", None)
    if width is None:
        size = module_input_size(module)
        if size is None:
            raise FidfastError("a features module needs num_features (its output width) or input_size (the side its "
                               "images are resized to, so that fidfast can try one)")
        probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            out = module(probe.to(device, module_dtype(module)))
        width = out.shape[-1] if out.ndim == 2 else None
    if isinstance(width, torch.Tensor):
        width = int(width.item())
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise FidfastError("the features module must give N×D features (num_features a whole number ≥ 1), "
                           f"got {width!r}")
    return width


def module_digest(module: nn.Module) -> str:
    """A fingerprint of a features module: its ``fingerprint`` attribute where it has one (fidfast's own
    networks: their weights file's digest), else its class, input size and every parameter and buffer, by
    value (the statistics cache's key: other weights, other entry)."""
    if getattr(module, "fingerprint", ""):
        return hashlib.sha256(str(module.fingerprint).encode()).hexdigest()
    h = hashlib.sha256(f"{type(module).__module__}.{type(module).__qualname__}|{module_input_size(module)}\n".encode())
    for name, t in module.state_dict().items():
        if torch.is_tensor(t):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
