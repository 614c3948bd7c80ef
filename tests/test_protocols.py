"""The four FID protocols (fidfast.preprocess.PROTOCOLS) against the anchors' own code, installed as test
references and run offline on fidfast's converted weights: the network input per image (≤ 1e-4 on the
0–255 scale) and the FID (≤ 1e-5 relative in fp32), on photo-like images of mixed sizes (down- and
up-sampling, non-square, 1–3 px, grey and RGBA sources); and the protocol as part of the statistics."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fidfast
from fidfast import FidfastError, preprocess
from fidfast.decode import decode_image
from fidfast.preprocess import PROTOCOLS, pack, protocols_of, resize_normalize, resize_normalize_reference

from .helpers import FAST, assert_one_line_error, fidfast_cli, natural_image, reference_fid, rel, write_images

# (H, W): tiny, up- and downsampled, non-square, exactly 299, wide and tall
SIZES = [(1, 1), (2, 3), (3, 1), (40, 52), (299, 299), (300, 200), (512, 384), (700, 1000), (64, 900), (900, 50)]

INCEPTION = protocols_of("inception")  # FD_DINOv2's protocols: test_dinov2.py


@pytest.fixture
def decoded(tmp_path, rng) -> list:
    """Images as the anchors and fidfast decode them (PIL, convert('RGB')), from RGB, grey and RGBA files."""
    images = []
    for i, (h, w) in enumerate(SIZES):
        img = Image.fromarray(natural_image(rng, h, w)).convert(("RGB", "L", "RGBA")[i % 3])
        img.save(tmp_path / f"{i}.png")
        images.append(decode_image(tmp_path / f"{i}.png"))
    return images


def anchor_input(protocol: str, img: np.ndarray) -> torch.Tensor:
    """The anchor tool's own 3×299×299 network input for one decoded H×W×3 uint8 image, in float64."""
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    if protocol == "pytorch-fid":
        return (F.interpolate(x / 255, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1)[0].double()
    if protocol == "tf":
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        resized = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)[0]
    elif protocol == "clean":
        from cleanfid.resize import build_resizer

        resized = torch.from_numpy(build_resizer("clean")(img)).permute(2, 0, 1)
    else:  # torchmetrics' NoTrainInceptionV3, antialias=True
        resized = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)[0]
    return (resized.double() - 128) / 128


@pytest.mark.parametrize("protocol", INCEPTION)
def test_network_input_is_the_anchors(protocol, decoded):
    pytest.importorskip({"tf": "torch_fidelity", "clean": "cleanfid"}.get(protocol, "torch"))
    batch = pack(decoded)
    native = resize_normalize(batch, protocol=PROTOCOLS[protocol])
    reference = resize_normalize_reference(batch, protocol=PROTOCOLS[protocol])
    scale = 127.5 if protocol == "pytorch-fid" else 128.0  # network input → 0..255
    for i, img in enumerate(decoded):
        anchor = anchor_input(protocol, img)
        assert torch.isfinite(native[i]).all()
        assert (native[i].double() - anchor).abs().max() * scale <= 1e-4, (protocol, SIZES[i])
        assert (reference[i].double() - anchor).abs().max() * scale <= 1e-4, (protocol, SIZES[i])


@pytest.mark.parametrize("protocol", INCEPTION)
def test_float_batches_give_the_uint8_input(protocol, rng):
    """Tensor inputs in [0, 1] go through the same op, one launch, as the bytes they came from."""
    imgs = torch.from_numpy(np.stack([natural_image(rng, 90, 70) for _ in range(3)]))
    from_bytes = preprocess.network_input(pack(imgs), torch.device("cpu"), torch.float32, PROTOCOLS[protocol])
    from_floats = preprocess.network_input(imgs.permute(0, 3, 1, 2).float() / 255, torch.device("cpu"),
                                           torch.float32, PROTOCOLS[protocol])
    assert (from_bytes - from_floats).abs().max() <= 2e-6


def _folders(tmp_path, rng, n: int):
    """Two folders of n photo-like images of mixed sizes (up and down), the second tinted."""
    sizes = [(int(h), int(w)) for h, w in rng.integers(60, 480, size=(n, 2))]
    return write_images(tmp_path / "a", rng, sizes), write_images(tmp_path / "b", rng, sizes[::-1], shift=0.3)


def _fid_of_inputs(inputs_a, inputs_b, network) -> float:
    """The FID of two lists of per-image network inputs (3×299×299) through ``network`` (→ N×64)."""
    feats = []
    for inputs in (inputs_a, inputs_b):
        with torch.no_grad():
            f = torch.cat([network(x[None].float()) for x in inputs]).double().numpy()
        feats.append((f.mean(0), np.cov(f, rowvar=False)))
    return reference_fid(*feats[0], *feats[1])


def test_fid_equals_torch_fidelitys_tf_protocol(tmp_path, rng, pytorch_fid_weights):
    pytest.importorskip("torch_fidelity")
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    a, b = _folders(tmp_path, rng, 72)  # more images than dims: a full-rank covariance
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["64"],
                                            feature_extractor_weights_path=str(pytorch_fid_weights)).eval()
    feats = []
    for paths in (a, b):
        with torch.no_grad():  # one image at a time: its sizes differ
            f = torch.cat([extractor(torch.from_numpy(decode_image(p)).permute(2, 0, 1)[None])[0] for p in paths])
        f = f.double().numpy()
        feats.append((f.mean(0), np.cov(f, rowvar=False)))
    theirs = reference_fid(*feats[0], *feats[1])
    ours = fidfast.calculate_fid(tmp_path / "a", tmp_path / "b", protocol="tf", **FAST)
    assert ours > 1 and rel(ours, theirs) <= 1e-5


@pytest.mark.parametrize("antialias, protocol", [(True, "torchmetrics"), (False, "tf")])
def test_fid_equals_torchmetrics(antialias, protocol, tmp_path, rng, pytorch_fid_weights):
    pytest.importorskip("torchmetrics")
    pytest.importorskip("torch_fidelity")
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = _folders(tmp_path, rng, 72)
    metric = FrechetInceptionDistance(feature=64, antialias=antialias,
                                      feature_extractor_weights_path=str(pytorch_fid_weights))
    for paths, real in ((a, True), (b, False)):
        for p in paths:  # one image at a time: its sizes differ
            metric.update(torch.from_numpy(decode_image(p)).permute(2, 0, 1)[None], real=real)
    theirs = float(metric.compute())
    ours = fidfast.calculate_fid(tmp_path / "a", tmp_path / "b", protocol=protocol, **FAST)
    assert ours > 1 and rel(ours, theirs) <= 1e-5


def test_fid_equals_clean_fids_resize(tmp_path, rng):
    """clean-fid's own resizer (its network is the same TF graph: here fidfast's, given the inputs)."""
    pytest.importorskip("cleanfid")
    from cleanfid.resize import build_resizer

    from fidfast.features import feature_extractor
    from fidfast.weights import resolve_weights

    a, b = _folders(tmp_path, rng, 72)
    resize = build_resizer("clean")
    inputs = [[(torch.from_numpy(resize(decode_image(p))).permute(2, 0, 1) - 128) / 128 for p in paths]
              for paths in (a, b)]
    network = feature_extractor(resolve_weights(), 64, torch.device("cpu"), "fp32")
    theirs = _fid_of_inputs(*inputs, network)
    ours = fidfast.calculate_fid(tmp_path / "a", tmp_path / "b", protocol="clean", **FAST)
    assert ours > 1 and rel(ours, theirs) <= 1e-5


def test_protocols_give_different_fids_and_kids(image_dirs):
    fids = {p: fidfast.calculate_fid(*image_dirs, protocol=p, **FAST) for p in INCEPTION}
    assert len({round(v, 9) for v in fids.values()}) == 4, fids
    kids = {p: fidfast.calculate_kid(*image_dirs, num_subsets=3, subset_size=6, protocol=p, **FAST)[0]
            for p in ("pytorch-fid", "clean")}
    assert kids["pytorch-fid"] != kids["clean"]


def test_the_protocol_is_part_of_the_statistics(image_dirs, tmp_path):
    a, b = image_dirs
    fidfast_cli(a, tmp_path / "a_tf.npz", "--save-stats", "--dims", "64", "--protocol", "tf", check_rc=0)
    fidfast_cli(b, tmp_path / "b_clean.npz", "--save-stats", "--dims", "64", "--protocol", "clean", check_rc=0)
    assert fidfast.FeatureStats.load(tmp_path / "a_tf.npz").protocol == "tf"
    # images beside a statistics file are computed with its protocol (and dims) unless others are asked for
    out = json.loads(fidfast_cli(tmp_path / "a_tf.npz", b, "--json", check_rc=0).stdout)
    direct = json.loads(fidfast_cli(a, b, "--dims", "64", "--protocol", "tf", "--json", check_rc=0).stdout)
    assert out["protocol"] == direct["protocol"] == "tf" and rel(out["fid"], direct["fid"]) < 1e-9
    assert_one_line_error(fidfast_cli(tmp_path / "a_tf.npz", b, "--protocol", "clean"), "protocol tf", "clean")
    assert_one_line_error(fidfast_cli(tmp_path / "a_tf.npz", tmp_path / "b_clean.npz"), "tf", "clean",
                          "not comparable")
    # a file that records no protocol (pytorch-fid's) goes with any, and --verbose says so
    stats = fidfast.FeatureStats.load(tmp_path / "b_clean.npz")
    np.savez(tmp_path / "plain.npz", mu=stats.mu, sigma=stats.sigma)
    proc = fidfast_cli(tmp_path / "plain.npz", a, "--protocol", "clean", "--verbose", "--json", check_rc=0)
    assert json.loads(proc.stdout)["protocol"] == "clean" and "records no protocol" in proc.stderr
    assert_one_line_error(fidfast_cli(a, b, "--protocol", "jpeg"), "--protocol", "pytorch-fid", "torchmetrics")
    with pytest.raises(FidfastError, match="protocol"):
        fidfast.compute_stats(a, protocol="jpeg", **FAST)


def test_each_protocol_has_its_own_cache_entry(image_dirs, tmp_path, monkeypatch):
    from fidfast import cache

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for protocol in INCEPTION:
        fidfast.compute_stats(image_dirs[0], protocol=protocol, **{**FAST, "cache": True})
    assert cache.info()["entries"] == 4
    hit = fidfast.compute_stats(image_dirs[0], protocol="tf", **{**FAST, "cache": True})
    assert hit.protocol == "tf"
