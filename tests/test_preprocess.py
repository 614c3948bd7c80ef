"""The preprocess stage: packing, the tap tables, and the native resize_normalize held to its PyTorch
reference (bit for bit on the CPU at 299, pytorch-fid's size) and to independent float64 resizes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fidfast import preprocess
from fidfast.preprocess import PackedBatch, op_tables, pack, resize_normalize, resize_normalize_reference

from .helpers import NATIVE_AND_TWIN, busy_stream, cuda_kernels, natural_image, needs_native, on_gpu

# (H, W, C): 1×1, odd, up- and down-sampling, identity at 299, tall, wide, large, grey and colour
SHAPES = [(1, 1, 3), (1, 1, 1), (2, 3, 3), (7, 5, 1), (37, 53, 3), (299, 299, 3), (300, 200, 1),
          (1000, 7, 3), (9, 1000, 1), (1000, 700, 3)]


@pytest.fixture(params=NATIVE_AND_TWIN)
def impl(request):
    """(resize function, device): the native op (through preprocess.resize_normalize) or the reference."""
    kind, device = request.param
    return (resize_normalize if kind == "native" else resize_normalize_reference), device


def on(batch: PackedBatch, device: str) -> PackedBatch:
    return PackedBatch(batch.data.to(device), batch.meta, batch.bad)


def interpolate_reference(img: np.ndarray, size: int, dtype=torch.float32) -> torch.Tensor:
    """pytorch-fid's preprocessing of one H×W×C image, written out: 3×size×size."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].to(dtype) / 255
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1
    return y[0].expand(3, -1, -1)


# -- packing --------------------------------------------------------------------------------------

def test_pack_layout(rng):
    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    colour = rng.integers(0, 256, size=(3, 6, 3), dtype=np.uint8)
    strided = rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8)[::2, ::-1]
    batch = pack([grey, torch.from_numpy(colour), grey[:, :, None], strided])
    assert batch.data.dtype == torch.uint8 and batch.meta.dtype == torch.int64 and len(batch) == 4
    assert batch.meta.tolist() == [[0, 5, 4, 1], [20, 3, 6, 3], [74, 5, 4, 1], [94, 4, 6, 3]]
    assert batch.data.numel() == 94 + strided.size
    assert np.array_equal(batch.data[94:].numpy().reshape(strided.shape), strided)
    assert np.array_equal(preprocess.unpack(batch)[1].numpy(), colour)


def test_pack_views_an_equal_size_batch_without_copying(rng):
    nhwc = torch.from_numpy(rng.integers(0, 256, size=(3, 5, 7, 3), dtype=np.uint8))
    batch = pack(nhwc)
    assert batch.data.data_ptr() == nhwc.data_ptr()
    assert batch.meta.tolist() == [[0, 5, 7, 3], [105, 5, 7, 3], [210, 5, 7, 3]]
    assert all(torch.equal(a, b) for a, b in zip(preprocess.unpack(batch), nhwc))


def test_pack_rejects_bad_images():
    with pytest.raises(TypeError, match="image 1"):
        pack([np.ones((2, 2), np.uint8), np.ones((2, 2), np.float32)])
    with pytest.raises(ValueError, match="image 0"):
        pack([np.ones((2, 2, 4), np.uint8)])


# -- tables ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("in_size", [1, 2, 7, 37, 298, 299, 300, 1000, 4097])
def test_bilinear_taps_are_atens(in_size):
    """Applied to a one-hot column, the table gives F.interpolate's weights exactly."""
    taps, weights = preprocess.bilinear_taps(in_size, 299)
    assert taps.dtype == torch.int32 and weights.dtype == torch.float32 and taps.shape == (299, 2)
    assert int(taps.min()) >= 0 and int(taps.max()) < in_size
    dense = torch.zeros(299, in_size)
    dense.index_put_((torch.arange(299)[:, None].expand(-1, 2), taps.long()), weights, accumulate=True)
    ref = F.interpolate(torch.eye(in_size)[None, None], size=(299, in_size), mode="bilinear",
                        align_corners=False)[0, 0]
    assert torch.equal(dense, ref)


# -- resize_normalize -----------------------------------------------------------------------------

@pytest.mark.parametrize("out_size", [299, 37, 1])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_resize_normalize_matches_interpolate(impl, rng, out_size, channels_last):
    resize, device = impl
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES]
    poison = torch.full((len(images) * 3 * out_size ** 2,), float("nan"), device=device)
    del poison  # the output may reuse this NaN memory: every element must be written
    out = resize(on(pack(images), device), out_size, torch.float32, channels_last)
    assert out.shape == (len(images), 3, out_size, out_size) and out.dtype == torch.float32
    assert out.device.type == device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert out.is_contiguous(memory_format=fmt)
    out = out.cpu()
    for i, img in enumerate(images):
        assert torch.isfinite(out[i]).all()
        assert (out[i] - interpolate_reference(img, out_size)).abs().max() <= 1e-6, f"image {i} {img.shape}"
        # independent float64 reference; float32 source indices put it ~1e-4 away at these sizes
        assert (out[i] - interpolate_reference(img, out_size, torch.float64)).abs().max() <= 3e-4, f"image {i}"


def test_resize_normalize_float16(impl, rng):
    resize, device = impl
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES[:6]]
    for channels_last in (False, True):
        out = resize(on(pack(images), device), 64, torch.float16, channels_last)
        assert out.dtype == torch.float16
        out = out.float().cpu()
        for i, img in enumerate(images):
            assert torch.isfinite(out[i]).all()
            # half an fp16 ulp in [0.5, 1) is 2^-12; allow a full ulp
            assert (out[i] - interpolate_reference(img, 64)).abs().max() <= 2 ** -11


@needs_native
def test_native_equals_the_reference_bit_for_bit_at_299(rng):
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES]
    batch = pack(images)
    for channels_last in (False, True):
        assert torch.equal(resize_normalize(batch, 299, torch.float32, channels_last),
                           resize_normalize_reference(batch, 299, torch.float32, channels_last))


def run_op(data, meta, taps, weights, size, dtype=torch.float32):
    return torch.ops.fidfast.resize_normalize(data, meta, taps, weights, 255.0, 0.5, 2.0, -math.inf, math.inf,
                                              size, dtype, False)


@on_gpu(cuda_kernels)
def test_native_op_takes_meta_and_tables_on_the_host_or_the_device(rng):
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SHAPES[:5]]
    batch = pack(images)
    ref = resize_normalize_reference(batch, 41)
    meta, taps, weights = op_tables(batch, 41)
    for where in ("cpu", "pinned", "cuda"):
        move = {"cpu": lambda t: t, "pinned": lambda t: t.pin_memory(), "cuda": lambda t: t.cuda()}[where]
        out = run_op(batch.data.cuda(), move(meta), move(taps), move(weights), 41)
        assert out.is_cuda and (out.cpu() - ref).abs().max() <= 1e-6, where


@on_gpu(cuda_kernels)
def test_cuda_op_reads_the_meta_it_checked_though_the_caller_rewrites_it(rng):
    # The caller's pinned meta is rewritten (images in reverse order, each row still in bounds) while the
    # stream is still busy with earlier work, before the op's upload can have run.
    images = [natural_image(rng, h, w) for h, w in [(40, 30), (64, 64), (17, 90), (90, 33)]]
    batch = pack(images)
    ref = resize_normalize(batch, 64)  # the CPU kernel
    meta, taps, weights = (t.pin_memory() for t in op_tables(batch, 64))
    data = batch.data.cuda()
    run_op(data, meta, taps, weights, 64)  # warm-up: the kernel loaded, the pinned pool filled
    busy_stream()
    out = run_op(data, meta, taps, weights, 64)
    meta.copy_(meta.flip(0))
    taps.zero_()
    assert (out.cpu() - ref).abs().max() <= 1e-6


@on_gpu(cuda_kernels)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_kernel_past_its_grid_cap(rng, dtype):
    # 220 images of 299² are 76,000 blocks of 256 threads: past the 65,536-block cap, so each thread
    # loops over several pixels (the default batch on CUDA is 500)
    images = [natural_image(rng, int(rng.integers(8, 90)), int(rng.integers(8, 90))) for _ in range(220)]
    batch = pack(images)
    ref = resize_normalize(batch, 299, dtype, True)
    on_device = on(batch, "cuda")
    poison = torch.full(ref.shape, float("nan"), dtype=dtype, device="cuda")
    del poison  # the op's output reuses this block: an element left unwritten stays NaN
    out = resize_normalize(on_device, 299, dtype, True)
    assert torch.isfinite(out).all()
    tol = 1e-6 if dtype == torch.float32 else 2 ** -11  # fp16: one ulp in [0.5, 1)
    assert (out.float().cpu() - ref.float()).abs().max() <= tol


@on_gpu(cuda_kernels)
def test_cuda_op_on_a_side_stream(rng):
    images = [natural_image(rng, h, w) for h, w in [(40, 30), (299, 299), (120, 77)]]
    batch = pack(images)
    ref = resize_normalize(batch, 299)
    pinned = batch.data.pin_memory()
    resize_normalize(PackedBatch(pinned.cuda(), batch.meta), 299)  # warm-up: nothing left to load or pin
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        busy_stream()  # the default stream is idle: work wrongly put there would run before the upload
        data = pinned.to("cuda", non_blocking=True)  # queued behind the busy work
        out = resize_normalize(PackedBatch(data, batch.meta), 299)
    torch.cuda.current_stream().wait_stream(side)
    assert (out.cpu() - ref).abs().max() <= 1e-6


# Meta rows the op refuses (one 4x5x3 image, 60 bytes), and what it says: the native op's message,
# then the PyTorch twin's where that differs. Whole messages: a truncated one hides a broken build.
BAD_META = {
    "C=2": ([0, 4, 5, 2], "resize_normalize: image 0 has C=2, expected 1 or 3", None),
    "H=0": ([0, 0, 5, 3], "resize_normalize: image 0 has H=0, W=5, expected >= 1", None),
    "past the end": ([1, 4, 5, 3],
                     "resize_normalize: image 0 (offset 1, 4x5x3) runs past the end of data (60 elements)",
                     "resize_normalize: image 0 (offset 1, 4x5x3) runs past the end of data"),
    "negative offset": ([-1, 4, 5, 3], "resize_normalize: image 0 offset -1 is outside data (60 elements)",
                        "resize_normalize: image 0 (offset -1, 4x5x3) runs past the end of data"),
    "H*W*C overflows": ([0, 2**40, 2**40, 3],
                        "resize_normalize: image 0 (offset 0, 1099511627776x1099511627776x3) runs past the end of "
                        "data (60 elements)",
                        "resize_normalize: image 0 (offset 0, 1099511627776x1099511627776x3) runs past the end of "
                        "data"),
}


@pytest.mark.parametrize("row, native_message, twin_message", BAD_META.values(), ids=BAD_META.keys())
def test_resize_normalize_rejects_bad_meta(impl, rng, row, native_message, twin_message):
    resize, device = impl
    batch = pack([rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)])
    with pytest.raises(RuntimeError) as error:
        resize(PackedBatch(batch.data.to(device), torch.tensor([row]), []), 8, torch.float32, False)
    assert str(error.value) == (native_message if resize is resize_normalize else twin_message or native_message)


def test_resize_normalize_rejects_bad_args(impl, rng):
    resize, device = impl
    native_op = resize is resize_normalize
    batch = on(pack([rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)]), device)
    with pytest.raises(RuntimeError) as error:
        resize(batch, 0, torch.float32, False)
    assert str(error.value) == "resize_normalize: out_size must be >= 1, got 0"
    with pytest.raises(RuntimeError) as error:
        resize(batch, 8, torch.float64, False)
    assert str(error.value) == "resize_normalize: dtype must be float32 or float16, got " + (
        "Double" if native_op else "torch.float64")
    with pytest.raises(RuntimeError) as error:
        resize(PackedBatch(batch.data.double(), batch.meta, []), 8, torch.float32, False)
    assert str(error.value) == ("resize_normalize: data must be uint8 or float32, got Double" if native_op else
                                "resize_normalize: data must be a contiguous 1-D uint8 or float32 tensor")


BAD_TABLES = {
    "tap past the image": "resize_normalize: image 0's height table has tap 4, outside 0..3",
    "negative tap": "resize_normalize: image 0's width table has tap -1, outside 0..4",
    "rows past the table": "resize_normalize: image 0's width table (row 9) needs 8 of the 16 table rows",
    "int64 taps": "resize_normalize: taps must be int32 and weights float32, got Long and Float",
}


@needs_native
@pytest.mark.parametrize("bad", BAD_TABLES)
def test_native_op_rejects_bad_tables(rng, bad):
    """The op reads pixels without bounds checks, so it checks every table row an image uses."""
    batch = pack([rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)])
    taps, weights = preprocess.bilinear_taps(4, 8)
    taps = torch.cat([taps, preprocess.bilinear_taps(5, 8)[0]])
    weights = torch.cat([weights, preprocess.bilinear_taps(5, 8)[1]])
    meta = torch.tensor([[0, 4, 5, 3, 0, 8]])
    if bad == "tap past the image":
        taps[3, 1] = 4  # the height table of a 4-pixel-high image
    elif bad == "negative tap":
        taps[10, 0] = -1
    elif bad == "rows past the table":
        meta[0, 5] = 9
    else:
        taps = taps.long()
    with pytest.raises(RuntimeError) as error:
        torch.ops.fidfast.resize_normalize(batch.data, meta, taps, weights, 255.0, 0.5, 2.0, -math.inf, math.inf, 8,
                                           torch.float32, False)
    assert str(error.value) == BAD_TABLES[bad]


def test_float_batches_take_the_reference_and_match_uint8(rng):
    """A float [0, 1] tensor batch goes through the same reference as the uint8 pixels it came from."""
    imgs = torch.from_numpy(rng.integers(0, 256, size=(3, 40, 60, 3), dtype=np.uint8))
    from_uint8 = preprocess.network_input(pack(imgs), torch.device("cpu"), torch.float32)
    from_float = preprocess.network_input(imgs.permute(0, 3, 1, 2).float() / 255, torch.device("cpu"),
                                          torch.float32)
    assert from_uint8.shape == from_float.shape == (3, 3, 299, 299)
    assert (from_uint8 - from_float).abs().max() <= 1e-6
