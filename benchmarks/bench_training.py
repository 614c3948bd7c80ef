#!/usr/bin/env python
"""fidfast.FrechetInceptionDistance against torchmetrics 1.9's, side by side in one run, as a training loop
uses them: a few updates of real and generated batches, then compute().

Both get the same seeded photo-like uint8 batches (N×3×S×S, S = --size), the same FID Inception weights
(fidfast's converted file, saved where torch-fidelity reads it) and torchmetrics' default protocol
(antialias=True); fidfast runs in fp32, torchmetrics' numbers. Rounds alternate the two tools (order
reversed every other round); medians. Also reported: each metric's state after all updates (bytes), and
the FIDs' relative difference.

Writes benchmarks/results/training_<device-kind>.json and .md.

    python benchmarks/bench_training.py [--batches 4] [--batch-size 32] [--size 256] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from core import RESULTS, SEED, _version, device_kind, machine_info, synchronize, write_results

import fidfast
from fidfast import weights
from fidfast.demo import natural_image


def batches(n_batches: int, batch_size: int, size: int) -> list:
    rng = np.random.default_rng(SEED)
    out = []
    for i in range(2 * n_batches):
        imgs = np.stack([natural_image(rng, size, size) for _ in range(batch_size)])
        out.append((torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), i % 2 == 0))
    return out


def state_bytes(metric) -> int:
    """The metric's state: fidfast's buffers, or torchmetrics' metric states."""
    tensors = ([getattr(metric, name) for name in metric._defaults] if hasattr(metric, "_defaults")
               else list(metric.buffers()))
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def run(make, data, device) -> tuple:
    """(seconds for construction + every update + compute, FID, state bytes)."""
    synchronize(device)
    start = time.perf_counter()
    metric = make()
    for imgs, real in data:
        metric.update(imgs.to(device), real=real)
    fid = float(metric.compute())
    synchronize(device)
    return time.perf_counter() - start, fid, state_bytes(metric)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=4, help="updates per side")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    device = torch.device(args.device)
    info = machine_info(device)
    from torchmetrics.image.fid import FrechetInceptionDistance as TorchmetricsFID

    path = str(weights.save_for_pytorch_fid(Path(tempfile.mkdtemp()) / weights.PYTORCH_FID_FILE))
    data = batches(args.batches, args.batch_size, args.size)
    tools = {
        "torchmetrics": lambda: TorchmetricsFID(feature=2048, feature_extractor_weights_path=path).to(device),
        "fidfast": lambda: fidfast.FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=path,
                                                            precision="fp32").to(device),
    }
    for make in tools.values():  # warm-up: imports, fidfast's compiled-module cache, torchmetrics' first call
        run(make, data[:2], device)
    times = {name: [] for name in tools}
    fids, states = {}, {}
    for r in range(args.repeat):
        for name in (list(tools) if r % 2 == 0 else list(tools)[::-1]):
            seconds, fids[name], states[name] = run(tools[name], data, device)
            times[name].append(seconds)
            print(f"round {r}: {name} {seconds:.2f} s, FID {fids[name]:.6f}", flush=True)
    n = sum(len(x) for x, _ in data)
    med = {name: statistics.median(t) for name, t in times.items()}
    report = {"args": vars(args) | {"out": str(args.out)}, "device": str(device), "images": n, "seconds": times,
              "median_seconds": med, "fid": fids, "state_bytes": states,
              "speedup": med["torchmetrics"] / med["fidfast"],
              "fid_rel_diff": abs(fids["fidfast"] - fids["torchmetrics"]) / abs(fids["torchmetrics"]),
              "torchmetrics_version": _version("torchmetrics"), "machine": info}
    md = [f"# fidfast.FrechetInceptionDistance vs torchmetrics {report['torchmetrics_version']} ({device})", "",
          f"- machine: {info['cpu']}, {info['cpu_cores_usable']} usable cores"
          + (f", {info['gpu']['name']}" if info["gpu"] else "") + f"; torch {info['torch']}; "
          f"commit {(info['git_commit'] or '?')[:10]}" + (" + uncommitted changes" if info.get("git_dirty") else ""),
          f"- work: {args.batches} updates of {args.batch_size} real and {args.batches} of {args.batch_size} "
          f"generated {args.size}² uint8 images ({n} in all), then compute(); feature=2048, antialias=True, "
          f"fp32; construction included; medians of {args.repeat} alternating rounds after a warm-up", "",
          "| tool | seconds | images/s | speedup | FID | state after the updates |", "|---|---:|---:|---:|---:|---:|"]
    for name in tools:
        md.append(f"| {name} | {med[name]:.2f} | {n / med[name]:.1f} | {med['torchmetrics'] / med[name]:.2f}× | "
                  f"{fids[name]:.6f} | {states[name] / 2**20:.1f} MiB |")
    md += ["", f"FID relative difference: {report['fid_rel_diff']:.2e}. Both states are fixed-size at dims 2048 "
           "(fidfast: count, float64 mean and co-moment per side; torchmetrics: float64 sum and Σxxᵀ per side).", ""]
    write_results(f"training_{device_kind(device)}", report, "\n".join(md), args.out)


if __name__ == "__main__":
    main()
