"""fidfast's stages timed one by one in this process, over the same images, beside pytorch-fid's own:
decode, host→device transfer, preprocess, model, statistics, and the Fréchet distance at d = 2048."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from core import DIMS, SEED, image_files, synchronize, throughput, time_passes

from fidfast import frechet_distance
from fidfast.decode import iter_decoded
from fidfast.features import feature_extractor
from fidfast.preprocess import PackedBatch, resize_normalize
from fidfast.settings import Settings
from fidfast.stats import FeatureStats
from fidfast.weights import resolve_weights


def bench_decode(refs: Sequence[Path], settings: Settings, repeat: int) -> Tuple[dict, list]:
    """fidfast's loader alone (worker processes decode and pack; their start-up counts); returns the batches."""
    timing = time_passes(lambda: list(iter_decoded(refs, settings)), torch.device("cpu"), repeat)
    return (throughput(timing, len(refs), workers=settings.num_workers, batch_size=settings.batch_size),
            timing["result"])


def bench_transfer(batches: list, device: torch.device, repeat: int) -> Tuple[Optional[dict], list]:
    """Host → device copy of the packed uint8 batches (pinned, non-blocking, as the pipeline does);
    returns the batches on the device. Nothing to copy on the CPU."""
    if device.type != "cuda":
        return None, batches
    pinned = [b.pin_memory() for b in batches]

    def copy() -> list:
        return [PackedBatch(b.data.to(device, non_blocking=True), b.meta) for b in pinned]

    timing = time_passes(copy, device, repeat)
    mb = sum(b.data.numel() for b in batches) / 1e6
    return (throughput(timing, sum(len(b) for b in batches), megabytes=mb, gb_per_s=mb / 1e3 / timing["seconds"]),
            timing["result"])


def bench_preprocess(device_batches: list, device: torch.device, dtype: torch.dtype, repeat: int
                     ) -> Tuple[dict, list]:
    """``resize_normalize``: packed uint8 → N×3×299×299 network input (channels_last on CUDA)."""
    def run() -> list:
        return [resize_normalize(b, 299, dtype, channels_last=device.type == "cuda") for b in device_batches]

    timing = time_passes(run, device, repeat)
    return throughput(timing, sum(len(b) for b in device_batches)), timing["result"]


def bench_model(inputs: list, device: torch.device, precision: str, repeat: int) -> Tuple[dict, list]:
    """The compiled extractor alone on preprocessed batches; its build (TorchScript) and first call apart."""
    start = time.perf_counter()
    model = feature_extractor(resolve_weights(), DIMS, device, precision)
    build_seconds = time.perf_counter() - start
    with torch.inference_mode():
        start = time.perf_counter()
        model(inputs[0])  # TorchScript's executor optimises on the first calls: two untimed ones
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
    """pytorch-fid's loader (decode + ToTensor), its model at batch 50 (its resize inside), its np.cov."""
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
            "model": throughput(forward, n_model, build_seconds=build_seconds, batch_size=batch_size),
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


def bench_stages(a: Path, b: Path, device: torch.device, precisions: Sequence[str], model_images: int,
                 repeat: int, with_pytorch_fid: bool, with_sqrtm: bool) -> dict:
    """Each stage of fidfast timed on its own over the same images: the loader over all of folder A, the
    device stages over its first batches (at least ``model_images`` images)."""
    import fidfast

    refs = image_files(a)
    settings = Settings(dims=DIMS, device=device, precision=precisions[0], progress=False, cache=False)
    n_batches = max(1, -(-model_images // settings.batch_size))
    found: dict = {"repeat": repeat, "batch_size": settings.batch_size}
    print(f"  stages: decode {len(refs)} images ...", file=sys.stderr, flush=True)
    found["decode"], batches = bench_decode(refs, settings, repeat)
    serial = Settings(dims=DIMS, device=device, precision=precisions[0], num_workers=0, progress=False, cache=False)
    found["decode (main process only)"], _ = bench_decode(refs, serial, repeat)
    found["transfer"], device_batches = bench_transfer(batches[:n_batches], device, repeat)
    for precision in precisions:
        print(f"  stages: preprocess, model, statistics {precision} ...", file=sys.stderr, flush=True)
        dtype = torch.float16 if precision == "fp16" else torch.float32
        found[f"preprocess {precision}"], inputs = bench_preprocess(device_batches, device, dtype, repeat)
        found[f"model {precision}"], features = bench_model(inputs, device, precision, repeat)
        found[f"statistics {precision}"] = bench_statistics(features, device, repeat)
        del inputs, features
    if with_pytorch_fid:
        print("  stages: pytorch-fid ...", file=sys.stderr, flush=True)
        found["pytorch-fid"] = bench_pytorch_fid_stages(refs, found[f"model {precisions[0]}"]["images"], device,
                                                        settings.num_workers, repeat)
    print("  stages: Fréchet distance ...", file=sys.stderr, flush=True)
    repeat = repeat if device.type == "cuda" else 1  # each takes seconds on a CPU
    n_b = len(image_files(b))
    if len(refs) > DIMS and n_b > DIMS:  # full-rank statistics of the real images (not timed)
        s1, s2 = (fidfast.compute_stats(f, dims=DIMS, device=device, precision=precisions[0], cache=False,
                                        progress=False) for f in (a, b))
        found["frechet"] = {"inputs": "the two folders' statistics",
                            **bench_frechet((s1.mu, s1.sigma, s2.mu, s2.sigma), device, with_sqrtm,
                                            with_pytorch_fid, repeat)}
    else:  # N ≤ dims: full-rank random covariances, and the singular ones that N images give
        found["frechet"] = {"inputs": "random full-rank covariances (N ≤ dims)",
                            **bench_frechet(random_moments(DIMS, None, SEED), device, with_sqrtm,
                                            with_pytorch_fid, repeat)}
        rank = min(len(refs), n_b) - 1
        found["frechet (singular)"] = {"inputs": f"random rank-{rank} covariances, as {rank + 1} images give",
                                       **bench_frechet(random_moments(DIMS, rank, SEED), device, False, False,
                                                       repeat)}
    return found
