"""The transformer block both of fidfast's ViTs run (DINOv2's and CLIP's), in FAIR's parameter names;
CLIP's checkpoints are renamed to them when loaded (:mod:`fidfast.clip`)."""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fidfast.errors import FidfastError


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's activation, x·σ(1.702x)."""
    return x * torch.sigmoid(1.702 * x)


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention: one q, k, v projection (rows q, then k, then v, as nn.MultiheadAttention's
    in_proj packs them), scaled dot products, the output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, tokens, dim))


class Mlp(nn.Module):
    def __init__(self, dim: int, activation) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x)), each branch scaled per channel
    where ``layer_scale`` (DINOv2)."""

    def __init__(self, dim: int, heads: int, eps: float, layer_scale: bool = False, activation=F.gelu) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn, self.mlp = Attention(dim, heads), Mlp(dim, activation)
        self.ls1, self.ls2 = (LayerScale(dim), LayerScale(dim)) if layer_scale else (nn.Identity(), nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


def standardize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """N×3×H×W images less a per-channel mean, over a per-channel std (the network's own normalisation)."""
    mean_t, std_t = (torch.tensor(c, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) for c in (mean, std))
    return (x - mean_t) / std_t


def from_state(build: Callable[[], nn.Module], state: Dict[str, torch.Tensor], misfit: str) -> nn.Module:
    """``build()``'s network holding ``state``: built on the meta device (no random initialisation of the
    parameters the file replaces), then given the file's tensors; ``misfit`` is the one line when they do not
    fit."""
    with torch.device("meta"):
        model = build()
    try:
        model.load_state_dict(state, assign=True)
    except (RuntimeError, TypeError, AttributeError):
        raise FidfastError(misfit) from None
    return model
