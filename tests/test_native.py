"""The native extension: it loads and registers every op, each op passes torch.library.opcheck (schema,
fake kernel, autograd registration, AOT dispatch), a failed check raises its whole message on every device
through one checked entry per op, and a missing extension is said, not hidden."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import fidfast
from fidfast import native, preprocess

from .helpers import cuda, needs_native

ROOT = Path(__file__).resolve().parents[1]


@needs_native
def test_extension_registers_all_ops():
    assert native.op_names() == ["resize_normalize", "cov_update_", "cov_merge_", "sqrtm_newton_schulz"]
    from fidfast import _C
    assert native.cuda_compiled() == _C.cuda_compiled()
    info = fidfast.backend_info()
    assert native.reason() is None and info["native_error"] is None and info["native_cpu"]
    assert info["ops"] == native.op_names() and info["cuda_available"] == torch.cuda.is_available()
    assert info["weights"] is not None


def _op_samples(rng: np.random.Generator, device: str) -> dict:
    """Arguments for every op, on ``device``: real inputs, as the pipeline passes them."""
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(37, 53, 3), (20, 20, 1), (299, 299, 3)]]
    batch = preprocess.pack(images)
    meta, taps, weights = preprocess.op_tables(batch, 41)
    d = 24
    x = torch.from_numpy(rng.normal(size=(50, d)))
    mean, comoment = x[:30].mean(0), (x[:30] - x[:30].mean(0)).T @ (x[:30] - x[:30].mean(0))
    a = torch.cov(x.T).contiguous()
    data = batch.data.to(device)
    return {
        "resize_normalize": [(data, meta, taps, weights, 255.0, 0.5, 2.0, -math.inf, math.inf, 41, torch.float32,
                              False),
                             (data, meta, taps, weights, 1.0, 128.0, 1 / 128, -1.0, 127 / 128, 41, torch.float16,
                              True),
                             (data.float() / 255, meta, taps, weights, 1.0, 0.5, 2.0, -1.0, 1.0, 41, torch.float32,
                              False)],
        "cov_update_": [(mean.clone().to(device), comoment.clone().to(device), 30, x[30:].float().to(device))],
        "cov_merge_": [(mean.clone().to(device), comoment.clone().to(device), 30, mean.to(device) + 1,
                        comoment.to(device), 20)],
        "sqrtm_newton_schulz": [(a.to(device), 50, 1e-12)],
    }


@needs_native
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
@pytest.mark.parametrize("op", native.OP_NAMES)
def test_opcheck(op, device, rng):
    if device == "cuda" and not native.cuda_compiled():
        pytest.skip("fidfast._C built without CUDA")
    for args in _op_samples(rng, device)[op]:
        torch.library.opcheck(getattr(torch.ops.fidfast, op).default, args)


@needs_native
def test_ops_trace_under_torch_compile(rng):
    """The fake kernels let torch.compile trace through the ops (no graph break needed to run them)."""
    (args,) = _op_samples(rng, "cpu")["sqrtm_newton_schulz"]

    def fn(a):
        root, _, _ = torch.ops.fidfast.sqrtm_newton_schulz(a, 50, 1e-12)
        return root @ root

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    assert torch.allclose(compiled(args[0]), args[0], rtol=1e-9, atol=1e-12)


@needs_native
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF dynamic section: Linux only")
def test_extension_links_libstdcxx_dynamically():
    """A g++ whose library dir holds only libstdc++.a (a -B wrapper, as on the H200 image) linked a second,
    static libstdc++ into _C: formatting a number into an error message then truncated it or crashed."""
    if shutil.which("readelf") is None:
        pytest.skip("needs readelf (binutils) to read the library's DT_NEEDED entries")
    from fidfast import _C
    dynamic = subprocess.run(["readelf", "-d", _C.__file__], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic)
    assert "libstdc++.so.6" in needed, needed


@needs_native
def test_a_failed_check_raises_its_whole_message():
    """The numbers in a failed check's message survive (in a child process: a crash fails this test alone)."""
    code = textwrap.dedent("""
        import math, torch, fidfast.native
        def message(op, *args):
            try:
                op(*args)
            except RuntimeError as error:
                return str(error)
        meta = torch.tensor([[0, 4, 5, 5, 0, 8]])  # C=5
        taps, weights = torch.zeros(16, 2, dtype=torch.int32), torch.zeros(16, 2)
        print(message(torch.ops.fidfast.resize_normalize, torch.zeros(60, dtype=torch.uint8), meta, taps, weights,
                      255.0, 0.5, 2.0, -math.inf, math.inf, 8, torch.float32, False))
        mean, comoment = torch.zeros(4, dtype=torch.float64), torch.zeros(4, 4, dtype=torch.float64)
        print(message(torch.ops.fidfast.cov_update_, mean, comoment, 0, torch.ones(3, 5)))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit code {proc.returncode}: {proc.stderr}"
    assert proc.stdout.splitlines() == ["resize_normalize: image 0 has C=5, expected 1 or 3",
                                        "cov_update_: batch must be [B, 4], got [3, 5]"]


@needs_native
@pytest.mark.parametrize("op", native.OP_NAMES)
def test_every_device_runs_the_ops_one_checked_entry(op):
    """Each op's CPU and CUDA kernels are the one entry in csrc/ops/<op>.cpp that checks every argument on
    the host before any device's code runs: the devices cannot differ in what they accept."""
    registered = dict(re.findall(r"^(\w+): registered at (.+):\d+ ::", torch._C._dispatch_dump(f"fidfast::{op}"),
                                 re.MULTILINE))
    home = "cov.cpp" if op.startswith("cov_") else f"{op}.cpp"
    devices = ["CPU", "CUDA"] if native.cuda_compiled() else ["CPU"]
    assert [key for key in ("CPU", "CUDA") if key in registered] == devices
    for key in devices:
        assert Path(registered[key]).as_posix().endswith(f"csrc/ops/{home}"), (key, registered[key])


def test_cuda_translation_units_never_throw():
    """The .cu files (and the headers they include) hold kernels and launchers that return a cudaError_t:
    no checks, no exceptions, no ATen; the host-compiled code around them raises."""
    forbidden = re.compile(r"TORCH_CHECK|TORCH_INTERNAL_ASSERT|C10_CUDA_KERNEL_LAUNCH_CHECK|C10_CUDA_CHECK|\bthrow\b|"
                           r"\bat::|<ATen/|<torch/")
    todo = sorted((ROOT / "csrc" / "ops" / "cuda").glob("*.cu"))
    assert todo
    seen = set()
    while todo:
        path = todo.pop().resolve()
        if path not in seen:
            seen.add(path)
            text = path.read_text()
            assert not forbidden.findall(text), f"{path.relative_to(ROOT)} has {forbidden.findall(text)}"
            todo += [path.parent / name for name in re.findall(r'^#include "(.+)"', text, re.MULTILINE)]


def test_a_missing_extension_warns_once_and_says_why(tmp_path):
    """Without fidfast._C the PyTorch twins run (same numbers), with one warning and the reason shown."""
    code = ("import sys, warnings; sys.modules['fidfast._C'] = None\n"
            "import torch, fidfast\n"
            "from fidfast import stats\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    for _ in range(3):\n"
            "        fidfast.FeatureStats(4).update(torch.ones(3, 4) * torch.arange(3.)[:, None])\n"
            "print(len([w for w in caught if 'fidfast._C' in str(w.message)]))\n"
            "info = fidfast.backend_info()\n"
            "print(info['native_error']); print(info['native_cpu'], info['native_cuda'], info['ops'])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    count, reason, backends = proc.stdout.strip().splitlines()
    assert count == "1"
    assert "fidfast._C" in reason  # the import error itself
    assert backends == "False False []"
