"""The network definition: pytorch-fid's 94 conv layers by name, its four output blocks, and batch-norm
folding."""
from __future__ import annotations

import torch

from fidfast.network import BLOCK_INDEX_BY_DIM, DIMS, FIDInception3, PooledInception, conv_layer_names, fold_batch_norms

from .helpers import rel


def test_layers_and_blocks():
    names = conv_layer_names()
    assert len(names) == 94 and names[0] == "Conv2d_1a_3x3" and names[-1] == "Mixed_7c.branch_pool"
    assert DIMS == (64, 192, 768, 2048) and [BLOCK_INDEX_BY_DIM[d] for d in DIMS] == [0, 1, 2, 3]
    trunk = FIDInception3().eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        for dims in DIMS:
            assert PooledInception(trunk, dims).eval()(x).shape == (2, dims)


def test_folding_batch_norm_keeps_the_function():
    trunk = FIDInception3().eval()
    for module in trunk.modules():  # batch norm with statistics and a scale, not the identity
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    model = PooledInception(trunk, 192).eval()
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    with torch.no_grad():
        before = model(x)
        after = fold_batch_norms(model)(x)
    assert not [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert rel(after, before) < 1e-5
