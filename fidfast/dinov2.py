"""FD_DINOv2's network: DINOv2 ViT-L/14 without registers (Oquab et al. 2023), as EDM2 and dgm-eval run it.

The feature is the 1024-d CLS token after the last LayerNorm (what torch.hub's ``dinov2_vitl14`` returns),
of a 224² image in [0, 1] less ImageNet's mean, over its std. The patch grid is 16², so the 37² position
embedding of the checkpoint is resampled as FAIR's model resamples it on every call (bicubic with its
+0.1 offset), once, when the weights are loaded.

Written here, not imported from timm: FAIR's checkpoint loads as it is (the same parameter names), and
importing timm costs 4.2 s on the 2-core CI machine, a fixed cost of every run. Tests hold it to FAIR's own
model code (PyPI's ``dinov2``) with the same weights.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

from fidfast.errors import FidfastError
from fidfast.features import model_dtype
from fidfast.files import file_digest
from fidfast.vit import Block, from_state, standardize
from fidfast.weights import find_checkpoint

DINOV2_DIMS = 1024
DINOV2_SIZE = 224
DINOV2_FILE = "dinov2_vitl14_pretrain.pth"
DINOV2_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DINOv2(nn.Module):
    """DINOv2 ViT/14 as a features module (README: "Any feature network"): float N×3×224×224 in [0, 1]
    → N×``num_features`` CLS tokens. ViT-L/14 by default; the sizes are arguments so that tests can run
    the same code small.

    Attributes:
        input_size: 224, the side fidfast resizes images to (by the protocol, ``edm2`` or ``dgm-eval``).
        num_features: the CLS token's width (1024 for ViT-L).
        fingerprint: what the statistics cache knows the network by (the weights file's digest, dtype).
    """

    input_size = DINOV2_SIZE

    def __init__(self, dim: int = DINOV2_DIMS, depth: int = 24, heads: int = 16, patch: int = 14,
                 grid: int = 37) -> None:
        super().__init__()
        self.num_features, self.patch, self.fingerprint = dim, patch, ""
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # in the checkpoint; unused at inference
        self.blocks = nn.ModuleList(Block(dim, heads, eps=1e-6, layer_scale=True) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.register_buffer("position", torch.zeros(0), persistent=False)  # resample_positions() sets it

    def resample_positions(self) -> None:
        """The position embedding for the 224² grid, as FAIR's ``interpolate_pos_encoding`` computes it
        (float32, bicubic, scale (16 + 0.1) / 37); called after the weights are loaded."""
        pos = self.pos_embed.detach().float()
        grid, side = math.isqrt(pos.shape[1] - 1), DINOV2_SIZE // self.patch
        if grid == side:
            self.position = pos
            return
        scale = (side + 0.1) / grid
        patches = F.interpolate(pos[:, 1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2), scale_factor=(scale, scale),
                                mode="bicubic")
        self.position = torch.cat([pos[:, :1], patches.permute(0, 2, 3, 1).reshape(1, side * side, -1)], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(standardize(x, IMAGENET_MEAN, IMAGENET_STD)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.position.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


def resolve_dinov2_weights(path: Union[str, os.PathLike, None] = None) -> Path:
    """FAIR's ``dinov2_vitl14_pretrain.pth`` (:func:`fidfast.weights.find_checkpoint`)."""
    return find_checkpoint(path, "FIDFAST_DINOV2_WEIGHTS", DINOV2_FILE, DINOV2_URL, "--dinov2-weights",
                           "FD_DINOv2 needs FAIR's DINOv2 ViT-L/14 weights (1.2 GB)")


@functools.lru_cache(maxsize=2)
def load_dinov2(path: Path, device: torch.device, dtype: torch.dtype) -> DINOv2:
    """The DINOv2 ViT-L/14 of ``path`` (FAIR's state dict) on ``device`` in ``dtype``, in eval mode; kept per
    process."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one line
        raise FidfastError(f"DINOv2 weights {path}: cannot be read ({exc.__class__.__name__}); expected FAIR's "
                           f"{DINOV2_FILE}") from None
    model = from_state(DINOv2, state, f"DINOv2 weights {path}: not FAIR's ViT-L/14 without registers (its parameters "
                       f"do not fit; expected {DINOV2_FILE})")
    model.resample_positions()
    model.fingerprint = f"dinov2 vitl14 {file_digest(path)} {dtype}"
    return model.eval().requires_grad_(False).to(device, dtype)


def dinov2_network(weights: Union[str, os.PathLike, None], device: torch.device, precision: str) -> DINOv2:
    """FD_DINOv2's network for these weights (see :func:`resolve_dinov2_weights`), device and precision
    (fp16: half weights and activations)."""
    return load_dinov2(resolve_dinov2_weights(weights), device, model_dtype(precision))
