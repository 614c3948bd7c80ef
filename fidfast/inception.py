"""Drop-in replacement for ``pytorch_fid.inception``: ``InceptionV3``, ``fid_inception_v3`` and friends.

The network itself is :mod:`fidfast.network`; this module loads the FID weights into it (resolved as
:mod:`fidfast.weights` says, offline first) and, in ``InceptionV3.forward``, resizes and normalises as
pytorch-fid does, with :mod:`fidfast.preprocess`'s reference functions for pytorch-fid's protocol (plain
functions, so that the model scripts with TorchScript).
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
from torch import nn

from fidfast.network import (  # noqa: F401
    BLOCK_INDEX_BY_DIM,
    FIDInception3,
    FIDInceptionA,
    FIDInceptionC,
    FIDInceptionE_1,
    FIDInceptionE_2,
)
from fidfast.preprocess import interpolate_bilinear, two_x_minus_one
from fidfast.weights import FID_WEIGHTS_URL, Weights, resolve_weights

__all__ = ["InceptionV3", "fid_inception_v3", "FIDInceptionA", "FIDInceptionC", "FIDInceptionE_1",
           "FIDInceptionE_2", "FID_WEIGHTS_URL"]


def fid_inception_v3(weights: Union[str, Weights, None] = None) -> FIDInception3:
    """The FID Inception trunk with the FID weights loaded (resolved as in :mod:`fidfast.weights`)."""
    net = FIDInception3()
    net.load_state_dict(resolve_weights(weights).state_dict())
    return net.eval()


class InceptionV3(nn.Module):
    """Pretrained InceptionV3 returning feature maps, as ``pytorch_fid.inception.InceptionV3``.

    ``forward`` takes float N×3×H×W in [0, 1] (any H, W) and returns one tensor per requested block:
    N×64×73×73, N×192×35×35, N×768×17×17, N×2048×1×1 at 299×299 input. ``weights`` (fidfast's
    addition) names the weights file; the resolved :class:`~fidfast.weights.Weights` is kept as
    ``self.weights``.
    """

    DEFAULT_BLOCK_INDEX = 3
    BLOCK_INDEX_BY_DIM = BLOCK_INDEX_BY_DIM

    def __init__(self, output_blocks: Sequence[int] = (DEFAULT_BLOCK_INDEX,), resize_input: bool = True,
                 normalize_input: bool = True, requires_grad: bool = False, use_fid_inception: bool = True,
                 weights: Union[str, Weights, None] = None) -> None:
        super().__init__()
        if not use_fid_inception:
            raise ValueError("fidfast ships only the FID Inception weights: use_fid_inception=False is not "
                             "supported (torchvision's ImageNet Inception gives scores not comparable to FID)")
        self.resize_input = resize_input
        self.normalize_input = normalize_input
        self.output_blocks = sorted(output_blocks)
        self.last_needed_block = max(output_blocks)
        assert self.last_needed_block <= 3, "Last possible output block index is 3"
        self.weights = resolve_weights(weights)
        trunk = fid_inception_v3(self.weights)
        self.blocks = nn.ModuleList(trunk.blocks(self.last_needed_block))
        # The trunk's name of each tensor of this model, so that holds_weights() can compare them.
        names = {id(t): name for name, t in trunk.state_dict(keep_vars=True).items()}
        self._trunk_names = [names[id(t)] for t in self.blocks.state_dict(keep_vars=True).values()]
        for param in self.parameters():
            param.requires_grad = requires_grad

    def forward(self, inp: torch.Tensor) -> List[torch.Tensor]:
        outp: List[torch.Tensor] = []
        x = inp
        if self.resize_input:
            x = interpolate_bilinear(x)
        if self.normalize_input:
            x = two_x_minus_one(x)
        # self.blocks holds no block past last_needed_block, so no early exit is needed.
        for idx, block in enumerate(self.blocks):
            x = block(x)
            if idx in self.output_blocks:
                outp.append(x)
        return outp

    def holds_weights(self) -> bool:
        """True when every tensor of the model still equals ``self.weights``' (a caller may have changed
        them, e.g. with ``load_state_dict``, or cast the model to another dtype)."""
        reference = self.weights.state_dict()
        tensors = list(self.blocks.state_dict().values())
        return len(tensors) == len(self._trunk_names) and all(
            t.dtype == reference[name].dtype and t.shape == reference[name].shape
            and torch.equal(t.detach().cpu(), reference[name]) for name, t in zip(self._trunk_names, tensors))
