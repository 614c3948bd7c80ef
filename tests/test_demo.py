"""The demo: its folders of generated images and the FID it prints; the one image generator."""
from __future__ import annotations

import subprocess
import sys

import numpy as np

from fidfast.demo import natural_image, warm_shift

from .helpers import make_rng


def test_the_generator_is_seeded_and_photo_like():
    a, b = natural_image(make_rng("demo"), 40, 60), natural_image(make_rng("demo"), 40, 60)
    assert a.shape == (40, 60, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert 20 < a.std() < 120 and np.abs(np.diff(a.astype(float), axis=1)).mean() < a.std()  # smooth, varied
    tint = np.array([255.0, 200.0, 140.0])
    assert np.abs(warm_shift(a) - (0.75 * a + 0.25 * tint)).max() <= 1  # a quarter of the way to the tint


def test_the_demo_prints_a_fid(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fidfast.demo", str(tmp_path / "demo"), "--dims", "64",
                           "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("FID:  ") and float(proc.stdout.split()[-1]) > 1
    assert len(list((tmp_path / "demo" / "warm").glob("*.png"))) == 40
