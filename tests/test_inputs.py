"""Every input kind users have, image modes, bad files, and the statistics cache (issue #5).

Most checks run at dims 64 (the network stops after its first block), which keeps them fast; the
decoding and batching under test are the same at every dims.
"""
import io
import json
import os
import tarfile
import warnings
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import fidfast
from fidfast import FidfastError
from fidfast.decode import decode_image

from .conftest import natural_image, write_images
from .test_cli import assert_one_line_error, fidfast_cli

FAST = dict(dims=64, device="cpu", num_workers=0, cache=False, progress=False)


def rel(a, b):
    assert np.all(np.isfinite(a))
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.fixture
def folder(tmp_path, rng):
    """7 PNGs of mixed sizes (so batches are ragged) and their pixels."""
    sizes = [(40, 52), (64, 64), (33, 90), (120, 80), (48, 48), (75, 61), (29, 31)]
    paths = write_images(tmp_path / "imgs", rng, sizes)
    return tmp_path / "imgs", paths


def test_archives_file_lists_and_path_lists_match_the_folder(folder, tmp_path):
    root, paths = folder
    ref = fidfast.compute_stats(root, **FAST)
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        for p in paths:
            z.write(p, f"inner/{p.name}")
    with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as t:
        for p in paths:
            t.add(p, p.name)
    (tmp_path / "list.txt").write_text("# my images\n" + "\n".join(f"imgs/{p.name}" for p in paths) + "\n")
    for source in (tmp_path / "a.zip", tmp_path / "a.tar.gz", tmp_path / "list.txt", [str(p) for p in paths]):
        stats = fidfast.compute_stats(source, **FAST)
        assert stats.n == 7
        assert rel(stats.mu, ref.mu) < 1e-6 and rel(stats.sigma, ref.sigma) < 1e-5, source


def test_tar_with_workers_sees_every_image_once(folder, tmp_path):
    root, paths = folder
    with tarfile.open(tmp_path / "a.tar", "w") as t:
        for p in paths:
            t.add(p, p.name)
    stats = fidfast.compute_stats(tmp_path / "a.tar", **{**FAST, "num_workers": 2, "batch_size": 2})
    assert stats.n == 7
    assert rel(stats.sigma, fidfast.compute_stats(root, **FAST).sigma) < 1e-5


def test_arrays_tensors_and_iterables_match_the_files(tmp_path, rng):
    imgs = np.stack([natural_image(rng, 50, 70) for _ in range(6)])
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    ref = fidfast.compute_stats(tmp_path, **FAST)
    nchw = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    sources = {
        "uint8 NHWC numpy": imgs,
        "uint8 NCHW tensor": nchw.contiguous(),
        "float [0,1] NCHW": nchw.float() / 255,
        "iterable of batches": (b for b in (imgs[:4], imgs[4:])),
    }
    for name, source in sources.items():
        stats = fidfast.compute_stats(source, **{**FAST, "batch_size": 4})
        assert stats.n == 6, name
        assert rel(stats.sigma, ref.sigma) < 1e-5, name


@pytest.mark.parametrize("bad", [np.zeros((2, 5, 5), np.uint8), np.full((2, 3, 8, 8), 2.0, np.float32),
                                 np.ones((2, 4, 8, 8), np.int32), np.full((2, 3, 8, 8), np.nan, np.float32)])
def test_bad_arrays_are_clear_errors(bad):
    with pytest.raises(FidfastError):
        fidfast.compute_stats(bad, **FAST)


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


def test_mixed_sizes_at_any_batch_size_give_pytorch_fids_batch_size_1_numbers(folder, pytorch_fid_weights):
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    root, paths = folder
    theirs = get_activations(sorted(paths), InceptionV3([0]), batch_size=1, dims=64, device="cpu", num_workers=0)
    for batch_size in (1, 3, 50):
        stats = fidfast.compute_stats(root, **{**FAST, "batch_size": batch_size})
        assert rel(stats.mu, theirs.mean(0)) < 1e-5
        assert rel(stats.sigma, np.cov(theirs, rowvar=False)) < 1e-5


def test_extensions_are_case_insensitive_and_recursive_is_suggested(tmp_path, rng):
    write_images(tmp_path / "top", rng, [(30, 30)] * 2, ext="JPG")
    write_images(tmp_path / "top", rng, [(30, 30)] * 1, ext="Png")
    assert fidfast.compute_stats(tmp_path / "top", **FAST).n == 3  # pytorch-fid's lower-case glob finds none
    write_images(tmp_path / "nested" / "sub", rng, [(30, 30)] * 3)
    with pytest.raises(FidfastError, match="--recursive"):
        fidfast.compute_stats(tmp_path / "nested", **FAST)
    assert fidfast.compute_stats(tmp_path / "nested", recursive=True, **FAST).n == 3


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


def test_fewer_images_than_dims_warns_and_stays_finite(image_dirs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fid = fidfast.calculate_fid(*image_dirs, dims=192, device="cpu", num_workers=0, cache=False)
    assert np.isfinite(fid) and fid > 0
    assert any("fewer than dims=192" in str(w.message) for w in caught)


def test_statistics_cache_is_keyed_by_content(tmp_path, rng):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    cache_dir = fidfast.weights.cache_dir() / "stats"
    before = set(cache_dir.glob("*.npz")) if cache_dir.exists() else set()
    kwargs = {**FAST, "cache": True}
    first = fidfast.compute_stats(tmp_path / "d", **kwargs)
    entries = set(cache_dir.glob("*.npz")) - before
    assert len(entries) == 1
    again = fidfast.compute_stats(tmp_path / "d", **kwargs)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert again.n == 3
    # Changing one image changes the key: a new entry, new numbers.
    write_images(tmp_path / "d", rng, [(30, 30)])
    changed = fidfast.compute_stats(tmp_path / "d", **kwargs)
    assert len(set(cache_dir.glob("*.npz")) - before) == 2
    assert rel(changed.sigma, first.sigma) > 1e-6
    # Another precision or dims is another entry too; cache=False writes nothing.
    fidfast.compute_stats(tmp_path / "d", **{**kwargs, "dims": 192})
    assert len(set(cache_dir.glob("*.npz")) - before) == 3
    fidfast.compute_stats(tmp_path / "d", **{**kwargs, "dims": 192, "cache": False, "batch_size": 2})
    assert len(set(cache_dir.glob("*.npz")) - before) == 3


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


def test_statistics_from_the_cache_repeat_their_warnings(tmp_path, rng):
    write_images(tmp_path / "d", rng, [(30, 30)] * 3)
    (tmp_path / "d" / "zero.png").write_bytes(b"")
    for _ in range(2):  # computed, then from the cache
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            stats = fidfast.compute_stats(tmp_path / "d", skip_bad_images=True, **{**FAST, "cache": True})
        messages = " ".join(str(w.message) for w in caught)
        assert stats.n == 3 and "skipped 1 unreadable" in messages and "fewer than dims=64" in messages
