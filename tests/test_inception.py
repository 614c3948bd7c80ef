"""The drop-in ``fidfast.inception``: pytorch-fid's InceptionV3 interface, outputs for any input size,
TorchScript, and whether a model still holds its FID weights."""
from __future__ import annotations

import warnings

import pytest
import torch

from fidfast import inception

from .helpers import params

pytest.importorskip("pytorch_fid")
import pytorch_fid.inception  # noqa: E402


def test_constants_signature_and_state_dict_are_pytorch_fids(pytorch_fid_weights):
    theirs = pytorch_fid.inception.InceptionV3
    ours = inception.InceptionV3
    assert ours.BLOCK_INDEX_BY_DIM == theirs.BLOCK_INDEX_BY_DIM
    assert ours.DEFAULT_BLOCK_INDEX == theirs.DEFAULT_BLOCK_INDEX
    theirs_params = params(theirs.__init__)
    assert params(ours.__init__)[: len(theirs_params)] == theirs_params
    assert inception.FID_WEIGHTS_URL == pytorch_fid.inception.FID_WEIGHTS_URL
    ours_state, theirs_state = ours([1, 3]).state_dict(), theirs([1, 3]).state_dict()
    assert list(ours_state) == list(theirs_state)  # either model loads the other's state dict
    assert all(torch.equal(ours_state[k], theirs_state[k]) for k in ours_state)


def test_forward_returns_feature_maps_for_any_size():
    model = inception.InceptionV3([0, 3]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 67, 131))
    assert isinstance(out, list) and len(out) == 2
    assert out[0].shape == (2, 64, 73, 73)
    assert out[1].shape == (2, 2048, 1, 1)
    assert torch.isfinite(out[1]).all() and out[1].abs().mean() > 0.01
    assert not any(p.requires_grad for p in model.parameters())


def test_scripts_without_warnings():
    model = inception.InceptionV3([1], resize_input=False).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    x = torch.rand(1, 3, 299, 299)
    with torch.no_grad():
        assert torch.equal(scripted(x)[0], model(x)[0])


def test_holds_weights_until_they_change():
    model = inception.InceptionV3([1])
    assert model.holds_weights()
    state = model.state_dict()
    key = next(k for k in state if k.endswith("conv.weight"))
    state[key] = state[key] * 1.01
    model.load_state_dict(state)
    assert not model.holds_weights()
    assert not inception.InceptionV3([1]).double().holds_weights()  # another dtype computes other numbers
