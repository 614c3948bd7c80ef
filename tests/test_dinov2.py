"""FD_DINOv2 (fidfast.dinov2, the edm2 and dgm-eval protocols, fidfast.fd_dinov2, --metrics fd-dinov2)
against FAIR's own DINOv2 code and the anchors' own resize calls, with seeded random weights (the real
checkpoint is not downloadable here; random weights run the same code)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import fidfast
from fidfast.dinov2 import IMAGENET_MEAN, IMAGENET_STD, load_dinov2
from fidfast.preprocess import PROTOCOLS, module_input, pack, resize_normalize, unit_range

from .helpers import assert_one_line_error, fidfast_cli, make_rng, natural_image, reference_fid, rel, write_images

# Sizes that down- and up-sample, square and not.
SIZES = ((64, 64), (256, 256), (512, 512), (300, 180), (150, 333))


@pytest.fixture(scope="module")
def fair_model():
    """FAIR's DINOv2 ViT-L/14 as torch.hub's dinov2_vitl14 builds it, every parameter moved off its
    initial value (layer scales, norms), seeded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "xFormers not available"
        vision_transformer = pytest.importorskip("dinov2.models.vision_transformer")
    torch.manual_seed(23)
    model = vision_transformer.vit_large(patch_size=14, img_size=518, init_values=1.0, block_chunks=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.fixture(scope="module")
def fair_weights(fair_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("dinov2") / "dinov2_vitl14_pretrain.pth"
    torch.save(fair_model.state_dict(), path)
    return path


def fair_features(model, x_255: torch.Tensor) -> torch.Tensor:
    """EDM2's DINOv2Detector after its resize: /255, ImageNet's mean and std, the model."""
    x = x_255.to(torch.float32) / 255
    x = (x - torch.tensor(IMAGENET_MEAN).reshape(1, -1, 1, 1)) / torch.tensor(IMAGENET_STD).reshape(1, -1, 1, 1)
    with torch.no_grad():
        return model(x).double()


def test_the_network_is_fairs(fair_model, fair_weights):
    ours = load_dinov2(fair_weights, torch.device("cpu"), torch.float32)
    x = torch.from_numpy(make_rng("dinov2 net").random((2, 3, 224, 224), dtype=np.float32))
    with torch.no_grad():
        got = ours(x)
    assert got.shape == (2, 1024)
    assert rel(got, fair_features(fair_model, x * 255)) <= 1e-5


def test_edm2_resize_is_its_interpolate_call():
    rng = make_rng("edm2 resize")
    protocol = unit_range(PROTOCOLS["edm2"])
    for h, w in SIZES:
        img = torch.from_numpy(natural_image(rng, h, w))
        anchor = F.interpolate(img.permute(2, 0, 1)[None].to(torch.float32), size=(224, 224), mode="bicubic",
                               antialias=True) / 255
        got = torch.full_like(anchor, float("nan"))
        got[:] = resize_normalize(pack([img]), 224, torch.float32, False, protocol)
        # equal to float32 rounding: fidfast divides by 255 before its resize, EDM2 after
        assert float((got - anchor).abs().max()) <= 4e-6, (h, w)


def test_dgm_eval_resize_is_torchvisions_on_pil():
    tv = pytest.importorskip("torchvision.transforms")
    rng = make_rng("dgm-eval resize")
    images = [natural_image(rng, h, w) for h, w in SIZES] + [natural_image(rng, 90, 70)[:, :, 0]]  # and a grey one
    for img in images:
        anchor = tv.Compose([tv.Resize((224, 224), tv.InterpolationMode.BICUBIC), tv.ToTensor()])(
            Image.fromarray(img).convert("RGB"))
        got = module_input(pack([img]), torch.device("cpu"), 224, PROTOCOLS["dgm-eval"])
        assert torch.equal(got[0], anchor), img.shape


@pytest.mark.parametrize("protocol", ["edm2", "dgm-eval"])
def test_fd_dinov2_is_edm2s_computation(fair_model, fair_weights, protocol):
    """fidfast.fd_dinov2 against EDM2's calculate_metrics steps, run on FAIR's model: its resize (torch or
    pil mode), float64 Σx and Σxxᵀ, mean and unbiased covariance, then the Fréchet distance."""
    rng = make_rng("fd_dinov2", protocol)
    real = [natural_image(rng, 96, 128) for _ in range(3)]
    fake = [natural_image(rng, 256, 240) for _ in range(3)]

    def edm2_stats(images):
        feats = []
        for img in images:
            x = torch.from_numpy(img).permute(2, 0, 1)[None]
            if protocol == "edm2":
                x = F.interpolate(x.to(torch.float32), size=(224, 224), mode="bicubic", antialias=True)
            else:
                x = torch.from_numpy(np.array(Image.fromarray(img, "RGB").resize((224, 224), Image.BICUBIC), np.uint8))
                x = x.permute(2, 0, 1)[None]
            feats.append(fair_features(fair_model, x))
        f = torch.cat(feats)
        mu = f.sum(0) / len(f)
        sigma = (f.T @ f - len(f) * torch.outer(mu, mu)) / (len(f) - 1)
        return mu.numpy(), sigma.numpy()

    settings = dict(weights=fair_weights, protocol=protocol, device="cpu", num_workers=0, cache=False, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fewer images than dims
        stats = fidfast.compute_stats(np.stack(real), **{k: v for k, v in settings.items() if k != "weights"},
                                      features=load_dinov2(fair_weights, torch.device("cpu"), torch.float32))
        fd = fidfast.fd_dinov2(np.stack(real), np.stack(fake), **settings)
    (mu1, s1), (mu2, s2) = edm2_stats(real), edm2_stats(fake)
    assert stats.protocol == protocol and stats.dims == 1024
    assert rel(stats.mean, mu1) <= 1e-5 and rel(stats.covariance, s1) <= 1e-5
    assert rel(fd, reference_fid(mu1, s1, mu2, s2)) <= 1e-5


def test_the_command_line_gives_fd_dinov2_beside_the_fid(fair_weights, tmp_path):
    rng = make_rng("fd_dinov2 cli")
    write_images(tmp_path / "real", rng, [(80, 96)] * 3)
    write_images(tmp_path / "fake", rng, [(120, 100)] * 3, shift=0.1)
    common = ["--device", "cpu", "--num-workers", "0", "--dinov2-weights", fair_weights, "--json"]
    both = json.loads(fidfast_cli(tmp_path / "real", tmp_path / "fake", "--metrics", "fid,fd-dinov2", *common,
                                  check_rc=0).stdout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        expected = fidfast.fd_dinov2(tmp_path / "real", tmp_path / "fake", weights=fair_weights, device="cpu",
                                     num_workers=0, cache=False, progress=False)
    assert both["fd_dinov2"] == pytest.approx(expected, rel=1e-9) and both["dinov2_protocol"] == "edm2"
    assert both["protocol"] == "pytorch-fid" and np.isfinite(both["fid"])
    alone = json.loads(fidfast_cli(tmp_path / "real", tmp_path / "fake", "--metrics", "fd-dinov2", *common,
                                   check_rc=0).stdout)
    assert alone["fd_dinov2"] == both["fd_dinov2"] and alone["dims"] == 1024 and "fid" not in alone
    # --save-stats keeps DINOv2's statistics, which serve fd-dinov2 and are refused for the FID
    stats = tmp_path / "real_dinov2.npz"
    fidfast_cli(tmp_path / "real", stats, "--save-stats", "--metrics", "fd-dinov2", *common, check_rc=0)
    from_file = json.loads(fidfast_cli(stats, tmp_path / "fake", "--metrics", "fd-dinov2", *common, check_rc=0).stdout)
    assert from_file["fd_dinov2"] == pytest.approx(alone["fd_dinov2"], rel=1e-9) and from_file["protocol"] == "edm2"
    assert_one_line_error(fidfast_cli(stats, tmp_path / "fake", "--device", "cpu"), "--metrics fd-dinov2")


def test_fd_dinov2_errors_are_one_line(tmp_path):
    rng = make_rng("fd_dinov2 errors")
    write_images(tmp_path / "a", rng, [(40, 40)] * 2)
    a = tmp_path / "a"
    (tmp_path / "not_weights.pth").write_bytes(b"not a checkpoint")
    empty_hub = {"TORCH_HOME": str(tmp_path / "hub"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for args, fragment in (
            (["--protocol", "edm2"], "add --metrics fd-dinov2"),
            (["--metrics", "fd-dinov2", "--protocol", "tf"], "fd-dinov2's protocols: edm2, dgm-eval"),
            (["--metrics", "fd-dinov2"], "dinov2_vitl14_pretrain.pth"),
            (["--metrics", "fd-dinov2", "--dinov2-weights", tmp_path / "nothing.pth"], "no such file"),
            (["--metrics", "fd-dinov2", "--dinov2-weights", tmp_path / "not_weights.pth"], "cannot be read"),
            (["--metrics", "fid,fd-dinov2", "--save-stats"], "one network's statistics")):
        assert_one_line_error(fidfast_cli(a, tmp_path / "out.npz" if "--save-stats" in args else a, "--device", "cpu",
                                          *args, env=empty_hub), fragment)
    with pytest.raises(fidfast.FidfastError, match="FD_DINOv2's protocols"):
        fidfast.fd_dinov2(a, a, protocol="clean", device="cpu")
