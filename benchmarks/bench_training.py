#!/usr/bin/env python
"""fidfast.FrechetInceptionDistance against torchmetrics 1.9's, side by side in one run, as a training loop
uses them: a few updates of real and generated batches, then compute().

All get the same seeded photo-like uint8 batches (N×3×S×S, S = --size), the same FID Inception weights
(fidfast's converted file, saved where torch-fidelity reads it) and torchmetrics' default protocol
(antialias=True). Variants: torchmetrics under PyTorch's defaults (on CUDA its convolutions may use TF32:
``torch.backends.cudnn.allow_tf32`` is True unless the caller turns it off, and the run records it);
``fidfast`` in fp32, its default (no TF32: torchmetrics' numbers); ``fidfast fp16``. Each round times,
device synchronised around each: construction, the first update, every later update (their median is the
per-update time) and compute(); rounds alternate the order (reversed every other round); medians. The
first round of each variant in the process (warm-up: imports, fidfast's compiled-module cache, cuDNN's
choices) is reported apart as the cold start. Also reported: each metric's state after all updates
(bytes), and the FIDs' relative differences.

Writes benchmarks/results/training_<device-kind>.json and .md (``speedup``: torchmetrics' total seconds ÷
fidfast's, both in their defaults; per variant under ``variants``).

    python benchmarks/bench_training.py [--batches 4] [--batch-size 32] [--size 256] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
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


def _batch(job: tuple) -> np.ndarray:
    i, batch_size, size = job
    rng = np.random.default_rng([SEED, i])
    return np.stack([natural_image(rng, size, size) for _ in range(batch_size)])


def batches(n_batches: int, batch_size: int, size: int) -> list:
    """2 × n_batches seeded uint8 batches N×3×S×S, alternately real and generated (made on every core)."""
    jobs = [(i, batch_size, size) for i in range(2 * n_batches)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        imgs = list(pool.map(_batch, jobs))
    return [(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), i % 2 == 0) for i, x in enumerate(imgs)]


def state_bytes(metric) -> int:
    """The metric's state: fidfast's buffers, or torchmetrics' metric states."""
    tensors = ([getattr(metric, name) for name in metric._defaults] if hasattr(metric, "_defaults")
               else list(metric.buffers()))
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def run(make, data, device) -> dict:
    """One metric's life, each step timed with the device synchronised: construction (and the move to the
    device), every update (host batch → device, as a loop hands it over), compute()."""
    def timed(fn):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        return time.perf_counter() - start, out

    construction, metric = timed(make)
    updates = [timed(lambda: metric.update(imgs.to(device), real=real))[0] for imgs, real in data]
    compute, fid = timed(lambda: float(metric.compute()))
    steady = statistics.median(updates[1:]) if len(updates) > 1 else None
    return {"seconds": construction + sum(updates) + compute, "construction_s": construction,
            "first_update_s": updates[0], "update_s": steady, "compute_s": compute, "fid": fid,
            "state_bytes": state_bytes(metric)}


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
        "fidfast fp16": lambda: fidfast.FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=path,
                                                                 precision="fp16").to(device),
    }
    if device.type != "cuda":
        del tools["fidfast fp16"]  # fp16 is a GPU precision
    # what torchmetrics runs under: PyTorch's defaults in this process (it sets none of these itself)
    defaults = ({"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                 "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn_benchmark": torch.backends.cudnn.benchmark} if device.type == "cuda" else None)
    if device.type == "cuda":  # CUDA's context and cuDNN's libraries load here, charged to no tool
        torch.nn.functional.conv2d(torch.zeros(1, 3, 8, 8, device=device), torch.zeros(1, 3, 3, 3, device=device))
        synchronize(device)
    cold = {name: run(make, data[:2], device) for name, make in tools.items()}  # warm-up, reported as cold start
    runs = {name: [] for name in tools}
    for r in range(args.repeat):
        for name in (list(tools) if r % 2 == 0 else list(tools)[::-1]):
            runs[name].append(run(tools[name], data, device))
            x = runs[name][-1]
            print(f"round {r}: {name} {x['seconds']:.2f} s (update {x['update_s'] or 0:.3f} s), FID {x['fid']:.6f}",
                  flush=True)
    n = sum(len(x) for x, _ in data)
    per_update = args.batch_size
    fids = {name: rs[0]["fid"] for name, rs in runs.items()}
    ref = runs["torchmetrics"]

    def med(rs: list, key: str):
        values = [r[key] for r in rs if r[key] is not None]
        return statistics.median(values) if values else None

    variants = {}
    for name, rs in runs.items():
        v = {key: med(rs, key) for key in ("seconds", "construction_s", "first_update_s", "update_s", "compute_s")}
        v.update({"cold_construction_s": cold[name]["construction_s"],
                  "cold_first_update_s": cold[name]["first_update_s"],
                  "fid": fids[name], "state_bytes": rs[0]["state_bytes"],
                  "update_images_per_s": per_update / v["update_s"] if v["update_s"] else None,
                  "speedup": med(ref, "seconds") / v["seconds"],
                  "update_speedup": (med(ref, "update_s") / v["update_s"]) if v["update_s"] else None,
                  "fid_rel_diff_vs_torchmetrics": abs(fids[name] - fids["torchmetrics"]) / abs(fids["torchmetrics"])})
        variants[name] = v
    if "fidfast fp16" in fids:
        variants["fidfast fp16"]["fid_rel_diff_vs_fidfast_fp32"] = abs(fids["fidfast fp16"] - fids["fidfast"]) / abs(
            fids["fidfast"])
    med_s = {name: v["seconds"] for name, v in variants.items()}
    report = {"args": vars(args) | {"out": str(args.out)}, "device": str(device), "images": n,
              "seconds": {name: [r["seconds"] for r in rs] for name, rs in runs.items()},
              "median_seconds": med_s, "fid": fids, "state_bytes": {k: v["state_bytes"] for k, v in variants.items()},
              "speedup": variants["fidfast"]["speedup"], "update_speedup": variants["fidfast"]["update_speedup"],
              "fid_rel_diff": variants["fidfast"]["fid_rel_diff_vs_torchmetrics"],
              "torchmetrics_defaults": defaults, "variants": variants, "runs": runs, "cold": cold,
              "torchmetrics_version": _version("torchmetrics"), "machine": info}
    write_results(f"training_{device_kind(device)}", report, markdown(report), args.out)


def markdown(report: dict) -> str:
    args, info, variants = report["args"], report["machine"], report["variants"]
    defaults = report["torchmetrics_defaults"]
    md = [f"# fidfast.FrechetInceptionDistance vs torchmetrics {report['torchmetrics_version']} ({report['device']})",
          "",
          f"- machine: {info['cpu']}, {info['cpu_cores_usable']} usable cores"
          + (f", {info['gpu']['name']}" if info["gpu"] else "") + f"; torch {info['torch']}; "
          f"commit {(info['git_commit'] or '?')[:10]}" + (" + uncommitted changes" if info.get("git_dirty") else ""),
          f"- work: {args['batches']} updates of {args['batch_size']} real and {args['batches']} of "
          f"{args['batch_size']} generated {args['size']}² uint8 images ({report['images']} in all), then compute(); "
          f"feature=2048, antialias=True; medians of {args['repeat']} alternating rounds after a warm-up (the "
          "warm-up's construction and first update are the *cold* columns: the first in this process)",
          "- torchmetrics runs under PyTorch's defaults" + (
              f": cuDNN TF32 {'allowed' if defaults['cudnn_allow_tf32'] else 'off'}, matmul TF32 "
              f"{'allowed' if defaults['cuda_matmul_allow_tf32'] else 'off'}, cuDNN autotuning "
              f"{'on' if defaults['cudnn_benchmark'] else 'off'}; fidfast fp32 turns TF32 off inside its updates "
              "(torchmetrics' numbers without TF32), fidfast fp16 runs the network in half precision"
              if defaults else " (fp32 on the CPU)"), "",
          "| tool | seconds | images/s | speedup | construction s (cold) | first update s (cold) | update s | "
          "update speedup | compute s | FID | rel. diff to torchmetrics | state |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, v in variants.items():
        md.append(f"| {name} | {v['seconds']:.2f} | {report['images'] / v['seconds']:.1f} | {v['speedup']:.2f}× | "
                  f"{v['construction_s']:.2f} ({v['cold_construction_s']:.2f}) | {v['first_update_s']:.3f} "
                  f"({v['cold_first_update_s']:.2f}) | {v['update_s']:.3f} | {v['update_speedup']:.2f}× | "
                  f"{v['compute_s']:.2f} | {v['fid']:.6f} | {v['fid_rel_diff_vs_torchmetrics']:.2e} | "
                  f"{v['state_bytes'] / 2**20:.1f} MiB |")
    md += ["", f"FID relative difference, fidfast fp32 vs torchmetrics: {report['fid_rel_diff']:.2e}"
           + (f"; fidfast fp16 vs fidfast fp32: {variants['fidfast fp16']['fid_rel_diff_vs_fidfast_fp32']:.2e}"
              if "fidfast fp16" in variants else "")
           + ". All states are fixed-size at dims 2048 (fidfast: count, float64 mean and co-moment per side; "
           "torchmetrics: float64 sum and Σxxᵀ per side).", ""]
    return "\n".join(md)


if __name__ == "__main__":
    main()
