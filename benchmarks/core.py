"""What the benchmark scripts share: the machine's description, timing, generated image folders,
pytorch-fid run offline, and writing results (JSON, markdown and a PNG chart) under ``results/``.

The scripts import fidfast from this checkout (also when it is not pip-installed) and take every
function under test from fidfast itself, never from a copy here.
"""
from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # fidfast from this checkout

from fidfast.demo import natural_image, warm_shift  # noqa: E402
from fidfast.sources import list_image_files  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
DIMS = 2048
SEED = 0


# -- timing ---------------------------------------------------------------------------------------

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
    """A timing as JSON: median seconds per pass over ``n`` images, and images/s."""
    return {"seconds": timing["seconds"], "all_seconds": timing["all_seconds"],
            "images_per_s": n / timing["seconds"], "images": n, **extra}


# -- images ---------------------------------------------------------------------------------------

def _write_image(job: Tuple[str, int, int, int, bool, int]) -> None:
    path, folder_index, index, size, shifted, quality = job
    img = natural_image(np.random.default_rng([SEED, folder_index, index]), size, size)
    Image.fromarray(warm_shift(img) if shifted else img).save(
        path, **({"quality": quality} if path.endswith(".jpg") else {}))


def _write_images(jobs: List[Tuple[str, int, int, int, bool, int]]) -> None:
    with concurrent.futures.ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(_write_image, jobs, chunksize=64))


def make_image_folders(work: Path, n: int, size: int, fmt: str, quality: int) -> Tuple[Path, Path]:
    """Two folders of n generated photo-like images, the second tinted warm (cached under ``work``; a
    ``.complete`` marker says a folder pair is whole)."""
    root = work / (f"images_n{n}_s{size}_{fmt}" + (f"_q{quality}" if fmt == "jpg" else ""))
    folders = (root / "a", root / "b")
    if (root / ".complete").exists():
        return folders
    jobs = []
    for k, folder in enumerate(folders):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        jobs += [(str(folder / f"img_{i:06d}.{fmt}"), k, i, size, k == 1, quality) for i in range(n)]
    _write_images(jobs)
    (root / ".complete").touch()
    return folders


def make_image_folder(work: Path, n: int, size: int, fmt: str, quality: int) -> Path:
    """One folder of n generated photo-like images: the first of :func:`make_image_folders`' pair (the
    same files), cached under ``work`` on its own."""
    folder = work / (f"images_n{n}_s{size}_{fmt}" + (f"_q{quality}" if fmt == "jpg" else "")) / "a"
    if (folder.parent / ".complete").exists() or (folder.parent / ".complete_a").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    _write_images([(str(folder / f"img_{i:06d}.{fmt}"), 0, i, size, False, quality) for i in range(n)])
    (folder.parent / ".complete_a").touch()
    return folder


def link_subset(files: Sequence[Path], folder: Path) -> Path:
    """A folder of links (hard where the file system allows, else symbolic) to ``files``: a subset of a
    folder's images, read from the same bytes, listed like any folder."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in files:
        try:
            os.link(f, folder / f.name)
        except OSError:
            os.symlink(Path(f).resolve(), folder / f.name)
    return folder


def image_files(folder: Path) -> List[Path]:
    return list_image_files(folder)


def warm_disk_cache(folders: Sequence[Path]) -> int:
    """Read every image once, so no tool pays for the first read from disk; returns bytes read."""
    return sum(len(p.read_bytes()) for folder in folders for p in image_files(folder))


def install_pytorch_fid_weights(torch_home: Path) -> Path:
    """fidfast's converted weights where pytorch-fid looks for its download (under ``torch_home``)."""
    from fidfast.weights import PYTORCH_FID_FILE, save_for_pytorch_fid

    dst = torch_home / "hub" / "checkpoints" / PYTORCH_FID_FILE
    return dst if dst.exists() else save_for_pytorch_fid(dst)


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
    """The machine, the software and the commit a result was measured with."""
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
    """``cpu``, or the GPU's name as a file-name part (``nvidia-h100-80gb-hbm3``)."""
    if device.type != "cuda":
        return "cpu"
    return file_name_part(torch.cuda.get_device_name(device))


def file_name_part(name: str) -> str:
    """A device's name as a file-name part: lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# -- results --------------------------------------------------------------------------------------

def fmt_num(x: Optional[float], digits: int = 3) -> str:
    if x is None:
        return "—"
    if x == 0 or 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"
    return f"{x:.2e}"


def write_results(stem: str, results: dict, markdown: str, out: Path = RESULTS,
                  chart: Optional[Callable[[Path], None]] = None) -> List[Path]:
    """``<stem>.json`` and ``<stem>.md`` under ``out``, and ``<stem>.png`` drawn by ``chart`` (needs
    matplotlib, a benchmark-only dependency: without it the chart is skipped with a note)."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / f"{stem}.json", out / f"{stem}.md"]
    written[0].write_text(json.dumps(results, indent=1) + "\n")
    if chart is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
        except ImportError:
            print("benchmarks: no chart (pip install matplotlib)", file=sys.stderr)
        else:
            chart(out / f"{stem}.png")
            written.append(out / f"{stem}.png")
            markdown += f"\n![per-stage throughput]({stem}.png)\n"
    written[1].write_text(markdown)
    print("benchmarks: wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return written
