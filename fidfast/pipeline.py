"""decode → preprocess → Inception → statistics, the whole pipeline for one input.

Worker processes decode to uint8 and pack each ragged batch (:mod:`fidfast.decode`); the main process
copies it (pinned, non-blocking on CUDA) to the device, where ``resize_normalize`` makes the 299×299
network input in one launch, the compiled Inception (:mod:`fidfast.features`) makes features, and
``cov_update_`` folds them into float64 statistics (:mod:`fidfast.stats`) without leaving the device.
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from fidfast import _ops, cache, distributed
from fidfast.decode import DecodedBatch, collate_decoded, dataset_for, default_num_workers
from fidfast.errors import FidfastError
from fidfast.features import build_feature_extractor, resolve_precision
from fidfast.progress import Progress
from fidfast.sources import ArrayInput, ImageInput, Source, as_nhwc_uint8, iter_array_batches, open_source
from fidfast.stats import FeatureStats

log = logging.getLogger("fidfast")

INCEPTION_SIZE = 299


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    """None → cuda if available else cpu; a CUDA device that does not exist is a user error."""
    if device is None:
        device = distributed.default_device()
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


def default_batch_size(device: torch.device) -> int:
    return 500 if device.type == "cuda" else 50


@dataclass
class RunConfig:
    """How features are computed; everything that changes the numbers is here."""

    dims: int = 2048
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    weights: Optional[str] = None
    batch_size: int = 50
    num_workers: int = 1
    skip_bad_images: bool = False
    progress: bool = False
    cache: bool = True

    @classmethod
    def make(cls, dims: int = 2048, device=None, precision: str = "auto", weights: Optional[str] = None,
             batch_size: Optional[int] = None, num_workers: Optional[int] = None,
             skip_bad_images: bool = False, progress: Optional[bool] = None, cache: bool = True) -> "RunConfig":
        dev = resolve_device(device)
        if batch_size is not None and batch_size < 1:
            raise FidfastError(f"--batch-size must be ≥ 1, got {batch_size}")
        if num_workers is not None and num_workers < 0:
            raise FidfastError(f"--num-workers must be ≥ 0, got {num_workers}")
        return cls(dims=dims, device=dev, precision=resolve_precision(precision, dev), weights=weights,
                   batch_size=batch_size or default_batch_size(dev),
                   num_workers=default_num_workers() if num_workers is None else num_workers,
                   skip_bad_images=skip_bad_images, cache=cache,
                   progress=(sys.stderr.isatty() if progress is None else progress) and distributed.is_primary())

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32


@functools.lru_cache(maxsize=4)
def _extractor(dims: int, device: torch.device, precision: str, weights: Optional[str]):
    return build_feature_extractor(dims, device, precision, weights)


def iter_decoded(refs: Sequence, cfg: RunConfig) -> Iterator[DecodedBatch]:
    """Decoded, packed batches (worker processes decode); a bad image raises unless ``cfg.skip_bad_images``."""
    loader = torch.utils.data.DataLoader(
        dataset_for(refs), batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
        collate_fn=collate_decoded, pin_memory=cfg.device.type == "cuda",
        prefetch_factor=4 if cfg.num_workers > 0 else None)
    for batch in loader:
        if batch.bad and not cfg.skip_bad_images:
            raise FidfastError(f"{batch.bad[0][1]} (pass --skip-bad-images to skip such files)")
        yield batch


def preprocess(batch: Union[DecodedBatch, torch.Tensor], cfg: RunConfig) -> torch.Tensor:
    """A decoded batch (uint8) or a float [0, 1] N×3×H×W batch → N×3×299×299 in [−1, 1] on the device,
    in the run's dtype, exactly as pytorch-fid preprocesses (bilinear, align_corners=False, then 2x−1)."""
    channels_last = cfg.device.type == "cuda"
    if isinstance(batch, torch.Tensor):
        x = F.interpolate(batch.to(cfg.device, torch.float32), size=(INCEPTION_SIZE, INCEPTION_SIZE),
                          mode="bilinear", align_corners=False)
        x = (2 * x - 1).to(cfg.dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x
    data = batch.data.to(cfg.device, non_blocking=True)
    # meta stays on the host: the op checks it there, so no device-to-host copy waits for queued work.
    return _ops.resize_normalize(data, batch.meta, INCEPTION_SIZE, cfg.dtype, channels_last=channels_last)


def pack_uint8(x: torch.Tensor) -> DecodedBatch:
    """An equal-size uint8 batch as a DecodedBatch without copying pixels (stays on its device)."""
    nhwc = as_nhwc_uint8(x).contiguous()
    n, h, w, c = nhwc.shape
    meta = torch.tensor([[i * h * w * c, h, w, c] for i in range(n)], dtype=torch.int64).reshape(-1, 4)
    return DecodedBatch(nhwc.view(-1), meta, [])


def iter_model_inputs(opened: Union[ImageInput, ArrayInput], cfg: RunConfig
                      ) -> Iterator[Tuple[Union[DecodedBatch, torch.Tensor], int, int]]:
    """(batch to preprocess, images in it, unreadable images skipped) for image files or arrays."""
    if isinstance(opened, ImageInput):
        for batch in iter_decoded(distributed.shard(opened.refs), cfg):
            yield batch, len(batch), len(batch.bad)
        return
    for x in iter_array_batches(opened.batches, cfg.batch_size):
        yield (pack_uint8(x) if x.dtype == torch.uint8 else x), int(x.shape[0]), 0


def iter_features(opened: Union[ImageInput, ArrayInput], cfg: RunConfig) -> Iterator[Tuple[torch.Tensor, int]]:
    """(features N×dims on the device, images skipped) per batch."""
    model = _extractor(cfg.dims, cfg.device, cfg.precision, cfg.weights)
    total = len(opened.refs) if isinstance(opened, ImageInput) else opened.total
    bar = Progress(f"fidfast {opened.label}", total, cfg.progress)
    for batch, n, bad in iter_model_inputs(opened, cfg):
        if n == 0:
            bar.update(bad)
            yield torch.empty(0, cfg.dims, device=cfg.device), bad
            continue
        # Entered per batch, not across the yield, so the caller's code between batches is unaffected.
        # Fixed 299×299 shapes: cuDNN may pick its fastest kernels; fp32 means fp32 (no TF32 convolutions).
        with torch.inference_mode(), torch.backends.cudnn.flags(enabled=True, benchmark=True,
                                                                allow_tf32=cfg.precision != "fp32"):
            features = model(preprocess(batch, cfg))
        bar.update(n + bad)  # after the network: counted when done, not when decoded
        yield features, bad
    bar.close()


def _accumulate(opened: Union[ImageInput, ArrayInput], cfg: RunConfig, keep_features: bool
                ) -> Tuple[FeatureStats, Optional[torch.Tensor]]:
    """Statistics (and optionally the features, float32 on the CPU) of one input; under
    torch.distributed each rank takes a shard of the files and every rank gets the merged result."""
    stats = FeatureStats(cfg.dims, device=cfg.device)
    kept: List[torch.Tensor] = []
    skipped = 0
    for features, bad in iter_features(opened, cfg):
        stats.update(features)
        if keep_features:
            kept.append(features.float().cpu())
        skipped += bad
    stats, skipped = distributed.merge_stats(stats, skipped)
    stats.meta.update(skipped=skipped, precision=cfg.precision, dims=cfg.dims)
    _check_and_report(stats, opened.label)
    features = torch.cat(kept) if keep_features else None
    return stats.to("cpu"), features


def _check_and_report(stats: FeatureStats, label: str) -> None:
    """Too few images is an error; skipped images and a rank-deficient covariance are warnings, given
    whether the statistics were just computed or came from the cache."""
    skipped = int(stats.meta.get("skipped", 0))
    if skipped and distributed.is_primary():
        warnings.warn(f"fidfast: skipped {skipped} unreadable image(s) in {label}", stacklevel=4)
    if stats.n < 2:
        raise FidfastError(f"{label}: FID needs at least 2 images, got {stats.n}")
    if stats.n < stats.dims and distributed.is_primary():
        warnings.warn(f"fidfast: {label} has {stats.n} images, fewer than dims={stats.dims}: the covariance is "
                      "rank-deficient; the FID is finite but biased (use ≥ dims images to compare with "
                      "published numbers)", stacklevel=4)


def _cache_key(opened: ImageInput, cfg: RunConfig) -> Optional[str]:
    if not cfg.cache:
        return None
    return cache.stats_key(opened.refs, cfg.dims, cfg.precision, cfg.device.type, cfg.weights, cfg.skip_bad_images)


def stats_of(samples: Source, cfg: RunConfig, recursive: bool = False) -> FeatureStats:
    """Statistics of any input (:mod:`fidfast.sources`); image files go through the statistics cache."""
    opened = open_source(samples, recursive)
    if isinstance(opened, FeatureStats):
        return _check_dims(opened, cfg)
    key = _cache_key(opened, cfg) if isinstance(opened, ImageInput) else None
    if key is not None:
        hit = cache.load(key)
        # Under torch.distributed a rank that took its cached result alone would leave the others
        # waiting in the merge: the cache is used only when every rank has the entry.
        if distributed.all_ranks(hit is not None):
            log.info("fidfast: %s: statistics from the cache (%s images)", opened.label, hit.n)
            _check_and_report(hit, opened.label)
            return hit
    stats, _ = _accumulate(opened, cfg, keep_features=False)
    if key is not None and distributed.is_primary():
        cache.store(key, stats)
    return stats


def stats_of_pair(a: Source, b: Source, cfg: RunConfig, recursive: bool = False
                  ) -> Tuple[FeatureStats, FeatureStats]:
    """Statistics of the two inputs of a FID. Two statistics files are taken as they are, whatever
    ``cfg.dims`` (as pytorch-fid does; the Fréchet distance checks that they agree); a statistics file
    beside images must have ``cfg.dims``, which is checked before any image is processed."""
    first, second = open_source(a, recursive), open_source(b, recursive)
    if isinstance(first, FeatureStats) and isinstance(second, FeatureStats):
        return first, second
    for opened in (first, second):
        if isinstance(opened, FeatureStats):
            _check_dims(opened, cfg)
    return stats_of(first, cfg, recursive), stats_of(second, cfg, recursive)


def _check_dims(stats: FeatureStats, cfg: RunConfig) -> FeatureStats:
    if stats.dims != cfg.dims:
        raise FidfastError(f"{stats.path or 'statistics'}: statistics have dims {stats.dims}, but dims={cfg.dims} "
                           "was asked for")
    return stats


def features_of(samples: Source, cfg: RunConfig, recursive: bool = False) -> Tuple[FeatureStats, torch.Tensor]:
    """Statistics and the features themselves (N×dims float32, CPU), e.g. for KID; never cached."""
    opened = open_source(samples, recursive)
    if isinstance(opened, FeatureStats):
        raise FidfastError(f"{samples}: KID needs images, not a statistics file")
    if distributed.world_size() > 1:
        raise FidfastError("KID under torchrun is not supported; run it in one process")
    return _accumulate(opened, cfg, keep_features=True)


def compute_stats(samples: Source, dims: int = 2048, device=None, batch_size: Optional[int] = None,
                  num_workers: Optional[int] = None, precision: str = "auto", weights: Optional[str] = None,
                  recursive: bool = False, skip_bad_images: bool = False, progress: Optional[bool] = None,
                  cache: bool = True) -> FeatureStats:
    """Inception feature statistics of any input: a folder, file list, archive, .npz statistics file,
    list of paths, image array/tensor or iterable of image batches (see :mod:`fidfast.sources`).

    Returns a :class:`FeatureStats` (float64 mean ``.mu`` (dims,), covariance ``.sigma`` (dims, dims),
    count ``.n``) on the CPU.
    """
    cfg = RunConfig.make(dims, device, precision, weights, batch_size, num_workers, skip_bad_images, progress,
                         cache)
    return stats_of(samples, cfg, recursive)
