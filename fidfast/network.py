"""The FID Inception v3 network: its definition only (no weights, no files, no preprocessing).

The TF 2015-12-05 graph as pytorch-fid defines it, written out here (no torchvision dependency) so that
it scripts with TorchScript: batch norm eps 1e-3, FIDInceptionA/C/E_1 average-pool with
``count_include_pad=False``, and Mixed_7c's pool branch is a 3×3 stride-1 max pool. Module names match
pytorch-fid's, so its state dict loads unchanged. The weights come from :mod:`fidfast.weights`; the
drop-in ``InceptionV3`` that loads them is :mod:`fidfast.inception`.
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# pytorch-fid's four output blocks, by the feature dims each gives (pooled).
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
DIMS = tuple(BLOCK_INDEX_BY_DIM)


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class FIDInceptionA(nn.Module):
    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        # TF's average pool ignores the zero padding.
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        branch7x7dbl = self.branch7x7dbl_3(self.branch7x7dbl_2(branch7x7dbl))
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
        branch_pool = self.branch_pool(branch_pool)
        return torch.cat([branch1x1, branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class _InceptionE(nn.Module):
    """InceptionE with the pool branch left to the subclass (the two FID variants differ only there)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch1x1 = self.branch1x1(x)
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([branch1x1, branch3x3, branch3x3dbl, branch_pool], 1)


class FIDInceptionE_1(_InceptionE):
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionE_2(_InceptionE):
    def pool(self, x: torch.Tensor) -> torch.Tensor:
        # The TF graph max-pools here (a bug in the original that FID keeps).
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class FIDInception3(nn.Module):
    """The FID Inception trunk with pytorch-fid's module names (no aux classifier, no fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE_1(1280)
        self.Mixed_7c = FIDInceptionE_2(2048)

    def blocks(self, last_block: int) -> List[nn.Sequential]:
        """The four output blocks of pytorch-fid (up to ``last_block``), sharing this trunk's modules."""
        stages = [
            [self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3, nn.MaxPool2d(kernel_size=3, stride=2)],
            [self.Conv2d_3b_1x1, self.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)],
            [self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a,
             self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e],
            [self.Mixed_7a, self.Mixed_7b, self.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))],
        ]
        return [nn.Sequential(*stage) for stage in stages[: last_block + 1]]


class PooledInception(nn.Module):
    """The trunk up to the block for ``dims``, spatially averaged: N×3×299×299 in [−1, 1] → N×dims."""

    def __init__(self, trunk: FIDInception3, dims: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*trunk.blocks(BLOCK_INDEX_BY_DIM[dims]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.blocks(x), (1, 1)).flatten(1)


# guided-diffusion's evaluator (the ADM suite): sFID's spatial features are the TF graph's ``mixed_6/conv``
# tensor (Mixed_6d's 1×1 branch after its ReLU, 17×17×192), first 7 channels, flattened in H, W, C order.
SPATIAL_CHANNELS = 7
SPATIAL_DIMS = 17 * 17 * SPATIAL_CHANNELS
POOL_DIMS = 2048
CLASSES = 1008  # the TF graph's classifier: pool3 @ softmax/weights, no bias


class SuiteInception(nn.Module):
    """One pass, three heads, as guided-diffusion's evaluator reads them: N×3×299×299 in [−1, 1] →
    N×(2048 + 2023 + 1008) float32 = [pool3 | spatial (mixed_6/conv, first 7 channels, H·W·C order) |
    logits pool3 @ Wᵀ (W: the 1008×2048 classifier weights; no bias)]."""

    def __init__(self, trunk: FIDInception3, classifier: torch.Tensor) -> None:
        super().__init__()
        layers = [m for block in trunk.blocks(BLOCK_INDEX_BY_DIM[POOL_DIMS]) for m in block][:-1]  # no pooling
        split = layers.index(trunk.Mixed_6d)
        self.head, self.mixed_6d, self.tail = nn.Sequential(*layers[:split]), trunk.Mixed_6d, \
            nn.Sequential(*layers[split + 1:])
        self.register_buffer("classifier", classifier.detach().clone().float())
        self.spatial_channels = SPATIAL_CHANNELS  # an attribute: TorchScript reads no module globals

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        # the 1×1 branch once more on its own (0.3% of the network's work): its output is sFID's feature
        spatial = self.mixed_6d.branch1x1(x)[:, :self.spatial_channels].permute(0, 2, 3, 1).flatten(1)
        pool = F.adaptive_avg_pool2d(self.tail(self.mixed_6d(x)), (1, 1)).flatten(1).float()
        logits = pool @ self.classifier.float().t()
        return torch.cat([pool, spatial.float(), logits], 1)


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BasicConv2d's batch norm into its convolution (eval mode), in the weights' own dtype."""
    for module in model.modules():
        if isinstance(module, BasicConv2d):
            module.conv = fuse_conv_bn_eval(module.conv, module.bn)
            module.bn = nn.Identity()
    return model


def conv_layer_names() -> List[str]:
    """The 94 BasicConv2d prefixes in state-dict order (e.g. ``Mixed_7c.branch_pool``)."""
    return [k[: -len(".conv.weight")] for k in FIDInception3().state_dict() if k.endswith(".conv.weight")]
