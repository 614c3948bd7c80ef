"""fidfast's stages timed one by one in this process, over the same images, beside pytorch-fid's own:
decode (the feeder), host→device transfer, preprocess, model, statistics, and the Fréchet distance at
d = 2048."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from core import DIMS, SEED, image_files, synchronize, throughput, time_passes

from fidfast import frechet_distance
from fidfast.features import feature_extractor
from fidfast.feeder import CHUNK_IMAGES, Feeder
from fidfast.pipeline import numerics
from fidfast.preprocess import PackedBatch, resize_normalize
from fidfast.settings import Settings, usable_cpus
from fidfast.stats import FeatureStats
from fidfast.weights import resolve_weights

SERIAL_DECODE_IMAGES = 1000  # at most, for one core's decode on CUDA (a core decodes ~1.5k images/s)


def bench_decode(refs: Sequence[Path], settings: Settings, repeat: int, keep: int = 0
                 ) -> Tuple[dict, List[PackedBatch]]:
    """The feeder alone, as the pipeline runs it (its workers, chunk size and JPEG decoder; their start-up
    and shutdown count), over ``refs``; returns copies of the chunks that hold the first ``keep`` images,
    taken in the untimed warm-up pass (a chunk lives only until the next is asked for)."""
    chunk = min(CHUNK_IMAGES, settings.batch_size)
    fast_jpeg = settings.device.type == "cuda"  # as the pipeline decodes
    kept: List[PackedBatch] = []

    def run(copy: bool = False) -> int:
        n = 0
        with Feeder(refs, settings.device, settings.num_workers, chunk=chunk, fast_jpeg=fast_jpeg) as feeder:
            for batch in feeder:
                if copy and n < keep:
                    kept.append(PackedBatch(batch.data.clone(), batch.meta.clone(), batch.bad))
                n += len(batch)
        return n

    timing = time_passes(run, torch.device("cpu"), repeat, warmup=lambda: run(copy=True))
    return (throughput(timing, len(refs), workers=settings.num_workers, chunk=chunk, fast_jpeg=fast_jpeg),
            kept)


def bench_transfer(batches: List[PackedBatch], device: torch.device, repeat: int
                   ) -> Tuple[Optional[dict], List[PackedBatch]]:
    """Host → device copy of the packed uint8 chunks from pinned memory, non-blocking (as the feeder copies
    its pinned ring); returns the chunks on the device. Nothing to copy on the CPU."""
    if device.type != "cuda":
        return None, batches
    pinned = [b.pin_memory() for b in batches]

    def copy() -> list:
        return [PackedBatch(b.data.to(device, non_blocking=True), b.meta) for b in pinned]

    timing = time_passes(copy, device, repeat)
    mb = sum(b.data.numel() for b in batches) / 1e6
    return (throughput(timing, sum(len(b) for b in batches), megabytes=mb, gb_per_s=mb / 1e3 / timing["seconds"]),
            timing["result"])


def bench_preprocess(device_batches: List[PackedBatch], device: torch.device, dtype: torch.dtype, repeat: int
                     ) -> Tuple[dict, list]:
    """``resize_normalize`` chunk by chunk: packed uint8 → N×3×299×299 network input (channels_last on CUDA)."""
    def run() -> list:
        return [resize_normalize(b, 299, dtype, channels_last=device.type == "cuda") for b in device_batches]

    timing = time_passes(run, device, repeat)
    return throughput(timing, sum(len(b) for b in device_batches)), timing["result"]


def network_batches(inputs: List[torch.Tensor], batch_size: int) -> List[torch.Tensor]:
    """The preprocessed chunks as the network sees them, ``batch_size`` images at a time: whole batches only
    (all the images when there are fewer than one batch)."""
    x = torch.cat(inputs)
    x = x[:len(x) // batch_size * batch_size or len(x)]
    return [part.contiguous(memory_format=torch.channels_last) if x.is_cuda else part
            for part in x.split(batch_size)]


def bench_model(inputs: List[torch.Tensor], settings: Settings, repeat: int) -> Tuple[dict, list]:
    """The compiled extractor alone on network batches, under the pipeline's numerics (its cuDNN autotuning
    and TF32 choices); its build (TorchScript, from fidfast's cache when there) and first call apart."""
    device, precision = settings.device, settings.precision
    start = time.perf_counter()
    model = feature_extractor(resolve_weights(), DIMS, device, precision)
    build_seconds = time.perf_counter() - start
    with numerics(settings):
        start = time.perf_counter()
        model(inputs[0])  # cuDNN's choices (autotuning in fp32) and TorchScript's profiling runs
        synchronize(device)
        first_call_seconds = time.perf_counter() - start
        timing = time_passes(lambda: [model(x) for x in inputs], device, repeat, warmup=lambda: model(inputs[0]))
    return (throughput(timing, sum(int(x.shape[0]) for x in inputs), build_seconds=build_seconds,
                       first_call_seconds=first_call_seconds, batch_size=int(inputs[0].shape[0])), timing["result"])


def bench_statistics(features: list, device: torch.device, repeat: int) -> dict:
    """``FeatureStats.update`` (the native float64 streaming covariance) over every feature batch."""
    def accumulate() -> FeatureStats:
        stats = FeatureStats(DIMS, device=device)
        for f in features:
            stats.update(f)
        return stats

    return throughput(time_passes(accumulate, device, repeat), sum(int(f.shape[0]) for f in features))


def bench_pytorch_fid_stages(decode_refs: Sequence[Path], model_images: int, device: torch.device,
                             num_workers: int, repeat: int) -> dict:
    """pytorch-fid's loader (decode + ToTensor) over ``decode_refs``, its model at batch 50 (its resize
    inside) on the first ``model_images`` of them, its np.cov."""
    import torchvision.transforms as TF
    from pytorch_fid.fid_score import ImagePathDataset
    from pytorch_fid.inception import InceptionV3

    batch_size = min(50, len(decode_refs))

    def load() -> list:
        dataset = ImagePathDataset(list(decode_refs), transforms=TF.ToTensor())
        return list(torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=num_workers))

    decode = time_passes(load, torch.device("cpu"), repeat)
    start = time.perf_counter()
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[DIMS]]).to(device).eval()
    build_seconds = time.perf_counter() - start
    inputs = [x.to(device) for x in decode["result"][:max(1, model_images // batch_size)]]
    with torch.no_grad():
        forward = time_passes(lambda: [model(x)[0].flatten(1) for x in inputs], device, repeat,
                              warmup=lambda: model(inputs[0]))
    features = torch.cat(forward["result"]).double().cpu().numpy()
    cov = time_passes(lambda: (np.mean(features, axis=0), np.cov(features, rowvar=False)), torch.device("cpu"),
                      repeat)
    n_model = sum(int(x.shape[0]) for x in inputs)
    return {"decode": throughput(decode, len(decode_refs), workers=num_workers, batch_size=batch_size),
            "model": throughput(forward, n_model, build_seconds=build_seconds, batch_size=batch_size,
                                cudnn_tf32=torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None),
            "statistics": throughput(cov, n_model)}


def random_moments(dims: int, rank: Optional[int], seed: int) -> Tuple[np.ndarray, ...]:
    """(mu1, sigma1, mu2, sigma2): full-rank SPD covariances (A Aᵀ/d + 0.01 I) or, with ``rank``, the
    sample covariances of rank + 1 random feature vectors (singular, as N ≤ dims images give)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        mu = torch.randn(dims, dtype=torch.float64, generator=g)
        if rank is None:
            a = torch.randn(dims, dims, dtype=torch.float64, generator=g)
            sigma = a @ a.T / dims + 0.01 * torch.eye(dims, dtype=torch.float64)
        else:
            x = torch.randn(rank + 1, dims, dtype=torch.float64, generator=g)
            x -= x.mean(0)
            sigma = x.T @ x / rank
        out += [mu.numpy(), sigma.numpy()]
    return tuple(out)


def bench_frechet(moments: Tuple[np.ndarray, ...], device: torch.device, with_sqrtm: bool,
                  with_pytorch_fid: bool, repeat: int) -> dict:
    """Seconds for one Fréchet distance at d = 2048: fidfast auto (median of ``repeat``), and once each
    (tens of seconds on a CPU) scipy's sqrtm route and pytorch-fid's calculate_frechet_distance."""
    cpu = torch.device("cpu")
    small = [np.zeros(64), np.eye(64), np.ones(64), 2 * np.eye(64)]  # warm-up: loads the linear algebra
    found = {}
    timing = time_passes(lambda: frechet_distance(*moments, method="auto"), cpu, repeat,
                         warmup=lambda: frechet_distance(*small))
    found["fidfast auto"] = {"seconds": timing["seconds"], "fid": timing["result"]}
    if device.type == "cuda":
        timing = time_passes(lambda: frechet_distance(*moments, method="auto", device=device), device, repeat,
                             warmup=lambda: frechet_distance(*small, device=device))
        found["fidfast auto (cuda)"] = {"seconds": timing["seconds"], "fid": timing["result"]}
    if with_sqrtm:
        start = time.perf_counter()
        fid = frechet_distance(*moments, method="scipy")
        found["fidfast scipy"] = {"seconds": time.perf_counter() - start, "fid": fid}
    if with_sqrtm and with_pytorch_fid:
        from pytorch_fid.fid_score import calculate_frechet_distance

        start = time.perf_counter()
        try:
            fid = float(calculate_frechet_distance(*moments))
            found["pytorch-fid"] = {"seconds": time.perf_counter() - start, "fid": fid}
        except ValueError as exc:  # "Imaginary component ..."
            found["pytorch-fid"] = {"seconds": time.perf_counter() - start, "fid": None, "problem": str(exc)}
    ref = found["fidfast auto"]["fid"]
    for entry in found.values():
        if entry.get("fid") is not None:
            entry["rel_diff_to_auto"] = abs(entry["fid"] - ref) / abs(ref)
    return found


def bench_stages(found: dict, a: Path, b: Path, device: torch.device, precision: str, model_images: int,
                 repeat: int, with_pytorch_fid: bool, with_sqrtm: bool, measured: Callable[[], None]) -> dict:
    """Each stage of fidfast in ``precision`` timed on its own over the same images, into ``found``
    (``measured()`` after each, so a run cut short keeps what it measured): the feeder over all of folder A
    with the default workers, and with none (one core; at most SERIAL_DECODE_IMAGES images on CUDA); the
    device stages over its first ``model_images`` images (whole network batches)."""
    import fidfast

    refs = image_files(a)
    settings = Settings(dims=DIMS, device=device, precision=precision, progress=False, cache=False)
    keep = max(1, -(-model_images // settings.batch_size)) * settings.batch_size
    found.update({"repeat": repeat, "batch_size": settings.batch_size, "precision": precision})
    print(f"  stages: decode {len(refs)} images ...", file=sys.stderr, flush=True)
    found["decode"], chunks = bench_decode(refs, settings, repeat, keep)
    serial_refs = refs[:SERIAL_DECODE_IMAGES] if device.type == "cuda" else refs
    serial = Settings(dims=DIMS, device=device, precision=precision, num_workers=0, progress=False, cache=False)
    found["decode (main process only)"], _ = bench_decode(serial_refs, serial, repeat)
    measured()
    found["transfer"], device_batches = bench_transfer(chunks, device, repeat)
    print(f"  stages: preprocess, model, statistics {precision} ...", file=sys.stderr, flush=True)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    found[f"preprocess {precision}"], inputs = bench_preprocess(device_batches, device, dtype, repeat)
    del device_batches
    found[f"model {precision}"], features = bench_model(network_batches(inputs, settings.batch_size), settings,
                                                        repeat)
    del inputs
    found[f"statistics {precision}"] = bench_statistics(features, device, repeat)
    del features
    measured()
    if with_pytorch_fid:
        print("  stages: pytorch-fid ...", file=sys.stderr, flush=True)
        n_model = found[f"model {precision}"]["images"]
        found["pytorch-fid"] = bench_pytorch_fid_stages(refs[:n_model] if device.type == "cuda" else refs, n_model,
                                                        device, min(8, usable_cpus()), repeat)  # its default
        measured()
    print("  stages: Fréchet distance ...", file=sys.stderr, flush=True)
    repeat = repeat if device.type == "cuda" else 1  # each takes seconds on a CPU
    n_b = len(image_files(b))
    if device.type == "cpu" and len(refs) > DIMS and n_b > DIMS:  # full-rank statistics of the images (not timed)
        s1, s2 = (fidfast.compute_stats(f, dims=DIMS, device=device, precision=precision, cache=False,
                                        progress=False) for f in (a, b))
        found["frechet"] = {"inputs": "the two folders' statistics",
                            **bench_frechet((s1.mu, s1.sigma, s2.mu, s2.sigma), device, with_sqrtm,
                                            with_pytorch_fid, repeat)}
    elif min(len(refs), n_b) > DIMS:  # on a GPU: the time depends on the size only; the FIDs are the commands'
        found["frechet"] = {"inputs": "random full-rank covariances",
                            **bench_frechet(random_moments(DIMS, None, SEED), device, with_sqrtm,
                                            with_pytorch_fid, repeat)}
    else:  # N ≤ dims: full-rank random covariances, and the singular ones that N images give
        found["frechet"] = {"inputs": "random full-rank covariances (N ≤ dims)",
                            **bench_frechet(random_moments(DIMS, None, SEED), device, with_sqrtm,
                                            with_pytorch_fid, repeat)}
        rank = min(len(refs), n_b) - 1
        found["frechet (singular)"] = {"inputs": f"random rank-{rank} covariances, as {rank + 1} images give",
                                       **bench_frechet(random_moments(DIMS, rank, SEED), device, False, False,
                                                       repeat)}
    measured()
    return found
