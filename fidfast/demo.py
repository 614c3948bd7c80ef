"""``python -m fidfast.demo DIR``: write two small folders of synthetic images and print their FID.

The folders differ in colour statistics, so the FID is clearly non-zero; re-running reuses them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

N_IMAGES = 40


def synthetic_image(rng: np.random.Generator, size: int, warm: bool) -> np.ndarray:
    """Soft colour blobs on a gradient (uint8 size×size×3); ``warm`` shifts the palette to red."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([xx, yy, 1 - xx], axis=2) * 120
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        colour = rng.uniform(0, 255, 3) * (np.array([1.0, 0.6, 0.4]) if warm else 1.0)
        mask = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[:, :, None]
        img = img * (1 - mask) + colour * mask
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def make_folders(root: Path) -> tuple:
    rng = np.random.default_rng(0)
    folders = (root / "cool", root / "warm")
    for folder, warm in zip(folders, (False, True)):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(N_IMAGES):
            path = folder / f"{i:03d}.png"
            if not path.exists():
                Image.fromarray(synthetic_image(rng, 128, warm)).save(path)
    return folders


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "demo")
    a, b = make_folders(root)
    print(f"fidfast demo: {N_IMAGES} images each in {a} and {b}", file=sys.stderr)
    from fidfast.cli import main as cli_main

    cli_main([str(a), str(b), "--dims", "2048", *sys.argv[2:]])


if __name__ == "__main__":
    main()
