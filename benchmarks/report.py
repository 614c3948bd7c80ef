"""The report of bench_fid.py: the targets (issue #4's on the CPU, issue #25's on a GPU), the markdown
tables, and the PNG chart of per-stage throughput that is written beside them. Every function here takes
results as far as they were measured (the file is written after every command)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from core import DIMS, fmt_num

# Issue #4's CPU targets, for 120 PNGs of 256² on 2 cores.
CPU_TARGETS = {"stats_speedup": 2.0, "e2e_speedup": 4.0}
# Issue #25's GPU targets, for an H200 or H100 with 16 cores, N ≥ 10k JPEGs of 256², fidfast fp16.
GPU_TARGETS = {"model_images_per_s": 14_000.0, "e2e_steady_images_per_s": 10_000.0, "e2e_speedup": 15.0,
               "fixed_cost_s": 3.0, "fp32_images_per_s": 2_000.0}
FP16_FID_SHIFT = 1e-3  # issue #10: |FID fp16 − FID fp32| / FID fp32 on ≥ 2,000 images per side, at most


# -- targets --------------------------------------------------------------------------------------

def target_status(value: Optional[float], goal: float, at_most: bool = False) -> str:
    if value is None:
        return "not measured"
    if at_most:
        return "met" if value <= goal else f"missed ({value / goal:.1f}× the bound)"
    if value >= goal:
        return f"met ({value / goal:.2f}× the goal)"
    short = 100 * (1 - value / goal)
    return f"missed by {short:.1f}%" if short < 10 else f"missed by {short:.0f}%"


def summary(results: dict, case: str, variant: str) -> dict:
    """A variant's medians in one case of the command lines ({} when not measured)."""
    return (((results.get("command_lines") or {}).get(case) or {}).get("summary") or {}).get(variant) or {}


def evaluate_targets(results: dict) -> List[dict]:
    """The targets, each with whether this run's conditions are the ones the target is set for."""
    cfg, machine = results["config"], results["machine"]
    stages = results.get("stages") or {}
    sizes_ok = cfg["size"] == 256 and cfg["folders"] is None

    rows = []
    if cfg["device"] == "cpu":
        cond = sizes_ok and cfg["images"] == 120 and cfg["format"] == "png" and machine["cpu_cores_usable"] == 2
        why = "120 PNGs of 256² on a 2-core CPU"
        for key, label, case in (("stats_speedup", "one folder's statistics, speedup over pytorch-fid", "stats"),
                                 ("e2e_speedup", "end to end (2 folders, dims 2048), speedup over pytorch-fid",
                                  "e2e")):
            value = summary(results, case, "fidfast fp32").get("speedup")
            rows.append({"target": label, "goal": CPU_TARGETS[key], "unit": "×", "value": value,
                         "status": target_status(value, CPU_TARGETS[key]), "conditions": why,
                         "conditions_met": cond})
        return rows
    gpu = (machine.get("gpu") or {}).get("name", "")
    cond = (sizes_ok and ("H100" in gpu or "H200" in gpu) and cfg["images"] >= 10_000 and cfg["format"] == "jpg"
            and machine["cpu_cores_usable"] >= 16)
    why = "an H200 or H100 with 16 cores, N ≥ 10k JPEGs of 256²"
    model = (stages.get("model fp16") or {}).get("images_per_s")
    fixed = (results.get("fixed_cost") or {}).get("fidfast fp16") or {}
    for key, label, value, unit, at_most in (
            ("model_images_per_s", "model alone (fp16 TorchScript, batch 500)", model, "images/s", False),
            ("e2e_steady_images_per_s", "end to end, steady rate (fidfast fp16; two sizes)",
             fixed.get("images_per_s"), "images/s", False),
            ("e2e_speedup", "end to end, speedup over pytorch-fid (fidfast fp16)",
             summary(results, "e2e", "fidfast fp16").get("speedup"), "×", False),
            ("fixed_cost_s", "fixed cost of the command (fidfast fp16; two sizes)", fixed.get("fixed_s"), "s", True),
            ("fp32_images_per_s", "fp32 end to end (fixed cost included)",
             summary(results, "e2e", "fidfast fp32").get("images_per_s"), "images/s", False)):
        rows.append({"target": label, "goal": GPU_TARGETS[key], "unit": unit, "value": value, "at_most": at_most,
                     "status": target_status(value, GPU_TARGETS[key], at_most), "conditions": why,
                     "conditions_met": cond})
    shift = fp16_fid_shift(results)
    rows.append({"target": "fp16 FID against fp32 (end to end), relative", "goal": FP16_FID_SHIFT, "unit": "rel",
                 "value": shift, "at_most": True, "status": target_status(shift, FP16_FID_SHIFT, at_most=True),
                 "conditions": "≥ 2,000 images per side", "conditions_met": cfg["images"] >= 2000})
    return rows


def fp16_fid_shift(results: dict) -> Optional[float]:
    """|FID fp16 − FID fp32| / FID fp32 of the end-to-end command lines (same images, same GPU)."""
    fp16, fp32 = (summary(results, "e2e", f"fidfast {p}").get("fid") for p in ("fp16", "fp32"))
    return abs(fp16 - fp32) / abs(fp32) if fp16 is not None and fp32 else None


# -- the report -----------------------------------------------------------------------------------

def fmt_rate(entry: Optional[dict]) -> str:
    return "—" if not entry else f"{entry['images_per_s']:,.1f} img/s"


CASE_TITLES = {"stats": "one folder's statistics", "e2e": f"end to end, two folders, dims {DIMS}",
               "e2e_quarter": "end to end, a quarter of each folder"}


def render_markdown(results: dict) -> str:
    """The results as markdown: the machine, the command lines side by side, the fixed costs, the stages,
    the targets."""
    parts = [render_header(results), render_command_lines(results)]
    if results.get("fixed_cost") or (results.get("command_lines") or {}).get("aot_build"):
        parts.append(render_fixed_costs(results))
    if (results.get("stages") or {}).get("decode"):
        parts.append(render_stages(results["stages"]))
    parts.append(render_targets(results.get("targets") or []))
    return "\n\n".join(parts) + "\n"


def render_header(results: dict) -> str:
    cfg, m = results["config"], results["machine"]
    gpu = m.get("gpu")
    commit = (m["git_commit"] or "unknown")[:10] + (" + uncommitted changes" if m["git_dirty"] else "")
    end = (m.get("load_average_at_end") or [float("nan")])[0]
    return "\n".join([
        f"## fidfast vs pytorch-fid {m['packages']['pytorch-fid']}: {results['device_kind']}, {results['date']}",
        "",
        "Machine: " + (f"{gpu['name']} ({gpu['memory_gib']} GiB), " if gpu else "")
        + f"{m['cpu']}, {m['cpu_cores_usable']} usable cores, {m['ram_gib']} GiB RAM; load average "
        f"{m['load_average_at_start'][0]:.2f} at the start, {end:.2f} at the end. "
        f"torch {m['torch']}" + (f" (CUDA {m['torch_cuda_build']})" if gpu else "") + f", Python {m['python']}, "
        f"SciPy {m['packages']['scipy']}; fidfast native ops: CPU {m['fidfast']['native_cpu']}, CUDA "
        f"{m['fidfast']['native_cuda']}; commit {commit}.",
        "",
        f"Images: {cfg['image_description']}. Both tools run with their default `--num-workers` "
        f"(pytorch-fid min(8, cores); fidfast {results['num_workers']} here) and batch size (pytorch-fid 50, "
        f"fidfast {results['fidfast_batch_size']}); each command is a fresh process (imports and model build "
        f"count); medians of {cfg['repeat']} interleaved round(s)."
        + (f" On the GPU pytorch-fid runs with PyTorch's defaults (cuDNN TF32 convolutions allowed: "
           f"{cfg.get('pytorch_fid_cudnn_tf32')}); fidfast fp32 without TF32, fidfast fp16 in half precision; "
           "`compile` is fidfast's `--compile` (the network compiled ahead of time by AOTInductor)."
           if gpu else "")
        + (" pytorch-fid ran through the benchmark's sqrtm shim (this SciPy's `scipy.linalg.sqrtm` has no "
           "`disp` argument; the shim gives it SciPy < 1.18's signature: benchmarks/commands.py)."
           if cfg.get("pytorch_fid_sqrtm_shim") else ""),
    ])


def render_command_lines(results: dict) -> str:
    lines = ["| run | tool | seconds | CPU s | images/s | speedup | FID | FID rel. diff | note |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case, data in (results.get("command_lines") or {}).items():
        if case not in CASE_TITLES:
            continue
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


def render_fixed_costs(results: dict) -> str:
    """T = F + n/r from the end-to-end times at two sizes, and the compiled network's build."""
    lines = ["Fixed cost and steady rate of the end-to-end command, from its median seconds T at two sizes n "
             "(T = F + n/r): F is what does not grow with the images (interpreter, imports, weights, network "
             "build or load, cuDNN autotuning, workers' start and stop, Fréchet distance), r the images/s in "
             "between.", "", "| tool | images | seconds | fixed cost F | steady rate r |",
             "| --- | --- | --- | ---: | ---: |"]
    for name, f in (results.get("fixed_cost") or {}).items():
        lines.append(f"| {name} | {f['images'][0]} / {f['images'][1]} | "
                     f"{f['seconds'][0]:.2f} / {f['seconds'][1]:.2f} | "
                     + (f"{f['fixed_s']:.2f} s | {f['images_per_s']:,.0f} img/s |" if f["images_per_s"]
                        else "— | — (the larger run was not slower) |"))
    build = (results.get("command_lines") or {}).get("aot_build")
    if build:
        if build["cache_warm_before"]:
            lines += ["", "`--compile`: fidfast's cache already held this GPU's compiled network, so no run built "
                      "it (`aot_build_s` not measured here)."]
        elif build.get("run") and not build.get("built"):
            lines += ["", f"`--compile`'s first run did not leave a compiled network in the cache (exit "
                      f"{build['run']['rc']}; {build['run']['problem'] or 'see its stderr in the JSON'}): "
                      "`aot_build_s` not measured."]
        elif build.get("run"):
            run = build["run"]
            lines += ["", f"`--compile`'s first run built the compiled network: {run['seconds']:.1f} s on "
                      f"{build['n_images']} images (exit {run['rc']}), not counted above; the build itself "
                      f"(that run less the later runs' median on the same images): "
                      f"{fmt_num(build['aot_build_s'])} s."]
    return "\n".join(lines)


def render_stages(stages: dict) -> str:
    pf = stages.get("pytorch-fid") or {}
    lines = [f"Stages, in-process, each timed alone on the same images of the first folder (fidfast "
             f"{stages.get('precision', 'fp32')}, batch {stages['batch_size']}; median of {stages['repeat']} "
             "pass(es) after a warm-up):", "",
             "| stage | fidfast | pytorch-fid | images | note |", "| --- | ---: | ---: | ---: | --- |"]

    def row(stage: str, ours: Optional[dict], theirs: Optional[dict], note: str) -> None:
        n = (ours or theirs or {}).get("images", "")
        lines.append(f"| {stage} | {fmt_rate(ours) if ours else '—'} | {fmt_rate(theirs)} | {n} | {note} |")

    d = stages["decode"]
    decoder = "JPEGs by libjpeg-turbo where it gives PIL's pixels" if d.get("fast_jpeg") else "PIL"
    theirs = pf.get("decode")
    row("decode (the feeder alone)" if "chunk" in d else "decode (loader alone)", d, theirs,
        f"{d['workers']} worker process(es), chunks of {d.get('chunk', '—')}, {decoder}; start-up and shutdown "
        "included" + (f"; pytorch-fid's DataLoader (workers: {theirs['workers']}) ends in float tensors (ToTensor)"
                      if theirs else ""))
    if stages.get("decode (main process only)"):
        row("decode (main process only)", stages["decode (main process only)"], None, "num_workers=0: one core")
    if "transfer" in stages:
        t = stages["transfer"]
        row("transfer host→device", t, None, f"{t['gb_per_s']:.1f} GB/s, packed uint8 from pinned memory" if t
            else "CPU: nothing to copy")
    for key, e in stages.items():
        if key.startswith("preprocess "):
            row(f"{key} (resize_normalize)", e, None, "pytorch-fid resizes inside its model")
        elif key.startswith("model "):
            theirs = pf.get("model")
            note = (f"batch {e['batch_size']}; build {e['build_seconds']:.1f} s, first call "
                    f"{e['first_call_seconds']:.1f} s")
            if theirs:
                tf32 = f", TF32 {'allowed' if theirs.get('cudnn_tf32') else 'off'}" if theirs.get("cudnn_tf32") \
                    is not None else ""
                note += (f"; pytorch-fid: eager fp32{tf32}, batch {theirs['batch_size']}, its resize included, "
                         f"build {theirs['build_seconds']:.1f} s")
            row(f"{key} (compiled Inception)", e, theirs, note)
        elif key.startswith("statistics "):
            row(f"{key} (FeatureStats.update)", e, pf.get("statistics"),
                "pytorch-fid: np.mean + np.cov of all its features")
    if not any(stages.get(k) for k in ("frechet", "frechet (singular)")):
        return "\n".join(lines)
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
    lines = ["Targets (issue #4 on the CPU, issue #25 on a GPU):", "",
             "| target | goal | measured | status | conditions |", "| --- | ---: | ---: | --- | --- |"]
    for t in targets:
        unit = t["unit"]
        if t["value"] is None:
            measured = "—"
        elif unit == "rel":
            measured = f"{t['value']:.1e}"
        elif unit == "×":
            measured = f"{t['value']:.2f}×"
        elif unit == "s":
            measured = f"{t['value']:.2f} s"
        else:
            measured = f"{t['value']:,.0f} {unit}"
        sign = "≤" if t.get("at_most") or unit == "rel" else "≥"
        if unit == "rel":
            goal = f"≤ {t['goal']:.0e}"
        elif unit == "×":
            goal = f"≥ {t['goal']:g}×"
        else:
            goal = f"{sign} {t['goal']:,.0f} {unit}" if unit != "s" else f"{sign} {t['goal']:g} s"
        lines.append(f"| {t['target']} | {goal} | {measured} | {t['status']} | {t['conditions']}: "
                     f"{'yes' if t['conditions_met'] else 'NO, indicative only'} |")
    return "\n".join(lines)


def stage_rates(stages: dict) -> List[tuple]:
    """(stage, fidfast images/s, pytorch-fid images/s or None) for the chart."""
    pf = stages.get("pytorch-fid") or {}
    rows = [("decode", stages["decode"]["images_per_s"], (pf.get("decode") or {}).get("images_per_s"))]
    if stages.get("transfer"):
        rows.append(("transfer", stages["transfer"]["images_per_s"], None))
    for key, entry in stages.items():
        for stage, theirs in (("preprocess", None), ("model", "model"), ("statistics", "statistics")):
            if key.startswith(stage + " "):
                ref = (pf.get(theirs) or {}).get("images_per_s") if theirs else None
                rows.append((key, entry["images_per_s"], ref))
    return rows


def draw_stage_chart(results: dict, path: Path) -> None:
    """A horizontal bar chart (log scale) of each stage's throughput, fidfast beside pytorch-fid."""
    import matplotlib.pyplot as plt

    rows = stage_rates(results["stages"])
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.5))
    y = list(range(len(rows)))
    ax.barh([i + 0.2 for i in y], [r[1] for r in rows], height=0.4, label="fidfast", color="#1f77b4")
    ax.barh([i - 0.2 for i in y], [r[2] or 0 for r in rows], height=0.4, label="pytorch-fid 0.3.0",
            color="#ff7f0e")
    for i, (_, ours, theirs) in enumerate(rows):
        ax.text(ours, i + 0.2, f" {ours:,.0f}", va="center", fontsize=8)
        if theirs:
            ax.text(theirs, i - 0.2, f" {theirs:,.0f}", va="center", fontsize=8)
    ax.set_yticks(y, [r[0] for r in rows])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(right=4 * max(max(r[1], r[2] or 0) for r in rows))  # room for the labels
    ax.set_xlabel("images/s (log scale)")
    machine = results["machine"]
    where = (machine["gpu"] or {}).get("name") or f"{machine['cpu']}, {machine['cpu_cores_usable']} cores"
    ax.set_title(f"Per-stage throughput, {where}, {results['date']}", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / len(rows)), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
