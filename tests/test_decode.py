"""The decode stage: PIL's modes become RGB as pytorch-fid's convert does, 16-bit grey is scaled, and
unreadable files are named (or skipped and counted), never dropped."""
from __future__ import annotations

import io
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

import fidfast
from fidfast import FidfastError
from fidfast.decode import decode_image

from .helpers import FAST, assert_one_line_error, fidfast_cli, natural_image, write_images


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "LA"])
def test_image_modes_become_rgb_as_pil_converts(tmp_path, rng, mode):
    img = Image.fromarray(natural_image(rng, 30, 40)).convert(mode)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    expected = np.asarray(Image.open(path).convert("RGB"))
    decoded = decode_image(path)
    assert decoded.shape == (30, 40, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, expected)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path, rng):
    values = rng.integers(0, 65536, size=(20, 30), dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    decoded = decode_image(tmp_path / "g16.png")
    expected = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(decoded, np.repeat(expected[:, :, None], 3, axis=2))


def _bad_files(folder):
    png = io.BytesIO()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(png, format="PNG")
    return {
        "zero.png": b"",
        "truncated.png": png.getvalue()[: len(png.getvalue()) // 2],
        "text.jpg": b"this is not an image\n",
        "noise.webp": os.urandom(300),
    }


@pytest.mark.parametrize("name", ["zero.png", "truncated.png", "text.jpg", "noise.webp"])
def test_bad_image_files_exit_2_naming_the_file(tmp_path, rng, image_dirs, name):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    (tmp_path / "d" / name).write_bytes(_bad_files(tmp_path)[name])
    assert_one_line_error(fidfast_cli(tmp_path / "d", image_dirs[1], "--dims", "64", "--no-cache"), name)


def test_skip_bad_images_warns_and_reports_the_count(tmp_path, rng, image_dirs):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    for name, content in _bad_files(tmp_path).items():
        (tmp_path / "d" / name).write_bytes(content)
    proc = fidfast_cli(tmp_path / "d", image_dirs[1], "--dims", "64", "--skip-bad-images", "--json", "--no-cache",
                       check_rc=0)
    out = json.loads(proc.stdout)
    assert out["n_images"] == [3, 12] and out["skipped"] == [4, 0]
    assert "skipped 4 unreadable image(s)" in proc.stderr


def _stored_zip(path, pngs):
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for p in pngs:
            z.write(p, f"imgs/{p.name}")


def test_corrupt_archive_member_is_named_or_skipped(folder, tmp_path):
    _, paths = folder
    _stored_zip(tmp_path / "a.zip", paths)
    raw = bytearray((tmp_path / "a.zip").read_bytes())
    at = raw.find(paths[2].read_bytes()) + 200  # inside the third image's bytes: its CRC no longer matches
    raw[at] ^= 0xFF
    (tmp_path / "a.zip").write_bytes(bytes(raw))
    with pytest.raises(FidfastError, match=paths[2].name):
        fidfast.compute_stats(tmp_path / "a.zip", **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats = fidfast.compute_stats(tmp_path / "a.zip", skip_bad_images=True, **FAST)
    assert stats.n == len(paths) - 1 and int(stats.meta["skipped"]) == 1
    assert any("skipped 1 unreadable" in str(w.message) for w in caught)


def test_broken_link_is_reported_not_dropped(tmp_path, rng):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    (tmp_path / "d" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(FidfastError, match="gone.png"):
        fidfast.compute_stats(tmp_path / "d", **FAST)
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        assert int(fidfast.compute_stats(tmp_path / "d", skip_bad_images=True, **FAST).meta["skipped"]) == 1
