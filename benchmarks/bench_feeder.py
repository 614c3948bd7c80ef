#!/usr/bin/env python
"""The feeder on the CPU: how fast W workers deliver decoded, packed chunks against W × one core's decode
rate, what it costs to start and stop, listing 100k files, and host memory on large photos.

Measured in one run, on generated folders of 256² JPEGs (quality 90) and PNGs (core.py's generator):

* *single-core decode*: ``fidfast.decode.ImageReader.read`` over the folder in this process (PIL, one core);
* *feeder*: ``fidfast.feeder.Feeder(refs, cpu, W)`` iterated to its last chunk, its workers' start-up
  included (``images_per_s``) and from its first chunk on (``steady_images_per_s``); ``scaling`` =
  images_per_s / (W × the single-core rate); rounds alternate the order, medians;
* *independent processes*: W forked processes each decoding its share alone (no feeder): what the
  machine's W cores give at all, the ceiling the feeder's scaling is set against;
* *first batch*: a fresh ``python -c`` process (import fidfast, list the folder, start a Feeder, take its
  first chunk): seconds from just before the parent's ``Popen`` to that chunk, with the steps' split;
* *teardown*: ``Feeder.close()`` after two chunks, while the workers decode the next ones;
* *list_100k*: ``fidfast.sources.list_image_files`` on a folder of 100,000 empty ``.png`` files;
* *memory*: peak RSS (``VmHWM``; ``getrusage``'s figures beside it) of the main process and of the largest
  worker, in a fresh process per case running a Feeder, at the CPU defaults and with 2 workers, over 12 photos of
  12 MP and 8 of 24 MP (JPEGs, generated cheaply: a small natural image upscaled, with noise); the main
  process preprocesses each chunk to 299² as the pipeline does. Set beside the bound the feeder's
  docstring claims.

The 2-core machine is shared: each timing records how many cores other processes kept busy meanwhile
(``other_busy_cores``, from /proc/stat less this run's own CPU time), and the run waits (up to
``--quiet-wait`` seconds) for a quiet moment before each block. Writes ``feeder_cpu.json`` and ``.md``
under ``--out``; issue 25's CPU targets (scaling ≥ 0.9 with 2 workers, teardown ≤ 0.3 s, list_100k ≤ 1 s)
are reported met or missed.

    .venv/bin/python benchmarks/bench_feeder.py [--images 1500] [--repeat 5] [--out benchmarks/results]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from core import REPO, RESULTS, SEED, fmt_num, image_files, machine_info, make_image_folder, warm_disk_cache, \
    write_results
from PIL import Image

# Issue 25's targets on the 2-core machine.
TARGETS = {"scaling": 0.9, "teardown_s": 0.3, "list_100k_s": 1.0}
PHOTOS = {"12MP": (12, 4000, 3000), "24MP": (8, 6000, 4000)}  # (count, width, height)
MIB = 2**20


# -- how busy the machine was ---------------------------------------------------------------------

def _machine_busy_seconds() -> float:
    """CPU seconds all processes spent busy since boot (/proc/stat; 0 where there is none)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its reaped children (the feeder's workers, once closed)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def measured(fn: Callable[[], dict]) -> dict:
    """``fn()``'s dict, plus the cores other processes kept busy meanwhile (its children must be reaped
    before it returns)."""
    busy, own, start = _machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - start
    other = (_machine_busy_seconds() - busy) - (_own_cpu_seconds() - own)
    return {**out, "other_busy_cores": max(0.0, other / wall)}


def wait_for_quiet(limit_s: float, threshold: float = 0.2) -> float:
    """Waits until one second passes with fewer than ``threshold`` cores busy (at most ``limit_s``);
    returns the busy cores of the last second sampled."""
    deadline = time.monotonic() + limit_s
    while True:
        before = _machine_busy_seconds()
        time.sleep(1.0)
        busy = _machine_busy_seconds() - before
        if busy < threshold or time.monotonic() >= deadline:
            return busy


# -- throughput -----------------------------------------------------------------------------------

def single_core(refs: List[Path]) -> dict:
    """One core's decode rate: ``ImageReader.read`` of every image in this process."""
    from fidfast.decode import ImageReader

    reader = ImageReader(refs)
    cpu, start = _cpu(resource.RUSAGE_SELF), time.perf_counter()
    for i in range(len(refs)):
        img, _, err = reader.read(i)
        assert img is not None, err
    seconds = time.perf_counter() - start
    user, system = (b - a for a, b in zip(cpu, _cpu(resource.RUSAGE_SELF)))
    return {"seconds": seconds, "images_per_s": len(refs) / seconds,
            "cpu_ms_per_image": 1e3 * (user + system) / len(refs), "sys_ms_per_image": 1e3 * system / len(refs)}


def _cpu(who: int) -> Tuple[float, float]:
    usage = resource.getrusage(who)
    return usage.ru_utime, usage.ru_stime


def _decode_all(refs: List[Path]) -> None:
    from fidfast.decode import ImageReader

    reader = ImageReader(refs)
    for i in range(len(refs)):
        reader.read(i)


def independent_decoders(refs: List[Path], workers: int) -> dict:
    """The machine's own ceiling for ``workers`` decoding processes: as many forked processes (the feeder's
    start method), each decoding its share of ``refs`` alone, no ring, no results; from start to join."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    start = time.perf_counter()
    procs = [ctx.Process(target=_decode_all, args=(refs[k::workers],)) for k in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images_per_s": len(refs) / seconds}


def feeder_pass(refs: List[Path], workers: int) -> dict:
    """A Feeder over ``refs`` from construction (workers' start-up) to its last chunk, then closed."""
    import torch

    from fidfast.feeder import Feeder

    main_cpu, workers_cpu = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    n = first_n = 0
    first = None
    with Feeder(refs, torch.device("cpu"), workers) as feeder:
        for chunk in feeder:
            n += len(chunk)
            if first is None:
                first, first_n = time.perf_counter() - start, len(chunk)
        last = time.perf_counter() - start
    wall = time.perf_counter() - start
    assert n == len(refs)
    main = sum(_cpu(resource.RUSAGE_SELF)) - sum(main_cpu)
    user, system = (b - a for a, b in zip(workers_cpu, _cpu(resource.RUSAGE_CHILDREN)))  # reaped by close()
    return {"seconds": last, "images_per_s": n / last, "first_chunk_s": first,
            "steady_images_per_s": (n - first_n) / (last - first) if last > first else None,
            "close_s": wall - last, "main_cpu_s": main, "workers_user_s": user, "workers_sys_s": system,
            "cores_busy": (main + user + system) / wall,
            "worker_cpu_ms_per_image": 1e3 * (user + system) / n, "worker_sys_ms_per_image": 1e3 * system / n}


FIRST_BATCH = """\
import json, sys, time
t = {"interpreter": time.time()}
import torch, fidfast
from fidfast.feeder import Feeder
from fidfast.sources import list_image_files
t["imported"] = time.time()
refs = list_image_files(sys.argv[1])
t["listed"] = time.time()
feeder = Feeder(refs, torch.device("cpu"), int(sys.argv[2]))
t["started"] = time.time()
chunk = next(iter(feeder))
t["first_chunk"] = time.time()
feeder.close()
t["closed"] = time.time()
print(json.dumps(t))
"""


def first_batch(folder: Path, workers: int) -> dict:
    """Seconds from just before a fresh process is started to its Feeder's first chunk, split into the
    interpreter's start, imports (torch, fidfast), listing, starting the Feeder and waiting for the chunk."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", FIRST_BATCH, str(folder), str(workers)], capture_output=True,
                          text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_feeder: the first-batch process failed:\n{proc.stderr[-2000:]}")
    t = json.loads(proc.stdout.splitlines()[-1])
    steps = {"interpreter_s": t["interpreter"] - start, "imports_s": t["imported"] - t["interpreter"],
             "list_s": t["listed"] - t["imported"], "start_feeder_s": t["started"] - t["listed"],
             "wait_first_chunk_s": t["first_chunk"] - t["started"], "close_s": t["closed"] - t["first_chunk"]}
    return {"first_batch_s": t["first_chunk"] - start, **steps}


def teardown(refs: List[Path], workers: int) -> dict:
    """``Feeder.close()`` after two chunks, the workers decoding the next ones."""
    import torch

    from fidfast.feeder import Feeder

    feeder = Feeder(refs, torch.device("cpu"), workers)
    chunks = iter(feeder)
    next(chunks)
    next(chunks)
    start = time.perf_counter()
    feeder.close()
    return {"teardown_s": time.perf_counter() - start}


def list_100k(scratch: Path, repeat: int) -> dict:
    """``list_image_files`` on 100,000 empty .png files (created here; their entries are in the OS's cache)."""
    from fidfast.sources import list_image_files

    folder = scratch / "list_100k"
    folder.mkdir()
    start = time.perf_counter()
    for i in range(100_000):
        os.close(os.open(folder / f"img_{i:06d}.png", os.O_CREAT | os.O_WRONLY, 0o644))
    created = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        found = list_image_files(folder)
        times.append(time.perf_counter() - start)
    assert len(found) == 100_000
    return {"list_100k_s": statistics.median(times), "all_seconds": times, "files": len(found),
            "create_s": created}


def throughput(folder: Path, worker_counts: List[int], repeat: int, quiet_wait: float) -> dict:
    """Single-core decode and the feeder at each worker count, rounds alternating the order; medians."""
    refs = image_files(folder)
    warm_disk_cache([folder])
    quiet = wait_for_quiet(quiet_wait)
    names = ["single"] + [f"W{w}" for w in worker_counts] + [f"P{w}" for w in worker_counts if w > 1]
    runs: Dict[str, List[dict]] = {name: [] for name in names}
    for r in range(repeat):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name == "single":
                runs[name].append(measured(lambda: single_core(refs)))
            elif name[0] == "P":
                runs[name].append(measured(lambda: independent_decoders(refs, int(name[1:]))))
            else:
                runs[name].append(measured(lambda: feeder_pass(refs, int(name[1:]))))
    single = statistics.median(x["images_per_s"] for x in runs["single"])
    out = {"images": len(refs), "busy_cores_before": quiet,
           "single_core": {"images_per_s": single, "runs": runs["single"],
                           "cpu_ms_per_image": statistics.median(x["cpu_ms_per_image"] for x in runs["single"]),
                           "other_busy_cores_max": max(x["other_busy_cores"] for x in runs["single"])},
           "workers": {}}
    for w in worker_counts:
        rs = runs[f"W{w}"]
        rate = statistics.median(x["images_per_s"] for x in rs)
        steady = statistics.median(x["steady_images_per_s"] for x in rs if x["steady_images_per_s"])
        out["workers"][str(w)] = {
            "images_per_s": rate, "scaling": rate / (w * single),
            "steady_images_per_s": steady, "steady_scaling": steady / (w * single),
            "first_chunk_in_process_s": statistics.median(x["first_chunk_s"] for x in rs),
            **{key: statistics.median(x[key] for x in rs) for key in (
                "cores_busy", "main_cpu_s", "worker_cpu_ms_per_image", "worker_sys_ms_per_image")},
            "other_busy_cores_max": max(x["other_busy_cores"] for x in rs), "runs": rs}
        ps = runs.get(f"P{w}")
        if ps:  # the machine's ceiling: independent processes
            ceiling = statistics.median(x["images_per_s"] for x in ps)
            out["workers"][str(w)].update(
                independent_images_per_s=ceiling, independent_scaling=ceiling / (w * single),
                of_independent=rate / ceiling, independent_runs=ps,
                other_busy_cores_max=max(out["workers"][str(w)]["other_busy_cores_max"],
                                         *(x["other_busy_cores"] for x in ps)))
    return out


# -- memory ---------------------------------------------------------------------------------------

def make_photos(work: Path, name: str, count: int, width: int, height: int) -> Path:
    """``count`` JPEGs (quality 90) of width × height: a small natural image upscaled, with 4 bits of noise
    (camera-like file sizes, cheap to make). Cached under ``work``."""
    from fidfast.demo import natural_image

    folder = work / f"photos_{name}"
    if (folder / ".complete").exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([SEED, width, height])
    for i in range(count):
        small = Image.fromarray(natural_image(rng, height // 10, width // 10))
        pixels = np.array(small.resize((width, height), Image.BILINEAR))
        pixels ^= rng.integers(0, 16, size=pixels.shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{i:03d}.jpg", quality=90)
    (folder / ".complete").touch()
    return folder


def _status_mib(key: str, pid: str = "self") -> float:
    """A memory figure of /proc/<pid>/status (VmRSS: now; VmHWM: the peak of the process's own memory), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _children() -> List[str]:
    """The pids of this process's living children (its threads' /proc children lists)."""
    return [pid for task in Path("/proc/self/task").iterdir()
            for pid in (task / "children").read_text().split()]


def memory_case(folder: Path, workers: int, chunk: int) -> dict:
    """Run in a fresh process: a Feeder over ``folder``, each chunk preprocessed to 299² as the CPU
    pipeline does; peak RSS of this process and of its largest worker.

    Peaks come from ``VmHWM`` (the high-water mark of a process's own memory): ``ru_maxrss`` of
    RUSAGE_SELF is also recorded, but Linux carries the launching process's peak across ``exec`` into it,
    so it shows the benchmark's own size. Worker peaks are read before the workers stop, and also from
    RUSAGE_CHILDREN once they are reaped; a worker's growth is measured from the RSS of an idle worker
    (a Feeder with nothing to decode), which starts with the pages it shares with this process."""
    import torch

    from fidfast.feeder import Feeder
    from fidfast.preprocess import resize_normalize

    refs = image_files(folder)
    baseline = _status_mib("VmRSS")
    idle = None
    if workers:
        with Feeder([], torch.device("cpu"), workers):
            time.sleep(0.5)
            idle = max(_status_mib("VmRSS", pid) for pid in _children())
    start = time.perf_counter()
    n = 0
    worker_peaks: List[float] = []
    with Feeder(refs, torch.device("cpu"), workers, chunk=chunk) as feeder:
        for batch in feeder:
            resize_normalize(batch, 299, torch.float32)
            n += len(batch)
        worker_peaks = [_status_mib("VmHWM", pid) for pid in _children()]
    seconds = time.perf_counter() - start
    main_peak = _status_mib("VmHWM")
    worker_peak = max(worker_peaks) if worker_peaks else None
    return {"images": n, "seconds": seconds, "rss_before_feeder_mib": baseline, "main_peak_mib": main_peak,
            "main_growth_mib": main_peak - baseline, "idle_worker_rss_mib": idle,
            "largest_worker_peak_mib": worker_peak,
            "largest_worker_growth_mib": worker_peak - idle if worker_peak is not None else None,
            "ru_maxrss_self_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "ru_maxrss_children_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def memory(work: Path) -> dict:
    """Each memory case in its own process (peaks do not mix): CPU default workers and 2 workers, on each
    photo folder; the bound the feeder's docstring claims, computed from its constants."""
    import torch

    from fidfast import feeder
    from fidfast.settings import default_batch_size, default_num_workers

    cpu = torch.device("cpu")
    defaults = default_num_workers(cpu)
    chunk = min(feeder.CHUNK_IMAGES, default_batch_size(cpu))  # what the pipeline asks for
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cases = []
    for name, (count, width, height) in PHOTOS.items():
        folder = make_photos(work, name, count, width, height)
        for workers in sorted({defaults, 2}):
            proc = subprocess.run([sys.executable, __file__, "--memory-case", str(folder), str(workers), str(chunk)],
                                  capture_output=True, text=True, env=env, cwd=REPO)
            if proc.returncode != 0:
                raise RuntimeError(f"bench_feeder: memory case failed:\n{proc.stderr[-2000:]}")
            found = json.loads(proc.stdout.splitlines()[-1])
            slots = workers + feeder.SPARE_SLOTS
            cases.append({"photos": name, "count": count, "megapixels": width * height / 1e6,
                          "decoded_mib_each": width * height * 3 / MIB, "workers": workers,
                          "default_workers": workers == defaults, "chunk": chunk,
                          "ring_mib": slots * feeder.SLOT_BYTES / MIB, **found})
            print(f"  memory {name} workers={workers}: main {found['main_peak_mib']:.0f} MiB "
                  f"(+{found['main_growth_mib']:.0f}), largest worker {fmt_num(found['largest_worker_peak_mib'])} MiB",
                  file=sys.stderr, flush=True)
    return {
        "cases": cases,
        "claim": {
            "docstring": "Host memory is bounded by bytes, not images: the ring (slots × SLOT_BYTES) plus the "
                         "images being decoded. An image too large for a slot travels alone through the result "
                         "pipe; images above LARGE_IMAGE_BYTES wait for a share of DECODE_BUDGET_BYTES before "
                         "they are decoded.",
            "slot_mib": feeder.SLOT_BYTES / MIB, "spare_slots": feeder.SPARE_SLOTS,
            "large_image_mib": feeder.LARGE_IMAGE_BYTES / MIB,
            "decode_budget_mib": feeder.DECODE_BUDGET_BYTES / MIB,
            "bound_mib": {str(c["workers"]): c["ring_mib"] + feeder.DECODE_BUDGET_BYTES / MIB for c in cases},
        },
    }


# -- the report -----------------------------------------------------------------------------------

def status(value: Optional[float], goal: float, at_most: bool) -> str:
    if value is None:
        return "not measured"
    ok = value <= goal if at_most else value >= goal
    return "met" if ok else "missed"


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# The feeder on the CPU ({m['cpu']}, {m['cpu_cores_usable']} usable cores), {r['date']}", "",
             f"torch {m['torch']}, Python {m['python']}, Pillow {m['packages']['pillow']}; commit "
             f"{(m['git_commit'] or '?')[:10]}" + (" + uncommitted changes" if m["git_dirty"] else "")
             + f"; load average {m['load_average_at_start'][0]:.2f} at the start, "
             f"{m['load_average_at_end'][0]:.2f} at the end. Folders of {r['config']['images']} generated "
             f"256² images; medians of {r['config']['repeat']} rounds (order alternating). *cores busy*: CPU "
             "seconds of the main process and the workers per wall second of a pass; *CPU ms/image*: one core "
             "decoding in-process against the workers' (their system time in brackets); *other busy*: cores "
             "other processes kept busy during the timings (the machine is shared).", "",
             "| images | workers | single core, img/s | feeder, img/s | scaling | steady img/s | steady scaling | "
             "W independent processes, img/s (scaling) | cores busy | CPU ms/image: one core / workers (sys) | "
             "first batch s (fresh process) | teardown s | other busy |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for fmt, c in r["formats"].items():
        single = c["single_core"]["images_per_s"]
        for w, e in c["workers"].items():
            lines.append(f"| 256² {fmt.upper()} | {w} | {single:,.0f} | {e['images_per_s']:,.0f} | "
                         f"{e['scaling']:.2f} | {e['steady_images_per_s']:,.0f} | {e['steady_scaling']:.2f} | "
                         + (f"{e['independent_images_per_s']:,.0f} ({e['independent_scaling']:.2f})"
                            if "independent_scaling" in e else "—") + " | "
                         f"{e['cores_busy']:.2f} | {c['single_core']['cpu_ms_per_image']:.3f} / "
                         f"{e['worker_cpu_ms_per_image']:.3f} ({e['worker_sys_ms_per_image']:.3f}) | "
                         f"{c['first_batch'][w]['first_batch_s']:.2f} | {c['teardown'][w]['teardown_s']:.3f} | "
                         f"{max(e['other_busy_cores_max'], c['single_core']['other_busy_cores_max']):.2f} |")
    fb = r["formats"]["jpg"]["first_batch"][str(r["workers"])]
    lines += ["", f"First batch of a fresh process (JPEG, {r['workers']} workers), {fb['first_batch_s']:.2f} s: "
              f"interpreter {fb['interpreter_s']:.2f} s, imports (torch, fidfast) {fb['imports_s']:.2f} s, listing "
              f"{fb['list_s'] * 1e3:.0f} ms, starting the Feeder {fb['start_feeder_s'] * 1e3:.0f} ms, waiting for "
              f"the first chunk {fb['wait_first_chunk_s'] * 1e3:.0f} ms.",
              f"Listing 100,000 empty .png files: {r['list_100k_s']:.3f} s (median of "
              f"{len(r['list_100k']['all_seconds'])}; creating them took {r['list_100k']['create_s']:.1f} s).", "",
              "Issue 25's CPU targets:", "", "| target | goal | measured | status |", "| --- | ---: | ---: | --- |"]
    for key, t in r["targets"].items():
        goal = f"{'≤' if t['at_most'] else '≥'} {t['goal']:g}"
        lines.append(f"| {t['what']} | {goal} | {t['value']:.3g} | {t['status']} |")
    lines += ["", scaling_verdict(r)]
    if r.get("memory"):
        lines += render_memory(r["memory"], r["memory_verdict"])
    return "\n".join(lines) + "\n"


def render_memory(mem: dict, verdict: str) -> List[str]:
    claim = mem["claim"]
    lines = ["", "Memory: a fresh process per case runs a Feeder over large photos (JPEG q90), preprocessing each "
             f"chunk to 299² as the CPU pipeline does (chunks of {mem['cases'][0]['chunk']}). Peaks are VmHWM, the "
             "high-water mark of each process's own memory (the main process's ru_maxrss is in the JSON but "
             "useless here: Linux carries the launching process's peak across exec). Main *growth* = its peak − "
             "its RSS before the Feeder (torch and fidfast imported); worker *growth* = its peak − an idle "
             "worker's RSS. RSS counts shared pages (libraries, the ring) in every process that touched them.",
             "",
              "| photos | workers | main peak MiB | main growth MiB | largest worker peak MiB | worker growth MiB | "
              "ring MiB | claimed bound MiB | seconds |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for c in mem["cases"]:
        lines.append(f"| {c['count']} × {c['megapixels']:.0f} MP ({c['decoded_mib_each']:.0f} MiB decoded) | "
                     f"{c['workers']}{' (default)' if c['default_workers'] else ''} | {c['main_peak_mib']:.0f} | "
                     f"{c['main_growth_mib']:.0f} | {fmt_num(c['largest_worker_peak_mib'])} | "
                     f"{fmt_num(c['largest_worker_growth_mib'])} | {c['ring_mib']:.0f} | "
                     f"{claim['bound_mib'][str(c['workers'])]:.0f} | {c['seconds']:.2f} |")
    lines += ["", f"The claim (fidfast/feeder.py): \"{claim['docstring']}\" With its constants: slots of "
              f"{claim['slot_mib']:.0f} MiB (workers + {claim['spare_slots']}), images above "
              f"{claim['large_image_mib']:.0f} MiB decoded share a {claim['decode_budget_mib']:.0f} MiB budget; "
              "the bound column is ring + budget. " + verdict]
    return lines


def scaling_verdict(r: dict) -> str:
    """What the headline scaling is made of: how many of the W cores the pass kept busy, and how much more
    CPU an image costs in a worker than in one process decoding alone."""
    jpg = r["formats"]["jpg"]
    e, w = jpg["workers"][str(r["workers"])], r["workers"]
    single_ms = jpg["single_core"]["cpu_ms_per_image"]
    extra = e["worker_cpu_ms_per_image"] / single_ms - 1
    ceiling = (f" {w} independent processes, each decoding its share alone (no feeder), reach "
               f"{e['independent_images_per_s']:,.0f} images/s, a scaling of {e['independent_scaling']:.2f}: the "
               f"feeder delivers {e['of_independent']:.2f}× what this machine's {w} cores give without it."
               if "independent_scaling" in e else "")
    return (f"What the scaling of {e['scaling']:.2f} ({w} workers, JPEG) is made of: the pass kept "
            f"{e['cores_busy']:.2f} of {w} cores busy (the main process {e['main_cpu_s']:.3f} CPU s of it), and a "
            f"worker spent {e['worker_cpu_ms_per_image']:.3f} ms of CPU per image against {single_ms:.3f} ms for "
            f"one process decoding alone ({100 * extra:+.0f}%; {e['worker_sys_ms_per_image']:.3f} ms of it system "
            "time: page faults on the fresh ring and on the pages the fork shares, pipes). Steady state (after "
            f"the first chunk): {e['steady_scaling']:.2f}." + ceiling)


def memory_verdict(mem: dict) -> str:
    """Measured growth (main + workers × largest worker) against the claimed bound, per case."""
    worst = []
    for c in mem["cases"]:
        total = c["main_growth_mib"] + c["workers"] * max(0.0, c["largest_worker_growth_mib"] or 0)
        worst.append((total / mem["claim"]["bound_mib"][str(c["workers"])], total, c))
    ratio, total, c = max(worst, key=lambda x: x[0])
    return (f"Largest measured growth, main + workers × largest worker (an overestimate: shared pages count in "
            f"each): {total:.0f} MiB ({c['count']} × {c['megapixels']:.0f} MP, {c['workers']} workers), "
            f"{ratio:.2f}× the claimed bound: " + ("within it." if ratio <= 1 else "ABOVE it."))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--memory-case":  # a memory case, in its own process
        print(json.dumps(memory_case(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--images", type=int, default=1500, help="256² images per generated folder")
    p.add_argument("--repeat", type=int, default=5, help="rounds of each timing (medians)")
    p.add_argument("--quiet-wait", type=float, default=20.0,
                   help="seconds to wait, before each block, for a second with the machine idle")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "fidfast-bench",
                   help="generated images (kept for reuse)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--skip-memory", action="store_true", help="leave out the large photos")
    args = p.parse_args()
    import torch

    from fidfast.settings import usable_cpus

    cores = usable_cpus()
    worker_counts = sorted({1, cores})
    results: dict = {"benchmark": "bench_feeder", "date": dt.date.today().isoformat(),
                     "config": {"images": args.images, "size": 256, "jpeg_quality": 90, "repeat": args.repeat,
                                "worker_counts": worker_counts},
                     "machine": machine_info(torch.device("cpu")), "formats": {}}
    for fmt in ("jpg", "png"):
        print(f"bench_feeder: {args.images} 256² {fmt.upper()} ...", file=sys.stderr, flush=True)
        folder = make_image_folder(args.work, args.images, 256, fmt, 90)
        found = throughput(folder, worker_counts, args.repeat, args.quiet_wait)
        refs = image_files(folder)
        found["first_batch"], found["teardown"] = {}, {}
        for w in worker_counts:
            runs = [measured(lambda: first_batch(folder, w)) for _ in range(args.repeat)]
            found["first_batch"][str(w)] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            tears = [measured(lambda: teardown(refs, w)) for _ in range(args.repeat)]
            found["teardown"][str(w)] = {"teardown_s": statistics.median(x["teardown_s"] for x in tears),
                                         "max_s": max(x["teardown_s"] for x in tears),
                                         "other_busy_cores_max": max(x["other_busy_cores"] for x in tears)}
        results["formats"][fmt] = found
        for w, e in found["workers"].items():
            print(f"  {fmt} W={w}: {e['images_per_s']:,.0f} img/s, scaling {e['scaling']:.2f} (steady "
                  f"{e['steady_scaling']:.2f}); first batch {found['first_batch'][w]['first_batch_s']:.2f} s; "
                  f"teardown {found['teardown'][w]['teardown_s']:.3f} s", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_feeder_") as scratch:
        wait_for_quiet(args.quiet_wait)
        results["list_100k"] = list_100k(Path(scratch), args.repeat)
    if not args.skip_memory:
        print("bench_feeder: memory on large photos ...", file=sys.stderr, flush=True)
        results["memory"] = memory(args.work)
        results["memory_verdict"] = memory_verdict(results["memory"])
    jpg = results["formats"]["jpg"]
    headline = str(cores)
    results.update({
        "workers": cores, "images_per_s": jpg["workers"][headline]["images_per_s"],
        "single_core_decode_images_per_s": jpg["single_core"]["images_per_s"],
        "scaling": jpg["workers"][headline]["scaling"],
        "first_batch_s": jpg["first_batch"][headline]["first_batch_s"],
        "teardown_s": jpg["teardown"][headline]["teardown_s"],
        "list_100k_s": results["list_100k"]["list_100k_s"],
    })
    results["targets"] = {
        key: {"what": what, "goal": TARGETS[key], "at_most": at_most, "value": results[key],
              "status": status(results[key], TARGETS[key], at_most)}
        for key, what, at_most in (
            ("scaling", f"256² JPEG, {cores} workers: images/s ÷ ({cores} × one core's decode)", False),
            ("teardown_s", f"Feeder.close() mid-run, {cores} workers busy (s)", True),
            ("list_100k_s", "list_image_files on 100,000 files (s)", True))}
    results["machine"]["load_average_at_end"] = list(os.getloadavg())
    text = markdown(results)
    write_results("feeder_cpu", results, text, args.out)
    print(text)


if __name__ == "__main__":
    main()
