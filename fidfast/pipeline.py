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

from fidfast import _ops
from fidfast.decode import DecodedBatch, ImageFileDataset, collate_decoded, default_num_workers, list_image_files
from fidfast.errors import FidfastError
from fidfast.features import build_feature_extractor, resolve_precision
from fidfast.progress import Progress
from fidfast.stats import FeatureStats

log = logging.getLogger("fidfast")

INCEPTION_SIZE = 299
Source = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]], FeatureStats]


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    """None → cuda if available else cpu; a CUDA device that does not exist is a user error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise FidfastError(f"--device {device!r}: not a device (try cpu, cuda or cuda:0)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FidfastError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FidfastError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
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

    @classmethod
    def make(cls, dims: int = 2048, device=None, precision: str = "auto", weights: Optional[str] = None,
             batch_size: Optional[int] = None, num_workers: Optional[int] = None,
             skip_bad_images: bool = False, progress: Optional[bool] = None) -> "RunConfig":
        dev = resolve_device(device)
        if batch_size is not None and batch_size < 1:
            raise FidfastError(f"--batch-size must be ≥ 1, got {batch_size}")
        if num_workers is not None and num_workers < 0:
            raise FidfastError(f"--num-workers must be ≥ 0, got {num_workers}")
        return cls(dims=dims, device=dev, precision=resolve_precision(precision, dev), weights=weights,
                   batch_size=batch_size or default_batch_size(dev),
                   num_workers=default_num_workers() if num_workers is None else num_workers,
                   skip_bad_images=skip_bad_images,
                   progress=sys.stderr.isatty() if progress is None else progress)

    @property
    def dtype(self) -> torch.dtype:
        return torch.float16 if self.precision == "fp16" else torch.float32


@functools.lru_cache(maxsize=4)
def _extractor(dims: int, device: torch.device, precision: str, weights: Optional[str]):
    return build_feature_extractor(dims, device, precision, weights)


def open_source(source: Source, recursive: bool = False) -> Union[FeatureStats, List[Path]]:
    """What an input is: statistics (an .npz file or FeatureStats) or a list of image files."""
    if isinstance(source, FeatureStats):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise FidfastError(f"{path}: no such file or folder")
        if path.is_dir():
            return list_image_files(path, recursive)
        if path.suffix.lower() == ".npz":
            return FeatureStats.load(path)
        raise FidfastError(f"{path}: expected a folder of images or an .npz statistics file")
    if isinstance(source, Sequence):
        files = [Path(p) for p in source]
        missing = [p for p in files if not p.is_file()]
        if missing:
            raise FidfastError(f"{missing[0]}: no such image file")
        return files
    raise FidfastError(f"cannot read images from a {type(source).__name__}")


def iter_batches(files: Sequence[Path], cfg: RunConfig) -> Iterator[DecodedBatch]:
    """Decoded, packed batches in file order; a bad file raises unless ``cfg.skip_bad_images``."""
    loader = torch.utils.data.DataLoader(
        ImageFileDataset(files), batch_size=cfg.batch_size, shuffle=False, num_workers=cfg.num_workers,
        collate_fn=collate_decoded, pin_memory=cfg.device.type == "cuda",
        prefetch_factor=4 if cfg.num_workers > 0 else None, persistent_workers=False)
    for batch in loader:
        if batch.bad and not cfg.skip_bad_images:
            path, err = batch.bad[0]
            raise FidfastError(f"{err} (pass --skip-bad-images to skip such files)")
        yield batch


def preprocess(batch: DecodedBatch, cfg: RunConfig) -> torch.Tensor:
    """uint8 ragged batch → N×3×299×299 in [−1, 1], on the device, in the run's dtype."""
    data = batch.data.to(cfg.device, non_blocking=True)
    meta = batch.meta.to(cfg.device, non_blocking=True)
    return _ops.resize_normalize(data, meta, INCEPTION_SIZE, cfg.dtype, channels_last=cfg.device.type == "cuda")


def iter_features(files: Sequence[Path], cfg: RunConfig, label: str = "") -> Iterator[Tuple[torch.Tensor, int]]:
    """(features N×dims on the device, bad files skipped in that batch) per batch."""
    model = _extractor(cfg.dims, cfg.device, cfg.precision, cfg.weights)
    bar = Progress(f"fidfast {label}".rstrip(), len(files), cfg.progress)
    with torch.inference_mode():
        for batch in iter_batches(files, cfg):
            bar.update(len(batch) + len(batch.bad))
            if len(batch) == 0:
                yield torch.empty(0, cfg.dims, device=cfg.device), len(batch.bad)
                continue
            yield model(preprocess(batch, cfg)), len(batch.bad)
    bar.close()


def stats_of_files(files: Sequence[Path], cfg: RunConfig, label: str = "") -> FeatureStats:
    stats = FeatureStats(cfg.dims, device=cfg.device)
    skipped = 0
    for features, bad in iter_features(files, cfg, label):
        stats.update(features)
        skipped += bad
    if skipped:
        warnings.warn(f"fidfast: skipped {skipped} unreadable image(s) in {label or 'input'}", stacklevel=2)
    stats.meta.update(skipped=skipped, precision=cfg.precision, dims=cfg.dims)
    if stats.n < 2:
        raise FidfastError(f"{label or 'input'}: FID needs at least 2 images, got {stats.n}")
    if stats.n < cfg.dims:
        warnings.warn(f"fidfast: {label or 'input'} has {stats.n} images, fewer than dims={cfg.dims}: the "
                      "covariance is rank-deficient; the FID is finite but biased (use ≥ dims images to "
                      "compare with published numbers)", stacklevel=2)
    return stats.to("cpu")


def compute_stats(samples: Source, dims: int = 2048, device=None, batch_size: Optional[int] = None,
                  num_workers: Optional[int] = None, precision: str = "auto", weights: Optional[str] = None,
                  recursive: bool = False, skip_bad_images: bool = False,
                  progress: Optional[bool] = None) -> FeatureStats:
    """Inception feature statistics of a folder, an .npz statistics file or a list of image files.

    Returns a :class:`FeatureStats` (float64 mean ``.mu`` (dims,), covariance ``.sigma`` (dims, dims),
    count ``.n``) on the CPU.
    """
    cfg = RunConfig.make(dims, device, precision, weights, batch_size, num_workers, skip_bad_images, progress)
    return stats_of(samples, cfg, recursive)


def stats_of(samples: Source, cfg: RunConfig, recursive: bool = False) -> FeatureStats:
    opened = open_source(samples, recursive)
    if isinstance(opened, FeatureStats):
        if opened.dims != cfg.dims:
            raise FidfastError(f"{samples}: statistics have dims {opened.dims}, but dims={cfg.dims} was asked for")
        return opened
    label = str(samples) if isinstance(samples, (str, os.PathLike)) else f"{len(opened)} files"
    return stats_of_files(opened, cfg, label)
