"""`.npz` sample batches (the ADM evaluator's input: uint8 ``arr_0``) as an input: the same statistics as
the same images in memory or as PNGs, read a batch at a time from stored and compressed files, never
unpickled, and every damaged or foreign file one error naming it."""
from __future__ import annotations

import io
import json
import pickle
import re
import tracemalloc
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format
from PIL import Image

import fidfast
from fidfast import FeatureStats, FidfastError
from fidfast.sources import ImageArrays, NpzImages, iter_array_batches, open_npz_images, open_source

from .helpers import FAST, assert_one_line_error, fidfast_cli, natural_image

SAVERS = {"stored": np.savez, "compressed": np.savez_compressed}


def photos(rng, n: int, h: int, w: int, channels: int = 3) -> np.ndarray:
    images = np.stack([natural_image(rng, h, w, channels) for _ in range(n)])
    return images[..., 0] if channels == 1 else images


def write_pngs(folder, images: np.ndarray) -> None:
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"img_{i:04d}.png")


@pytest.mark.parametrize("saver,batch_size", [("stored", 10), ("compressed", 7)])
def test_an_npz_gives_the_statistics_of_its_images_in_memory_and_as_pngs(tmp_path, rng, saver, batch_size):
    images = photos(rng, 23, 40, 52)  # 23 images: the batch sizes do not divide them
    SAVERS[saver](tmp_path / "s.npz", images)
    write_pngs(tmp_path / "pngs", images)
    settings = dict(FAST, batch_size=batch_size)
    from_npz = fidfast.compute_stats(tmp_path / "s.npz", **settings)
    in_memory = fidfast.compute_stats(images, **settings)
    assert from_npz.n == 23
    assert np.array_equal(from_npz.mu, in_memory.mu) and np.array_equal(from_npz.sigma, in_memory.sigma)
    as_pngs = fidfast.compute_stats(tmp_path / "pngs", **settings)  # PNG is lossless: the same pixels
    np.testing.assert_allclose(from_npz.mu, as_pngs.mu, rtol=1e-12, atol=0)
    np.testing.assert_allclose(from_npz.sigma, as_pngs.sigma, rtol=1e-12, atol=1e-15)


def test_a_grey_npz_is_read_as_grey_images_are(tmp_path, rng):
    grey = photos(rng, 9, 36, 44, channels=1)  # N×H×W
    np.savez_compressed(tmp_path / "g.npz", grey)
    write_pngs(tmp_path / "pngs", grey)  # mode L, which fidfast converts as PIL's convert('RGB')
    settings = dict(FAST, batch_size=4)
    opened = open_source(tmp_path / "g.npz")
    assert isinstance(opened, ImageArrays) and opened.total == 9 and opened.batches.shape == (9, 36, 44, 1)
    from_npz = fidfast.compute_stats(tmp_path / "g.npz", **settings)
    in_memory = fidfast.compute_stats(grey[..., None], **settings)
    assert np.array_equal(from_npz.mu, in_memory.mu) and np.array_equal(from_npz.sigma, in_memory.sigma)
    np.testing.assert_allclose(from_npz.mu, fidfast.compute_stats(tmp_path / "pngs", **settings).mu, rtol=1e-12)


def test_an_adm_reference_batch_gives_its_statistics_and_on_request_its_images(tmp_path, rng):
    images = photos(rng, 6, 30, 30)
    stats = FeatureStats.from_moments(rng.normal(size=64), np.eye(64), 1000)
    np.savez(tmp_path / "ref.npz", images, mu=stats.mu, sigma=stats.sigma, mu_s=rng.normal(size=8),
             sigma_s=np.eye(8))
    assert isinstance(open_source(tmp_path / "ref.npz"), FeatureStats)  # FID uses the file's statistics
    opened = open_npz_images(tmp_path / "ref.npz")  # precision and recall its images
    assert opened.total == 6 and opened.label == str(tmp_path / "ref.npz")
    assert open_source(opened) is opened
    first = fidfast.compute_features(opened, **FAST)
    again = fidfast.compute_features(opened, **FAST)  # re-iterable: each pass reopens the file
    assert first.shape == (6, 64) and np.array_equal(first, again)
    assert np.array_equal(first, fidfast.compute_features(images, **FAST))


def test_blocks_and_batches_read_the_images_in_order(tmp_path, rng):
    images = photos(rng, 11, 3, 20)  # 3 rows tall: never mistaken for channels first
    np.savez_compressed(tmp_path / "s.npz", images)
    whole = NpzImages.open(tmp_path / "s.npz")
    assert np.array_equal(np.concatenate(list(whole)), images)
    assert np.array_equal(np.concatenate(list(whole.block(2, 9).iter_batches(3))), images[2:9])
    assert [len(b) for b in whole.block(4, 11).iter_batches(3)] == [3, 3, 1]
    batches = list(iter_array_batches(whole, 4))
    assert [len(b) for b in batches] == [4, 4, 3] and all(b[0].shape == (3, 20, 3) for b in batches)
    with pytest.raises(ValueError):
        whole.block(5, 12)


def test_reading_a_compressed_npz_holds_a_few_batches_never_the_whole_array(tmp_path, rng):
    tiles = photos(rng, 30, 256, 256)
    images = np.concatenate([np.roll(tiles, 7 * k, axis=2) for k in range(10)])  # 300 images of 256²
    np.savez_compressed(tmp_path / "big.npz", images)
    whole, batch = images.nbytes, 50 * images[0].nbytes
    checksum = int(images.sum(dtype=np.int64))
    del images, tiles
    tracemalloc.start()
    try:
        opened = open_source(tmp_path / "big.npz")
        seen = total = 0
        for b in iter_array_batches(opened.batches, 50):  # what the pipeline reads
            seen += len(b)
            total += int(b.sum())  # a torch uint8 sum is int64
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert opened.total == seen == 300 and total == checksum
    assert peak < 3 * batch and peak < whole / 2, (peak, batch, whole)  # two batches at a time


def _write_member(path, name: str, data: bytes, method=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr(name, data)


def _npy(array: np.ndarray, keep_images: int = None) -> bytes:
    """The .npy bytes of ``array``, or its header with only ``keep_images`` images after it."""
    out = io.BytesIO()
    if keep_images is None:
        npy_format.write_array(out, array)
    else:
        npy_format.write_array_header_1_0(out, npy_format.header_data_from_array_1_0(array))
        out.write(array[:keep_images].tobytes())
    return out.getvalue()


BAD = {
    "object": ("object array", lambda p, x: np.savez(p, np.array([x[0], "not an image"], dtype=object))),
    "float": ("float32 of shape", lambda p, x: np.savez(p, x.astype(np.float32) / 255)),
    "four_channels": ("(3, 16, 16, 4)", lambda p, x: np.savez(p, np.concatenate([x, x[..., :1]], axis=3))),
    "flat": ("expected uint8 images", lambda p, x: np.savez(p, x.reshape(3, -1))),
    "no_images": ("holds no images", lambda p, x: np.savez(p, x[:0])),
    "fortran": ("Fortran order", lambda p, x: np.savez(p, np.asfortranarray(x))),
    "no_arr_0": ("['images', 'labels']", lambda p, x: np.savez(p, images=x, labels=np.arange(3))),
    "mu_only": ("sigma", lambda p, x: np.savez(p, mu=np.ones(4))),
    "zip_of_pngs": ("not an .npz", lambda p, x: _write_member(p, "img.png", b"\x89PNG")),
    "not_a_zip": ("not a readable .npz", lambda p, x: p.write_bytes(_npy(x))),
    "truncated_file": ("not a readable .npz", lambda p, x: (np.savez(p, x), p.write_bytes(p.read_bytes()[:900]))),
    "short_member": ("truncated", lambda p, x: _write_member(p, "arr_0.npy", _npy(x, keep_images=2),
                                                            zipfile.ZIP_DEFLATED)),
    "bad_magic": ("not a readable .npz", lambda p, x: _write_member(p, "arr_0.npy", b"PK not an npy header")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_npz_files_are_refused_before_any_image_is_read(tmp_path, rng, case, monkeypatch):
    fragment, write = BAD[case]
    path = tmp_path / "bad.npz"
    write(path, photos(rng, 3, 16, 16))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    with pytest.raises(FidfastError) as caught:
        open_source(path)
    assert str(path) in str(caught.value) and fragment in str(caught.value), str(caught.value)


@pytest.mark.parametrize("saver", sorted(SAVERS))
def test_damaged_image_data_is_an_error_naming_the_file(tmp_path, rng, saver):
    path = tmp_path / "damaged.npz"
    SAVERS[saver](path, photos(rng, 8, 32, 32))
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(255 - b for b in data[middle:middle + 64])  # inside arr_0's pixels
    path.write_bytes(bytes(data))
    opened = open_source(path)  # the header and sizes are intact
    with pytest.raises(FidfastError, match=f"^{re.escape(str(path))}: "):  # a CRC-32 or zlib error, named
        fidfast.compute_stats(opened, **dict(FAST, batch_size=3))


def test_the_cli_takes_npz_sample_batches_as_it_takes_folders(tmp_path, image_dirs):
    for folder, name, saver in zip(image_dirs, ("a.npz", "b.npz"), (np.savez, np.savez_compressed)):
        saver(tmp_path / name, np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]))
    args = ("--dims", "64", "--device", "cpu", "--json")
    from_npz = json.loads(fidfast_cli(tmp_path / "a.npz", tmp_path / "b.npz", *args, check_rc=0).stdout)
    from_folders = json.loads(fidfast_cli(*image_dirs, *args, check_rc=0).stdout)
    assert from_npz["fid"] > 1 and from_npz["fid"] == pytest.approx(from_folders["fid"], rel=1e-12)
    np.savez(tmp_path / "bad.npz", np.ones((2, 8, 8), np.float64))
    assert_one_line_error(fidfast_cli(tmp_path / "bad.npz", image_dirs[1], "--dims", "64"), "bad.npz", "float64")
