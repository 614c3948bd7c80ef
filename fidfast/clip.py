"""CMMD's network: OpenAI's CLIP ViT-L/14 at 336 px, image tower (Radford et al. 2021), as CMMD runs it.

The feature is the image embedding (768-d), L2-normalised: the CLS token after ``ln_post``, times ``proj``,
over its norm, of a 336² image in [0, 1] less CLIP's mean, over its std. The blocks are
:class:`fidfast.vit.Block` with QuickGELU; open_clip's and OpenAI's checkpoints (the same names under
``visual.``) are renamed to them when loaded. Tests hold it to open_clip's own ``ViT-L-14-336-quickgelu``.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Dict, Union

import torch
from torch import nn

from fidfast.errors import FidfastError
from fidfast.features import model_dtype
from fidfast.files import file_digest
from fidfast.vit import Block, from_state, quick_gelu, standardize
from fidfast.weights import find_checkpoint

CLIP_DIMS = 768
CLIP_SIZE = 336
CLIP_FILE = "ViT-L-14-336px.pt"
CLIP_URL = ("https://openaipublic.azureedge.net/clip/models/3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac0"
            "8641f02/ViT-L-14-336px.pt")
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# open_clip / OpenAI names (under "visual.") → fidfast.vit's
_RENAMES = ((r"^conv1\.", "patch_embed.proj."), (r"^transformer\.resblocks\.", "blocks."), (r"\.ln_1\.", ".norm1."),
            (r"\.ln_2\.", ".norm2."), (r"\.attn\.in_proj_weight$", ".attn.qkv.weight"),
            (r"\.attn\.in_proj_bias$", ".attn.qkv.bias"), (r"\.attn\.out_proj\.", ".attn.proj."),
            (r"\.mlp\.c_fc\.", ".mlp.fc1."), (r"\.mlp\.c_proj\.", ".mlp.fc2."))


class CLIPVision(nn.Module):
    """CLIP's ViT/14 image tower as a features module (README: "Any feature network"): float
    N×3×336×336 in [0, 1] → N×``num_features`` unit-norm embeddings. ViT-L/14-336 by default; the sizes
    are arguments so that tests can run the same code small.

    Attributes:
        input_size: 336, the side fidfast resizes images to (protocol ``cmmd``).
        num_features: the embedding's width (768).
        fingerprint: what caches know the network by (the weights file's digest, dtype).
    """

    input_size = CLIP_SIZE

    def __init__(self, width: int = 1024, depth: int = 24, heads: int = 16, patch: int = 14, size: int = CLIP_SIZE,
                 dims: int = CLIP_DIMS) -> None:
        super().__init__()
        self.num_features, self.input_size, self.fingerprint = dims, size, ""
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((size // patch) ** 2 + 1, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.blocks = nn.ModuleList(Block(width, heads, eps=1e-5, activation=quick_gelu) for _ in range(depth))
        self.proj = nn.Parameter(torch.zeros(width, dims))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed.proj(standardize(x, CLIP_MEAN, CLIP_STD)).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], 1)
        x = self.ln_pre(x + self.positional_embedding.to(x.dtype))
        for block in self.blocks:
            x = block(x)
        embedding = self.ln_post(x[:, 0]) @ self.proj
        return embedding / embedding.norm(dim=-1, keepdim=True)


def vision_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The image tower's parameters of an open_clip or OpenAI CLIP state dict, in :class:`CLIPVision`'s names."""
    renamed = {}
    for name, value in state.items():
        if not name.startswith("visual."):
            continue
        name = name[len("visual."):]
        for pattern, replacement in _RENAMES:
            name = re.sub(pattern, replacement, name)
        renamed[name] = value
    return renamed


def resolve_clip_weights(path: Union[str, os.PathLike, None] = None) -> Path:
    """OpenAI's ``ViT-L-14-336px.pt`` or open_clip's ViT-L-14-336 state dict
    (:func:`fidfast.weights.find_checkpoint`)."""
    return find_checkpoint(path, "FIDFAST_CLIP_WEIGHTS", CLIP_FILE, CLIP_URL, "--clip-weights",
                           "CMMD needs OpenAI's CLIP ViT-L/14-336 weights (0.9 GB)")


def _read_state(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict file, or OpenAI's release (a TorchScript archive): its parameters, without running it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - OpenAI's file is a TorchScript archive: read its parameters
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one line
            raise FidfastError(f"CLIP weights {path}: cannot be read ({exc.__class__.__name__}); expected OpenAI's "
                               f"{CLIP_FILE} or open_clip's ViT-L-14-336 state dict") from None
    if hasattr(state, "state_dict"):  # torch.load may hand a TorchScript archive over as a module
        state = state.state_dict()
    return state.get("state_dict", state) if isinstance(state, dict) else {}


@functools.lru_cache(maxsize=2)
def load_clip(path: Path, device: torch.device, dtype: torch.dtype) -> CLIPVision:
    """The CLIP ViT-L/14-336 image tower of ``path`` on ``device`` in ``dtype``, in eval mode; kept per process."""
    state = vision_state_dict(_read_state(path))
    model = from_state(CLIPVision, state, f"CLIP weights {path}: not CLIP ViT-L/14-336's image tower (its parameters "
                       f"do not fit; expected {CLIP_FILE})")
    model.fingerprint = f"clip vitl14-336 {file_digest(path)} {dtype}"
    return model.eval().requires_grad_(False).to(device, dtype)


def clip_network(weights: Union[str, os.PathLike, None], device: torch.device, precision: str) -> CLIPVision:
    """CMMD's network for these weights (see :func:`resolve_clip_weights`), device and precision."""
    return load_clip(resolve_clip_weights(weights), device, model_dtype(precision))
