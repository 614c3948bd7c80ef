#!/usr/bin/env python
"""The FID of the same images under each protocol (fidfast's ``--protocol``), side by side.

    .venv/bin/python benchmarks/bench_protocols.py [--images 120] [--dims 2048]

Two pairs of generated photo-like folders: ``a`` against ``b`` (both 256², so every protocol upsamples
to 299, where antialiasing changes nothing), and ``mixed`` against ``a``, where ``mixed`` holds images of
random sizes from 40 to 1024 px (up- and downsampling, non-square). Each FID in fp32 on the CPU. Writes
``results/protocols_<device>.json`` and ``.md``: the FIDs, and each one's difference from pytorch-fid's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from core import RESULTS, SEED, machine_info, make_image_folders, write_results
from PIL import Image

import fidfast
from fidfast.demo import natural_image
from fidfast.preprocess import protocols_of


def mixed_folder(work: Path, n: int) -> Path:
    """n generated images of random sizes, 40 to 1024 px a side (cached under ``work``)."""
    folder = work / f"mixed_n{n}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([SEED, 7])
        for i, (h, w) in enumerate(rng.integers(40, 1025, size=(n, 2))):
            Image.fromarray(natural_image(rng, int(h), int(w))).save(folder / f"img_{i:06d}.png")
        (folder / ".complete").touch()
    return folder


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [f"## The FID of the same images under each protocol ({results['date']})", "",
             f"Machine: {m['cpu']}, {m['cpu_cores_usable']} usable cores; torch {m['torch']}; fidfast commit "
             f"{(m['git_commit'] or 'unknown')[:10]}{' + uncommitted changes' if m['git_dirty'] else ''}. "
             f"dims {results['dims']}, fp32 on the CPU. Images: {results['images']}.", "",
             "| protocol | " + " | ".join(results["pairs"]) + " |", "| --- |" + " ---: |" * len(results["pairs"])]
    for protocol in protocols_of("inception"):
        cells = []
        for pair in results["pairs"]:
            fid, ref = results["fid"][pair][protocol], results["fid"][pair]["pytorch-fid"]
            cells.append(f"{fid:.3f}" + ("" if protocol == "pytorch-fid" else f" ({100 * (fid - ref) / ref:+.2f}%)"))
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
    lines += ["", "In parentheses: the difference from pytorch-fid's protocol on the same images. With fewer images "
              "than dims the covariances are singular and every FID is biased alike; the differences are the "
              "protocols'."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=120, help="images per folder")
    p.add_argument("--dims", type=int, default=2048)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fidfast-bench")
    args = p.parse_args()
    a, b = make_image_folders(args.work, args.images, 256, "png", 90)
    mixed = mixed_folder(args.work, args.images // 2)
    pairs = {"a vs b (256², upsampled)": (a, b), "mixed sizes vs a (down- and upsampled)": (mixed, a)}
    results = {"benchmark": "bench_protocols", "date": dt.date.today().isoformat(), "dims": args.dims,
               "images": f"{args.images} generated 256² PNGs in a and in b (b tinted warm); {args.images // 2} "
                         "of random sizes (40 to 1024 px a side) in mixed",
               "machine": machine_info(torch.device("cpu")), "pairs": list(pairs), "fid": {}}
    for name, (x, y) in pairs.items():
        results["fid"][name] = {}
        for protocol in protocols_of("inception"):
            with warnings.catch_warnings():  # N < dims: said once in the report, not per FID
                warnings.simplefilter("ignore")
                fid = fidfast.calculate_fid(x, y, protocol=protocol, dims=args.dims, device="cpu", precision="fp32",
                                            cache=False, progress=False)
            results["fid"][name][protocol] = fid
            print(f"  {name:40s} {protocol:13s} FID {fid:.4f}", file=sys.stderr, flush=True)
    table = markdown(results)
    write_results("protocols_cpu", results, table, RESULTS)
    print(table)


if __name__ == "__main__":
    main()
