#!/usr/bin/env python
"""The Inception stage alone on a GPU: which way of running the network is fastest, and what each costs.

Weights are seeded random ones, calibrated so every layer's activations have a photo-like scale (speed
does not depend on the values; fp16 overflow would), or the real ones (--weights). Each variant maps the
same N×3×299×299 batch to N×2048 features; timed with CUDA events (median of --repeat passes after a warm-up), its fixed cost
(build, autotuning, compilation: the first call) separately, and its features' largest difference from
the float64 eager network relative to the features' scale.

Variants (fp16 in channels_last unless named fp32):
  ts_fp16            fidfast's frozen TorchScript module (the shipped path), cuDNN autotuning on
  ts_fp16_noautotune the same with cudnn.benchmark off
  eager_fp16         the eager network, folded batch norms
  graph_fp16         the frozen module replayed from a CUDA graph
  ts_fp32, ts_fp32_noautotune, ts_fp32_tf32   fp32 without TF32 (autotuned or not) / with TF32
  aoti_fp16          fidfast's --compile: the network compiled ahead of time by AOTInductor (its build, or
                     its load from fidfast's cache, is the build time)
  compile_fp16, compile_fp16_graphs   torch.compile (inductor, default and reduce-overhead modes) of the
                     eager network

Writes benchmarks/results/network_<device-kind>.json and .md after every variant (a run cut short keeps
what it measured).

    python benchmarks/bench_network.py --device cuda [--batch 500] [--variants ts_fp16,aoti_fp16] [--weights W]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from core import RESULTS, device_kind, fmt_num, machine_info, write_results

from fidfast.features import eager_network, feature_extractor
from fidfast.network import FIDInception3, PooledInception
from fidfast.weights import Weights, resolve_weights

FLOP_PER_IMAGE = 11.4e9  # ≈ 5.7 GMAC to pool3 (NOTES.md)


def calibrated_random_weights(path: Path, seed: int = 0) -> Weights:
    """Random convolutions with batch-norm statistics taken from one forward pass of random images (each
    BasicConv2d's output then has zero mean and unit variance before its ReLU, as a trained network's
    roughly has), saved as a pytorch-fid state dict."""
    torch.manual_seed(seed)
    trunk = FIDInception3()
    for m in trunk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 1.0  # running statistics = this batch's
    trunk.train()
    with torch.no_grad():
        PooledInception(trunk, 2048)(torch.rand(4, 3, 299, 299) * 2 - 1)
    torch.save(trunk.state_dict(), path)
    return Weights(str(path), "explicit")


def timed(fn, x: torch.Tensor, repeat: int) -> dict:
    """First call (fixed cost: autotuning, compilation) in seconds, then images/s over ``repeat`` passes."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn(x)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    fn(x)
    times = []
    for _ in range(repeat):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(x)
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    seconds = statistics.median(times)
    return {"first_call_s": first, "seconds": seconds, "images_per_s": x.shape[0] / seconds,
            "tflops": x.shape[0] * FLOP_PER_IMAGE / seconds / 1e12, "out": out}


def cuda_graph(fn, x: torch.Tensor):
    """``fn`` captured once on a static input and replayed: the launches of a whole pass in one."""
    static_in = x.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up outside the capture: autotuning, TorchScript's profiling runs
            fn(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)

    def replay(inp: torch.Tensor) -> torch.Tensor:
        static_in.copy_(inp)
        graph.replay()
        return static_out
    return replay


VARIANTS = ("ts_fp16", "ts_fp16_noautotune", "eager_fp16", "graph_fp16", "ts_fp32", "ts_fp32_noautotune",
            "ts_fp32_tf32", "aoti_fp16", "compile_fp16", "compile_fp16_graphs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--weights", default=None, help="the real FID Inception weights (default: calibrated random "
                   "ones); the difference column then compares real features")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda":
        raise SystemExit("bench_network: needs a CUDA device")
    chosen = args.variants.split(",")
    unknown = set(chosen) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"bench_network: unknown variants {', '.join(sorted(unknown))}")
    tmp = tempfile.TemporaryDirectory()
    weights = (resolve_weights(args.weights) if args.weights
               else calibrated_random_weights(Path(tmp.name) / "w.pth"))
    weights.state_dict()  # read once, outside every timing
    gen = torch.Generator(device).manual_seed(0)
    x = torch.rand(args.batch, 3, 299, 299, device=device, generator=gen) * 2 - 1
    with torch.inference_mode():
        reference = eager_network(weights, 2048, device, "fp32").double()(x[:32].double())
    scale = reference.abs().mean().item()
    results = {"machine": machine_info(device), "batch": args.batch, "repeat": args.repeat,
               "weights": "real" if args.weights else "random, calibrated", "flop_per_image": FLOP_PER_IMAGE,
               "feature_scale": scale, "variants": {}}
    stem = f"network_{device_kind(device)}"

    def fidfast_module(precision: str, aot: bool = False):
        def build():
            feature_extractor.cache_clear()
            return feature_extractor(weights, 2048, device, precision, aot_batch=args.batch if aot else 0)
        return build

    def graphed():
        with torch.inference_mode():
            return cuda_graph(fidfast_module("fp16")(), x.to(torch.half).contiguous(memory_format=torch.channels_last))

    def compiled(mode: str):
        def build():
            module = torch.compile(eager_network(weights, 2048, device, "fp16"), mode=mode, dynamic=False)
            return lambda inp: module(inp).clone()  # CUDA graphs' outputs are overwritten by the next replay
        return build

    plans = {  # name: (build, dtype, tf32, autotune)
        "ts_fp16": (fidfast_module("fp16"), torch.half, False, True),
        "ts_fp16_noautotune": (fidfast_module("fp16"), torch.half, False, False),
        "eager_fp16": (lambda: eager_network(weights, 2048, device, "fp16"), torch.half, False, False),
        "graph_fp16": (graphed, torch.half, False, False),
        "ts_fp32": (fidfast_module("fp32"), torch.float, False, True),
        "ts_fp32_noautotune": (fidfast_module("fp32"), torch.float, False, False),
        "ts_fp32_tf32": (fidfast_module("fp32"), torch.float, True, True),
        "aoti_fp16": (fidfast_module("fp16", aot=True), torch.half, False, False),
        "compile_fp16": (compiled("default"), torch.half, False, False),
        "compile_fp16_graphs": (compiled("reduce-overhead"), torch.half, False, False),
    }
    outputs = {}
    for name in chosen:
        build, dtype, tf32, autotune = plans[name]
        torch.backends.cudnn.benchmark = autotune
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        inp = x.to(dtype).contiguous(memory_format=torch.channels_last)
        try:
            start = time.perf_counter()
            fn = build()
            build_s = time.perf_counter() - start
            with torch.inference_mode():
                r = timed(fn, inp, args.repeat)
            out = r.pop("out")[:32].double()
            outputs[name] = out
            row = {"build_s": build_s, **r, "max_rel_diff_vs_fp64": (out - reference).abs().max().item() / scale}
            if "ts_fp16" in outputs and name != "ts_fp16":
                row["max_rel_diff_vs_ts_fp16"] = (out - outputs["ts_fp16"]).abs().max().item() / scale
        except Exception as exc:  # noqa: BLE001 - a variant that fails is a result too
            row = {"error": f"{exc.__class__.__name__}: {str(exc)[:300]}"}
        results["variants"][name] = row
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        write_results(stem, results, markdown(results), args.out)


def markdown(results: dict) -> str:
    m = results["machine"]
    gpu = (m.get("gpu") or {}).get("name")
    lines = [f"# The Inception stage alone ({gpu})", "",
             f"- machine: {m['cpu']}, {m['cpu_cores_usable']} usable cores, {gpu}; torch {m['torch']}, cuDNN "
             f"{m['cudnn']}; commit {m.get('git_commit') or '?'}",
             f"- batch {results['batch']} of 299² network input, random calibrated weights; CUDA events, median "
             f"of {results['repeat']} passes; fixed cost = build + first call; difference = max |features − "
             "float64 eager| / mean |features|", "",
             "| variant | images/s | TFLOP/s | build s | first call s | difference | vs ts_fp16 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, v in results["variants"].items():
        if "error" in v:
            lines.append(f"| {name} | failed: {v['error'][:80]} | | | | | |")
            continue
        lines.append(f"| {name} | {v['images_per_s']:,.0f} | {fmt_num(v['tflops'])} | {fmt_num(v['build_s'])} | "
                     f"{fmt_num(v['first_call_s'])} | {v['max_rel_diff_vs_fp64']:.1e} | "
                     + (f"{v['max_rel_diff_vs_ts_fp16']:.1e} |" if "max_rel_diff_vs_ts_fp16" in v else "— |"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
