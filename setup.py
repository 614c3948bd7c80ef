"""Builds fidfast._C, the native ops (torch.ops.fidfast.*), with CUDA kernels when a toolkit is found.

Environment:
    FIDFAST_CUDA=0/1        force the CPU-only build / require the CUDA build (default: CUDA iff nvcc is found)
    TORCH_CUDA_ARCH_LIST    GPU architectures to compile for (default: the visible GPU's; without one
                            "8.0;9.0+PTX": A100, H100, PTX for newer)
    CUDA_HOME               CUDA toolkit root (default /usr/local/cuda when it has bin/nvcc)
"""

import os
import sys
from pathlib import Path

# torch looks for nvcc on PATH first; a /usr/local/bin/nvcc symlink makes it pick /usr/local,
# which has no lib64/libcudart. Point it at the toolkit before cpp_extension is imported.
if not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH") and Path("/usr/local/cuda/bin/nvcc").exists():
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from setuptools import find_packages, setup  # noqa: E402

try:
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
except ImportError:
    # pip's default build isolation hides the installed torch, and the extension must be built
    # against the torch it will run with: say so in one line instead of a traceback.
    sys.exit("fidfast: the build needs the installed PyTorch; install torch first, then "
             "`pip install --no-build-isolation .` (pip's default isolated build cannot see it)")

ROOT = Path(__file__).resolve().parent


def build_cuda() -> bool:
    toolkit = CUDA_HOME is not None and Path(CUDA_HOME, "bin", "nvcc").exists()
    flag = os.environ.get("FIDFAST_CUDA")
    if flag is None:
        return toolkit
    if flag not in ("0", "1"):
        raise RuntimeError(f"FIDFAST_CUDA must be 0 or 1, got {flag!r}")
    if flag == "1" and not toolkit:
        raise RuntimeError(f"FIDFAST_CUDA=1 but no CUDA toolkit (bin/nvcc) was found (CUDA_HOME={CUDA_HOME!r})")
    return flag == "1"


def sources(pattern: str) -> list:
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern))


# at::parallel_for is inline OpenMP code: built without -fopenmp it silently runs on one thread.
# (Linux only: Apple clang has no -fopenmp; the kernels are then serial but correct.)
OPENMP = ["-fopenmp"] if sys.platform.startswith("linux") else []
# -g0: Python's default CFLAGS add -g, which only slows the build and bloats the library.
CXX_FLAGS = ["-O3", "-g0", *OPENMP]
# libstdc++ linked dynamically, by name: a g++ whose library dir holds only libstdc++.a (a -B wrapper) links a second,
# static copy whose locale code clashes with the process's libstdc++.so.6, and formatting an error message crashes.
LINK_FLAGS = [*OPENMP, "-l:libstdc++.so.6"] if sys.platform.startswith("linux") else OPENMP


def extension():
    cpp = sources("csrc/*.cpp") + sources("csrc/ops/*.cpp") + sources("csrc/ops/cpu/*.cpp")
    if not build_cuda():
        return CppExtension("fidfast._C", cpp, extra_compile_args={"cxx": CXX_FLAGS}, extra_link_args=LINK_FLAGS)
    # With a GPU visible, torch compiles for that GPU (whatever its generation). Without one (CI, build
    # hosts) A100/H100 code plus PTX for newer GPUs: each architecture multiplies the compile time.
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    return CUDAExtension(
        "fidfast._C",
        cpp + sources("csrc/ops/cuda/*.cpp") + sources("csrc/ops/cuda/*.cu"),
        define_macros=[("FIDFAST_WITH_CUDA", None)],
        extra_compile_args={"cxx": CXX_FLAGS, "nvcc": ["-O3"]},
        extra_link_args=LINK_FLAGS,
    )


setup(
    packages=find_packages(include=["fidfast*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
)
