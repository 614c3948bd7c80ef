"""CMMD (fidfast.clip, the cmmd protocol, fidfast.mmd_gaussian, fidfast.cmmd, --metrics cmmd) against
open_clip's own CLIP code, CMMD's crop-and-resize calls and a float64 numpy twin of its estimator, with
seeded random weights (the real checkpoint is not downloadable here; random weights run the same code)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fidfast
from fidfast.clip import CLIP_MEAN, CLIP_STD, load_clip
from fidfast.preprocess import PROTOCOLS, module_input, pack

from .helpers import assert_one_line_error, fidfast_cli, make_rng, natural_image, rel, write_images


@pytest.fixture(scope="module")
def clip_model():
    """open_clip's ViT-L-14-336 with QuickGELU (OpenAI's architecture), every image-tower parameter moved off
    its initial value, seeded."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(24)
    model = open_clip.create_model("ViT-L-14-336-quickgelu", pretrained=None).eval()
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


@pytest.fixture(scope="module")
def clip_weights(clip_model, tmp_path_factory):
    """The image tower's part of open_clip's state dict, as a file."""
    path = tmp_path_factory.mktemp("clip") / "ViT-L-14-336.pth"
    torch.save({k: v for k, v in clip_model.state_dict().items() if k.startswith("visual.")}, path)
    return path


def open_clip_embeddings(model, x01: torch.Tensor) -> torch.Tensor:
    """CMMD's embedding of [0, 1] images: CLIP's mean and std, the image tower, L2-normalised."""
    x = (x01 - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.encode_image(x, normalize=True).double()


def cmmd_crop_and_resize(img: np.ndarray) -> torch.Tensor:
    """CMMD's io_util: the centred square box, PIL's bicubic to 336², float32 / 255, grey tiled to RGB."""
    im = Image.fromarray(img)
    w, h = im.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    x = np.asarray(im.crop((left, top, left + side, top + side)).resize((336, 336), resample=Image.BICUBIC))
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = np.tile(x[..., None], (1, 1, 3))
    return torch.from_numpy(x / 255.0).permute(2, 0, 1)


def mmd_twin(x: np.ndarray, y: np.ndarray, sigma: float = 10.0) -> float:
    """CMMD's estimator in float64 numpy: all pairs, diagonals included, × 1000."""
    def k(a, b):
        return np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * sigma ** 2)).mean()
    return 1000 * (k(x, x) + k(y, y) - 2 * k(x, y))


def test_the_network_is_open_clips(clip_model, clip_weights):
    ours = load_clip(clip_weights, torch.device("cpu"), torch.float32)
    x = torch.from_numpy(make_rng("clip net").random((2, 3, 336, 336), dtype=np.float32))
    with torch.no_grad():
        got = ours(x)
    assert got.shape == (2, 768)
    assert rel(got, open_clip_embeddings(clip_model, x)) <= 1e-5


def test_the_crop_and_resize_are_cmmds():
    rng = make_rng("cmmd resize")
    images = [natural_image(rng, h, w) for h, w in ((64, 64), (500, 375), (181, 403), (336, 336), (700, 1001))]
    for img in images + [natural_image(rng, 97, 120)[:, :, 1]]:
        got = module_input(pack([img]), torch.device("cpu"), 336, PROTOCOLS["cmmd"])
        assert torch.equal(got[0], cmmd_crop_and_resize(img)), img.shape


def test_mmd_is_the_biased_estimator():
    rng = make_rng("mmd")
    x, y = rng.normal(size=(23, 16)) * 4, rng.normal(size=(17, 16)) * 4 + 0.5
    expected = mmd_twin(x, y)
    for block in (5, 4096):  # by blocks, and whole
        assert rel(fidfast.mmd_gaussian(torch.from_numpy(x), torch.from_numpy(y), block=block), expected) <= 1e-12
    assert fidfast.mmd_gaussian(torch.from_numpy(x), torch.from_numpy(x)) == pytest.approx(0.0, abs=1e-12)


def test_cmmd_is_the_reference_computation(clip_model, clip_weights):
    rng = make_rng("cmmd e2e")
    real = [natural_image(rng, 120, 90) for _ in range(3)]
    fake = [natural_image(rng, 300, 400) for _ in range(3)]
    embed = [open_clip_embeddings(clip_model, torch.stack([cmmd_crop_and_resize(i) for i in imgs])).numpy()
             for imgs in (real, fake)]
    got = fidfast.cmmd(np.stack(real), np.stack(fake), weights=clip_weights, device="cpu", num_workers=0,
                       progress=False)
    assert rel(got, mmd_twin(*embed)) <= 1e-5


def test_the_command_line_gives_cmmd(clip_weights, tmp_path):
    rng = make_rng("cmmd cli")
    write_images(tmp_path / "real", rng, [(80, 96)] * 3)
    write_images(tmp_path / "fake", rng, [(120, 100)] * 3, shift=0.1)
    common = ["--device", "cpu", "--num-workers", "0", "--clip-weights", clip_weights, "--json"]
    alone = json.loads(fidfast_cli(tmp_path / "real", tmp_path / "fake", "--metrics", "cmmd", *common,
                                   check_rc=0).stdout)
    expected = fidfast.cmmd(tmp_path / "real", tmp_path / "fake", weights=clip_weights, device="cpu", num_workers=0,
                            progress=False)
    assert alone["cmmd"] == pytest.approx(expected, rel=1e-9) and alone["protocol"] == "cmmd"
    both = json.loads(fidfast_cli(tmp_path / "real", tmp_path / "fake", "--metrics", "fid,cmmd", *common,
                                  check_rc=0).stdout)
    assert both["cmmd"] == alone["cmmd"] and np.isfinite(both["fid"]) and both["protocol"] == "pytorch-fid"


def test_cmmd_errors_are_one_line(tmp_path):
    rng = make_rng("cmmd errors")
    write_images(tmp_path / "a", rng, [(40, 40)] * 2)
    a = tmp_path / "a"
    empty_hub = {"TORCH_HOME": str(tmp_path / "hub"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for args, fragment in ((["--metrics", "cmmd"], "ViT-L-14-336px.pt"),
                           (["--metrics", "cmmd", "--protocol", "cmmd"], "leave it out"),
                           (["--protocol", "cmmd"], "leave it out"),
                           (["--metrics", "cmmd", "--clip-weights", tmp_path / "none.pt"], "no such file")):
        assert_one_line_error(fidfast_cli(a, a, "--device", "cpu", *args, env=empty_hub), fragment)
    with pytest.raises(fidfast.FidfastError, match="MMD needs two"):
        fidfast.mmd_gaussian(torch.rand(3, 4), torch.rand(3, 5))
