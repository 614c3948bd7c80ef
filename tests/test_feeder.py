"""The feeder: chunks in input order with each image's exact pixels, whatever the worker count and however
the ring's slots split them (images larger than a slot too); bad images named or skipped; a dead worker
reported, not waited for; workers stopped at once; JPEGs decoded fast only where PIL's pixels come out."""
from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from fidfast import FidfastError, feeder
from fidfast.decode import ImageReader, decode_image
from fidfast.feeder import Feeder
from fidfast.preprocess import unpack

from .helpers import busy_stream, cuda, natural_image, on_gpu, write_images

SIZES = [(30, 40), (64, 64), (17, 90), (120, 80), (31, 31), (8, 200), (90, 60), (45, 45), (70, 20)]


def _drain(fd: Feeder) -> list:
    """Every chunk's images (copied: a chunk's pixels live until the next is asked for), and its bad."""
    out = []
    for chunk in fd:
        out.append(([img.clone() for img in unpack(chunk)], list(chunk.bad)))
    return out


def _images(chunks: list) -> list:
    return [img for imgs, _ in chunks for img in imgs]


@pytest.mark.parametrize("slot_bytes", [1 << 20, 30_000], ids=["roomy", "tight"])
@pytest.mark.parametrize("workers", [0, 1, 3])
def test_chunks_hold_every_image_exactly_in_order(tmp_path, rng, monkeypatch, workers, slot_bytes):
    # "tight" slots hold one or two of these images, and 120×80 (28,800 bytes) only alone or first:
    # every range is split by size, yet the images come out in order with PIL's pixels.
    monkeypatch.setattr(feeder, "SLOT_BYTES", slot_bytes)
    paths = write_images(tmp_path, rng, SIZES)
    with Feeder(paths, torch.device("cpu"), workers, chunk=4) as fd:
        chunks = _drain(fd)
    images = _images(chunks)
    assert len(images) == len(paths)
    for img, path in zip(images, paths):
        np.testing.assert_array_equal(img.numpy(), decode_image(path))
    assert all(len(imgs) <= 4 for imgs, _ in chunks)


def test_the_split_depends_on_sizes_not_on_workers(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(feeder, "SLOT_BYTES", 30_000)
    paths = write_images(tmp_path, rng, SIZES * 3)
    splits = []
    for workers in (0, 2, 4):
        with Feeder(paths, torch.device("cpu"), workers, chunk=5) as fd:
            splits.append([len(imgs) for imgs, _ in _drain(fd)])
    assert splits[0] == splits[1] == splits[2]


def test_an_image_larger_than_a_slot_travels_alone(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(feeder, "SLOT_BYTES", 10_000)  # 64×64×3 = 12,288 bytes: larger than a slot
    paths = write_images(tmp_path, rng, [(20, 20), (64, 64), (10, 10)])
    with Feeder(paths, torch.device("cpu"), 2, chunk=8) as fd:
        chunks = _drain(fd)
    assert [len(imgs) for imgs, _ in chunks] == [1, 1, 1]
    for img, path in zip(_images(chunks), paths):
        np.testing.assert_array_equal(img.numpy(), decode_image(path))


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_images_are_named_or_skipped(tmp_path, rng, workers):
    paths = write_images(tmp_path, rng, [(20, 20)] * 5)
    paths[2].write_bytes(b"not an image")
    with Feeder(paths, torch.device("cpu"), workers, chunk=2) as fd, \
            pytest.raises(FidfastError, match=f"{paths[2].name}.*--skip-bad-images"):
        _drain(fd)
    with Feeder(paths, torch.device("cpu"), workers, chunk=2, skip_bad_images=True) as fd:
        chunks = _drain(fd)
    assert len(_images(chunks)) == 4
    assert [name for _, bad in chunks for name, _ in bad] == [str(paths[2])]


def test_a_dead_worker_is_reported_not_waited_for(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(feeder, "STALL_SECONDS", 0.2)
    paths = write_images(tmp_path, rng, [(40, 40)] * 40)
    with Feeder(paths, torch.device("cpu"), 2, chunk=1) as fd:
        it = iter(fd)
        next(it)
        for p in fd._procs:
            os.kill(p.pid, signal.SIGKILL)
        start = time.perf_counter()
        with pytest.raises(FidfastError, match="decoding worker died"):
            list(it)
        assert time.perf_counter() - start < 5


def test_workers_stop_at_once_mid_run(tmp_path, rng):
    paths = write_images(tmp_path, rng, [(200, 200)] * 60)
    fd = Feeder(paths, torch.device("cpu"), 3, chunk=2)
    next(iter(fd))
    procs = list(fd._procs)
    start = time.perf_counter()
    fd.close()
    assert time.perf_counter() - start < 1.0
    assert not any(p.is_alive() for p in procs)


def test_the_budget_lets_one_large_image_through_and_holds_the_next():
    import multiprocessing as mp

    budget = feeder._Budget(mp.get_context(), limit=100)
    budget.acquire(150)  # over the limit, but alone: let through
    entered = threading.Event()

    def second():
        budget.acquire(10)
        entered.set()

    t = threading.Thread(target=second)
    t.start()
    assert not entered.wait(0.2)
    budget.release(150)
    assert entered.wait(2)
    t.join()
    budget.release(10)
    assert budget.used.value == 0


def _jpeg(arr: np.ndarray, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(arr).save(b, "JPEG", **kw)
    return b.getvalue()


@pytest.mark.parametrize("kind", ["420", "422", "444", "grey", "progressive", "odd", "cmyk"])
def test_fast_jpegs_give_pils_pixels(tmp_path, rng, kind):
    pytest.importorskip("torchvision")
    img = natural_image(rng, 61 if kind == "odd" else 64, 77 if kind == "odd" else 96)
    options = {"420": {"subsampling": 2}, "422": {"subsampling": 1}, "444": {"subsampling": 0},
               "progressive": {"progressive": True}}.get(kind, {})
    pil = Image.fromarray(img)
    if kind == "grey":
        pil = pil.convert("L")
    if kind == "cmyk":
        pil = pil.convert("CMYK")
    path = tmp_path / "x.jpg"
    pil.save(path, "JPEG", quality=90, **options)
    reader = ImageReader([path, path], fast_jpeg=True)
    expected = decode_image(path)
    for i in range(2):  # the first is checked against PIL, the second trusted
        got, _, err = reader.read(i)
        assert err is None
        np.testing.assert_array_equal(np.broadcast_to(got, expected.shape), expected)
    if kind != "cmyk":
        assert all(reader._layouts.values())


def test_a_fast_decoder_that_differs_from_pil_is_not_used(tmp_path, rng):
    pytest.importorskip("torchvision")
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(_jpeg(natural_image(rng, 32, 32), quality=90))
    reader = ImageReader(paths, fast_jpeg=True)
    reader._torchvision()
    decode = reader._decode_jpeg
    reader._decode_jpeg = lambda data: decode(data) ^ 1  # a decoder whose pixels are off by one
    for i, path in enumerate(paths):
        got, _, _ = reader.read(i)
        np.testing.assert_array_equal(got, decode_image(path))
    assert list(reader._layouts.values()) == [False]


@on_gpu(cuda)
def test_chunks_reach_the_gpu_intact_while_slots_are_reused(tmp_path, rng, monkeypatch):
    # Few, tight slots and a busy stream: a slot handed to a worker before its copy to the GPU was done
    # would show as another image's pixels here.
    monkeypatch.setattr(feeder, "SLOT_BYTES", 30_000)
    monkeypatch.setattr(feeder, "SPARE_SLOTS", 1)
    paths = write_images(tmp_path, rng, SIZES * 4)
    device = torch.device("cuda")
    got = []
    with Feeder(paths, device, 2, chunk=3) as fd:
        for chunk in fd:
            busy_stream()
            on_gpu_chunk = fd.to_device(chunk)
            assert on_gpu_chunk.data.is_cuda
            got.extend(img.cpu() for img in unpack(on_gpu_chunk))
    assert len(got) == len(paths)
    for img, path in zip(got, paths):
        np.testing.assert_array_equal(img.numpy(), decode_image(path))
