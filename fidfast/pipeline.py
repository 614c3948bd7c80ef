"""The stages in order, for one input: sources → decode → preprocess → Inception → statistics.

Worker processes decode to uint8 and pack each ragged batch (:mod:`fidfast.decode`); the main process
copies it (pinned, non-blocking on CUDA) to the device, where ``resize_normalize`` makes the 299×299
network input in one launch (:mod:`fidfast.preprocess`), the compiled Inception makes features
(:mod:`fidfast.features`), and ``cov_update_`` folds them into float64 statistics (:mod:`fidfast.stats`)
without leaving the device.

:func:`statistics` is the one place where work is distributed: under torch.distributed each rank takes a
shard of the input's files, accumulates its own statistics, and every rank gets the exact merge
(:mod:`fidfast.distributed`). Everything below it computes what it is given, in this process.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from fidfast import cache, distributed
from fidfast.feeder import CHUNK_IMAGES, Feeder
from fidfast.errors import FidfastError, RankError, warn
from fidfast.features import feature_extractor, module_dtype, module_input_size
from fidfast.preprocess import PackedBatch, module_input, network_input, pack
from fidfast.progress import Progress
from fidfast.settings import Settings
from fidfast.sources import (ImageArrays, ImageFiles, NpzImages, Source, as_nhwc_uint8, iter_array_batches,
                             open_source)
from fidfast.stats import FeatureStats

log = logging.getLogger("fidfast")

Images = Union[ImageFiles, ImageArrays]


def extractor(settings: Settings) -> Callable[[torch.Tensor], torch.Tensor]:
    """The settings' network: their features module, or the FID Inception with their weights, dims,
    device and precision (built once per process)."""
    if settings.features is not None:
        return settings.features
    return feature_extractor(settings.inception_weights, settings.dims, settings.device, settings.precision,
                             aot_batch=settings.batch_size if settings.compile else 0)


def _autotune(settings: Settings) -> bool:
    """Whether cuDNN autotunes the network's convolutions. fp16 no (measured on an H200: the same speed
    either way, and tuning costs 2.6 s per process); fp32 yes (heuristics pick slow kernels there)."""
    return settings.precision == "fp32"


@contextlib.contextmanager
def numerics(settings: Settings) -> Iterator[None]:
    """The numerics of a pass, entered per batch so the caller's code between batches is unaffected: no
    gradients, the caller's autocast off, fp32 without TF32 convolutions, and cuDNN deterministic (no
    autotuning) when the caller asked for determinism (``torch.backends.cudnn.deterministic``, the CLI's
    --deterministic, or ``torch.use_deterministic_algorithms``): the same images then give the same bits
    every run."""
    deterministic = torch.backends.cudnn.deterministic or torch.are_deterministic_algorithms_enabled()
    with torch.inference_mode(), torch.autocast(settings.device.type, enabled=False), \
            torch.backends.cudnn.flags(enabled=True, benchmark=_autotune(settings) and not deterministic,
                                       deterministic=deterministic,
                                       benchmark_limit=torch.backends.cudnn.benchmark_limit,
                                       allow_tf32=settings.precision != "fp32"):
        yield


def model_input(model: Callable[[torch.Tensor], torch.Tensor], batch: Union[PackedBatch, torch.Tensor],
                settings: Settings) -> torch.Tensor:
    """A batch (packed, or float N×3×H×W in [0, 1]) as the network's input on the settings' device: the
    Inception's N×3×299×299 in its dtype, or a features module's input (:func:`module_input`)."""
    if settings.features is None:
        return network_input(batch, settings.device, settings.dtype, settings.preprocessing)
    x = module_input(batch, settings.device, module_input_size(model), settings.preprocessing)
    return x.to(module_dtype(model))


def run_model(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, settings: Settings) -> torch.Tensor:
    """The features (N×dims) of a network input (:func:`model_input`); a features module's output is checked."""
    features = model(x)
    if settings.features is not None and not (isinstance(features, torch.Tensor)
                                              and features.shape == (x.shape[0], settings.dims)):
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise FidfastError(f"the features module returned {got} for {x.shape[0]} images, expected "
                           f"{x.shape[0]}×{settings.dims}")
    return features


def batch_features(model: Callable[[torch.Tensor], torch.Tensor], batch: Union[PackedBatch, torch.Tensor],
                   settings: Settings) -> torch.Tensor:
    """The features (N×dims, on the settings' device) of one batch: packed, or float N×3×H×W in [0, 1]."""
    with numerics(settings):
        return run_model(model, model_input(model, batch, settings), settings)


Network = Callable[[torch.Tensor], torch.Tensor]


def _file_features(images: ImageFiles, settings: Settings, network: Callable[[], Network], width: int
                   ) -> Iterator[Tuple[torch.Tensor, int, int]]:
    """(features, images, unreadable images skipped) per network batch of image files, in input order.

    The feeder's workers start first, so decoding runs while the network is built; chunks are moved to the
    device and preprocessed as they come, and the network sees ``settings.batch_size`` images at a time."""
    with Feeder(images.refs, settings.device, settings.num_workers, chunk=min(CHUNK_IMAGES, settings.batch_size),
                skip_bad_images=settings.skip_bad_images, fast_jpeg=settings.device.type == "cuda") as feeder:
        model = network()
        inputs: List[torch.Tensor] = []
        held = bad = 0

        def run(n: int) -> torch.Tensor:
            nonlocal inputs, held
            x = torch.cat(inputs) if len(inputs) > 1 else inputs[0]
            inputs = [x[n:]] if n < held else []
            held -= n
            with numerics(settings):
                return run_model(model, x[:n], settings)

        for chunk in feeder:
            bad += len(chunk.bad)
            if len(chunk):
                with numerics(settings):
                    inputs.append(model_input(model, feeder.to_device(chunk), settings))
                held += len(chunk)
            while held >= settings.batch_size:
                yield run(settings.batch_size), settings.batch_size, bad
                bad = 0
        if held or bad:
            yield (run(held) if held else torch.empty(0, width, device=settings.device)), held, bad


def iter_features(images: Images, settings: Settings, network: Optional[Callable[[], Network]] = None,
                  width: Optional[int] = None) -> Iterator[Tuple[torch.Tensor, int]]:
    """(features N×width on the device, unreadable images skipped) per batch, in input order. ``network``
    builds the network (default: the settings' :func:`extractor`), ``width`` is its output's (default: dims)."""
    network = network or (lambda: extractor(settings))
    width = width or settings.dims
    if isinstance(images, ImageFiles):
        total = len(images.refs)
        batches = _file_features(images, settings, network, width)
    else:
        total = images.total
        model = network()
        batches = ((batch_features(model, _packed(x), settings), len(x), 0)
                   for x in iter_array_batches(images.batches, settings.batch_size))
    bar = Progress(f"fidfast {images.label}", total, settings.progress)
    try:
        for features, n, bad in batches:
            bar.update(n + bad)  # after the network: counted when done, not when decoded
            yield features, bad
    finally:
        bar.close()  # an error then starts a line of its own


def _packed(x: Union[torch.Tensor, List[torch.Tensor]]) -> Union[PackedBatch, torch.Tensor]:
    """uint8 images packed for the native op (a list may mix sizes); float batches as they are."""
    if isinstance(x, list):
        return pack(x)
    return pack(as_nhwc_uint8(x)) if x.dtype == torch.uint8 else x


def _accumulate(images: Images, settings: Settings, keep_features: bool
                ) -> Tuple[FeatureStats, int, Optional[torch.Tensor]]:
    """This process's statistics of ``images``, the images skipped, and (if asked) the features, float32
    on the CPU. Under torch.distributed a failure here is this rank's own, and says so (RankError)."""
    stats = FeatureStats(settings.dims, device=settings.device)
    kept: List[torch.Tensor] = []
    skipped = 0
    try:
        for features, bad in iter_features(images, settings):
            stats.update(features)
            if keep_features:
                kept.append(features.float().cpu())
            skipped += bad
    except FidfastError as exc:
        if distributed.world_size() > 1 and not isinstance(exc, RankError):
            raise RankError(distributed.rank(), exc) from None
        raise
    if not keep_features:
        return stats, skipped, None
    return stats, skipped, torch.cat(kept) if kept else torch.empty(0, settings.dims)


def share(opened: Images) -> Images:
    """This rank's share: a contiguous block of image files or of an .npz's images; other in-memory batches
    are each rank's own."""
    if isinstance(opened, ImageFiles):
        return ImageFiles(distributed.shard(opened.refs), opened.label)
    if isinstance(opened.batches, NpzImages):
        start, stop = distributed.shard_bounds(len(opened.batches), distributed.rank(), distributed.world_size())
        return ImageArrays(opened.batches.block(start, stop), opened.label, stop - start)
    return opened


def finish(stats: FeatureStats, skipped: int, settings: Settings, label: str) -> FeatureStats:
    """Merged statistics made final: at least one image (else one error naming the input), what computed
    them recorded in their meta, unreadable images reported, on the CPU."""
    if stats.n == 0:
        raise FidfastError(f"{label}: no images" + (f" (all {skipped} were unreadable)" if skipped else ""))
    stats.meta.update(skipped=skipped, precision=settings.precision, dims=settings.dims, protocol=settings.protocol,
                      network=settings.network)
    report_skipped(stats, label)
    return stats.to("cpu")


def report_skipped(stats: FeatureStats, label: str) -> None:
    """Warn (rank 0) that images were skipped, whether the statistics were just computed or cached."""
    skipped = int(stats.meta.get("skipped", 0))
    if skipped and distributed.is_primary():
        warn(f"fidfast: {label}: skipped {skipped} unreadable image(s)")


def check_fid_input(stats: FeatureStats, label: str) -> FeatureStats:
    """A FID needs a covariance (≥ 2 images); with fewer images than dims it is finite but biased (a
    warning, on rank 0)."""
    if stats.n is not None and stats.n < 2:
        raise FidfastError(f"{label}: a FID needs at least 2 images, got {stats.n}")
    if stats.n is not None and stats.n < stats.dims and distributed.is_primary():
        warn(f"fidfast: {label}: {stats.n} images, fewer than dims={stats.dims}: the covariance is "
             "rank-deficient; the FID is finite but biased (use ≥ dims images to compare with published numbers)")
    return stats


def check_matches(stats: FeatureStats, settings: Settings) -> FeatureStats:
    """A statistics file must have the settings' dims and protocol, where these were asked for; one
    without a recorded protocol (pytorch-fid's, TTUR's) is taken as the settings' (``--verbose`` says so)."""
    label = stats.path or "statistics"
    if settings.dims_given and stats.dims != settings.dims:
        raise FidfastError(f"{label}: statistics have dims {stats.dims}, but dims={settings.dims} was asked for")
    if stats.protocol is None:
        log.info("fidfast: %s records no protocol (pytorch-fid's and TTUR's files do not): taken as %s",
                 label, settings.protocol)
    elif settings.protocol_given and stats.protocol != settings.protocol:
        raise FidfastError(f"{label}: statistics of protocol {stats.protocol}, but --protocol {settings.protocol} "
                           "was asked for: FIDs of different protocols are not comparable")
    return stats


def check_same_protocol(first: FeatureStats, second: FeatureStats) -> None:
    """Refuse to compare statistics that record different protocols or feature networks."""
    nets = [s.meta.get("network") for s in (first, second)]
    if None not in nets and nets[0] != nets[1] and any(n.startswith("module") for n in nets):
        def say(net: str) -> str:
            kind, digest = net.split(" ", 1)
            return "the FID Inception" if kind == "inception" else f"a features module (fingerprint {digest[:12]})"
        raise FidfastError(f"{first.path or 'the first input'} holds features of {say(nets[0])}, "
                           f"{second.path or 'the second'} of {say(nets[1])}: their distance means nothing")
    if first.protocol is not None and second.protocol is not None and first.protocol != second.protocol:
        raise FidfastError(f"{first.path or 'the first input'} was computed with protocol {first.protocol}, "
                           f"{second.path or 'the second'} with {second.protocol}: FIDs of different protocols are "
                           "not comparable (compute both with one --protocol)")


def statistics(source: Source, settings: Settings) -> FeatureStats:
    """Statistics of any input (:mod:`fidfast.sources`), on the CPU; image files go through the
    statistics cache. Under torch.distributed every rank calls it and gets the statistics of all of it.
    A statistics file is taken as it is, checked against the dims and protocol that were asked for."""
    opened = open_source(source, settings.recursive)
    if isinstance(opened, FeatureStats):
        return check_matches(opened, settings)
    key = None
    if isinstance(opened, ImageFiles) and settings.cache and cache.size_limit() > 0:
        key = cache.stats_key(opened.refs, settings)
        hit = cache.load(key)
        # Under torch.distributed a rank that took its cached result alone would leave the others
        # waiting in the merge: the cache is used only when every rank has the entry.
        if distributed.all_ranks(hit is not None):
            log.info("fidfast: %s: statistics from the cache (%s images)", opened.label, hit.n)
            report_skipped(hit, opened.label)
            return hit
    stats, skipped, _ = _accumulate(share(opened), settings, keep_features=False)
    stats, skipped = distributed.merge(stats, skipped)
    stats = finish(stats, skipped, settings, opened.label)
    if key is not None and distributed.is_primary():
        cache.store(key, stats)
    return stats


def statistics_pair(a: Source, b: Source, settings: Settings) -> Tuple[FeatureStats, FeatureStats]:
    """Statistics of the two inputs of a FID, each checked to make one (≥ 2 images) before the next is
    computed. Two statistics files are taken as they are, whatever ``settings.dims`` (as pytorch-fid does;
    the Fréchet distance checks that they agree); images beside a statistics file take its dims and
    protocol unless these were asked for, and then must match (checked before any image is processed).
    Statistics of two different protocols are refused."""
    first, second = open_source(a, settings.recursive), open_source(b, settings.recursive)
    if isinstance(first, FeatureStats) and isinstance(second, FeatureStats):
        check_same_protocol(first, second)
        return tuple(check_fid_input(s, _label(s)) for s in (first, second))
    for opened in (first, second):
        if isinstance(opened, FeatureStats):
            settings = settings.like(opened.dims, opened.protocol)
            check_matches(opened, settings)
    pair = tuple(check_fid_input(statistics(opened, settings), _label(opened)) for opened in (first, second))
    check_same_protocol(*pair)
    return pair


def _label(opened: Union[FeatureStats, Images]) -> str:
    return (opened.path or "statistics") if isinstance(opened, FeatureStats) else opened.label


def features(source: Source, settings: Settings) -> Tuple[FeatureStats, torch.Tensor]:
    """Statistics and the features themselves (N×dims float32, CPU, in input order), for KID, precision and
    recall, FID∞ and the FID interval; never cached. Under torch.distributed every rank gets the statistics
    and the features of all of it."""
    opened = open_source(source, settings.recursive)
    if isinstance(opened, FeatureStats):
        raise FidfastError(f"{source}: a statistics file holds no features; KID, prdc, fid-inf and fid-ci need "
                           "images")
    stats, skipped, kept = _accumulate(share(opened), settings, keep_features=True)
    stats, skipped = distributed.merge(stats, skipped)
    kept = distributed.concatenate(kept)
    return finish(stats, skipped, settings, opened.label), kept


def compute_stats(samples: Source, **settings) -> FeatureStats:
    """Inception feature statistics of any input: a folder, file list, archive, .npz statistics file,
    list of paths, image array/tensor or iterable of image batches (see :mod:`fidfast.sources`).

    Keyword arguments are the fields of :class:`fidfast.Settings` (``dims``, ``protocol``, ``device``,
    ``precision``, ``weights``, ``batch_size``, ``num_workers``, ``skip_bad_images``, ``progress``,
    ``cache``, ``recursive``), checked before any file is listed.

    Returns a :class:`FeatureStats` (float64 mean ``.mu`` (dims,), covariance ``.sigma`` (dims, dims),
    count ``.n``) on the CPU.
    """
    return statistics(samples, Settings(**settings))


def compute_features(samples: Source, **settings) -> np.ndarray:
    """Inception features of any image input :func:`compute_stats` takes (not a statistics file: it holds
    none), for :func:`fidfast.prdc`, :func:`fidfast.fid_infinity`, :func:`fidfast.fid_bootstrap` or your own
    metrics. Same keyword arguments as :func:`compute_stats`; never cached.

    Returns an N×dims float32 numpy array, one row per image in input order (under torch.distributed:
    every rank gets all ranks' rows, in input order).
    """
    return features(samples, Settings(**settings))[1].numpy()
