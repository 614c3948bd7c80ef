"""``python -m fidfast.demo DIR``: write two small folders of photo-like images and print their FID.

:func:`natural_image` is fidfast's one image generator: the demo, the tests and the benchmarks all draw
their images from it. The second folder is tinted warm, so the FID is clearly non-zero; re-running
reuses the folders.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

N_IMAGES = 40


def natural_image(rng: np.random.Generator, h: int, w: int, channels: int = 3) -> np.ndarray:
    """A photo-like uint8 H×W×channels image: smooth low-frequency colour fields plus texture noise."""
    coarse = rng.uniform(0, 255, size=(max(2, h // 16), max(2, w // 16), channels)).astype(np.float32)
    planes = [np.asarray(Image.fromarray(coarse[:, :, c]).resize((w, h), Image.BICUBIC), dtype=np.float32)
              for c in range(channels)]
    img = np.stack(planes, axis=2) + rng.normal(0, 12, size=(h, w, channels))
    return np.clip(img, 0, 255).astype(np.uint8)


def warm_shift(img: np.ndarray, amount: float = 0.25) -> np.ndarray:
    """Blend an RGB image towards a warm tint: another distribution of colours, so the FID is clearly > 0."""
    tint = np.array([255.0, 200.0, 140.0], dtype=np.float32)
    return np.clip(img.astype(np.float32) * (1 - amount) + tint * amount, 0, 255).astype(np.uint8)


def make_folders(root: Path) -> tuple:
    rng = np.random.default_rng(0)
    folders = (root / "cool", root / "warm")
    for folder, warm in zip(folders, (False, True)):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(N_IMAGES):
            path = folder / f"{i:03d}.png"
            if not path.exists():
                img = natural_image(rng, 128, 128)
                Image.fromarray(warm_shift(img) if warm else img).save(path)
    return folders


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    a, b = make_folders(root)
    print(f"fidfast demo: {N_IMAGES} images each in {a} and {b}", file=sys.stderr)
    from fidfast.cli import main as cli_main

    cli_main([str(a), str(b), "--dims", "2048", *sys.argv[2:]])


if __name__ == "__main__":
    main()
