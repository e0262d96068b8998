"""LPIPS, the learned perceptual image distance (Zhang et al. 2018, "The Unreasonable Effectiveness
of Deep Features as a Perceptual Metric"), version 0.1 with the AlexNet backbone: the default of the
reference ``lpips`` package (``lpips.LPIPS(net='alex')``).

For images ``x, y`` in [-1, 1] (eq. 1 of the paper)::

    d(x, y) = sum_l mean_{h,w} w_l . (f_l(x) - f_l(y))^2,    f_l = z_l / (||z_l||_2 + 1e-10)

where ``z_l`` are the AlexNet activations after its five ReLUs (64, 192, 384, 256, 256 channels),
unit-normalised over channels, and ``w_l >= 0`` the learned per-channel weights of the "lin" 1x1
convolutions (no bias). The inputs first pass a fixed scaling ``(x - shift) / scale``.

Weights are never downloaded here: :func:`load_lpips` reads two local files whose key names are the
published ones, so they load without conversion (key names checked against torchvision's and
lpips' source, not against the files themselves):

* the backbone: a torchvision ``alexnet`` state dict such as ``alexnet-owt-7be5be79.pth`` (keys
  ``features.{0,3,6,8,10}.{weight,bias}``; ``classifier.*`` is ignored);
* the linear layers: lpips' ``weights/v0.1/alex.pth`` (keys ``lin0.model.1.weight`` ...
  ``lin4.model.1.weight``, shapes ``(1, C_l, 1, 1)``; ``model.0`` is a parameter-free dropout).

The state dict of the lpips package's whole ``lpips.LPIPS(net='alex')`` module also loads: pass the
same file twice. Its backbone keys ``net.slice{1..5}.{0,3,6,8,10}.*`` map to ``features.*``; its
``scaling_layer.*`` buffers and the ``lins.*`` duplicates of ``lin*`` are ignored.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import Tensor, nn

from tempoflow.weights import load_weights, read_state_dict

# ScalingLayer of lpips v0.1: ImageNet mean/std expressed for inputs in [-1, 1] (2 * mean - 1, 2 * std).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
TAP_CHANNELS = (64, 192, 384, 256, 256)  # AlexNet widths after each of the five ReLUs
NORM_EPS = 1e-10  # added to the channel norm before dividing, as the reference normalize_tensor
# Smallest input side AlexNet's features accept: conv1 (k11 s4 p2) gives n1 = (H - 7) // 4 + 1, the
# first 3/2 max pool needs n1 >= 3 and leaves (n1 - 3) // 2 + 1, which the second 3/2 pool (conv2 keeps
# size) needs to be >= 3: n1 >= 7, so H >= 31. conv3-5 (k3 p1) keep the size.
MIN_SIZE = 31

_LIN_KEY = re.compile(r"lin\d\.")  # lin0. ... lin4.: the linear layers in lpips' layout
_SLICE_KEY = re.compile(r"net\.slice\d\.")  # backbone keys of the whole lpips.LPIPS module


def _check_images(x0: Tensor, x1: Tensor) -> None:
    """Both ``(B, 3, H, W)`` float tensors of one shape with ``H, W >= MIN_SIZE``."""
    for name, x in (("x0", x0), ("x1", x1)):
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"LPIPS expects float images (B, 3, H, W), got {name}: {what}")
    if x0.shape != x1.shape:
        raise ValueError(f"shapes differ: {tuple(x0.shape)} vs {tuple(x1.shape)}")
    h, w = x0.shape[2:]
    if min(h, w) < MIN_SIZE:
        raise ValueError(
            f"LPIPS (AlexNet) needs images of at least {MIN_SIZE}x{MIN_SIZE} pixels, got {h}x{w}"
        )


class NetLinLayer(nn.Module):
    """The learned 1x1 convolution of one tap, ``C -> 1`` with no bias; ``model = [Dropout, Conv2d]``
    so its weight is ``model.1.weight`` as in lpips (the dropout is identity: the module stays in eval)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 with AlexNet: ``forward(x0, x1)`` for images ``(B, 3, H, W)`` in [-1, 1] -> ``(B,)``.

    ``features`` is torchvision's ``alexnet().features`` (same indices, so its weights load as they
    are); ``lin0`` ... ``lin4`` are lpips' linear layers. Freshly built, the weights are random: use
    :func:`load_lpips` for the published metric.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        c1, c2, c3, c4, c5 = TAP_CHANNELS
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, 11, stride=4, padding=2),  # 0
            nn.ReLU(inplace=True),  # 1: tap 0
            nn.MaxPool2d(3, 2),  # 2
            nn.Conv2d(c1, c2, 5, padding=2),  # 3
            nn.ReLU(inplace=True),  # 4: tap 1
            nn.MaxPool2d(3, 2),  # 5
            nn.Conv2d(c2, c3, 3, padding=1),  # 6
            nn.ReLU(inplace=True),  # 7: tap 2
            nn.Conv2d(c3, c4, 3, padding=1),  # 8
            nn.ReLU(inplace=True),  # 9: tap 3
            nn.Conv2d(c4, c5, 3, padding=1),  # 10
            nn.ReLU(inplace=True),  # 11: tap 4
        )
        self.taps = (1, 4, 7, 9, 11)  # indices in `features` whose outputs are compared
        for i, channels in enumerate(TAP_CHANNELS):
            self.add_module(f"lin{i}", NetLinLayer(channels))

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)  # a fixed metric: the lin layers' dropout must never be active

    def activations(self, x: Tensor) -> list[Tensor]:
        """The five unit-normalised taps of ``(B, 3, H, W)`` in [-1, 1]: ``[(B, C_l, H_l, W_l)]``."""
        x = (x - self.shift) / self.scale  # (B, 3, H, W)
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)  # in-place ReLU is safe: the tapped tensor is not modified by later layers
            if i in self.taps:
                out.append(x / (x.square().sum(1, keepdim=True).sqrt() + NORM_EPS))  # (B, C_l, H_l, W_l)
        return out

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        """``d(x0, x1)`` of eq. (1) for images ``(B, 3, H, W)`` in [-1, 1] -> ``(B,)``."""
        _check_images(x0, x1)
        dist = x0.new_zeros(x0.shape[0])  # (B,)
        for i, (f0, f1) in enumerate(zip(self.activations(x0), self.activations(x1))):
            d = getattr(self, f"lin{i}")((f0 - f1).square())  # (B, 1, H_l, W_l)
            dist = dist + d.mean((1, 2, 3))  # spatial mean, summed over layers
        return dist


def load_lpips(backbone_path: str | Path, lin_path: str | Path) -> LPIPS:
    """An :class:`LPIPS` (eval mode, frozen, CPU) with weights from two local files, loaded strictly.

    Args:
        backbone_path: torchvision AlexNet state dict (``features.*``; ``classifier.*`` ignored), e.g.
            ``alexnet-owt-7be5be79.pth``, or a whole ``lpips.LPIPS(net='alex')`` state dict.
        lin_path: lpips linear layers (``lin{0..4}.model.1.weight``), e.g. lpips'
            ``weights/v0.1/alex.pth``, or a whole ``lpips.LPIPS(net='alex')`` state dict.
        Both may be ``.pt``/``.pth`` (read with ``torch.load(weights_only=True)``) or ``.safetensors``.
    Raises:
        CheckpointError: naming the file when it is missing, unreadable, or its keys or shapes do not
            match (after dropping the ignored keys above).
    """
    backbone_path, lin_path = Path(backbone_path), Path(lin_path)
    model = LPIPS()
    backbone = {}
    for key, value in read_state_dict(backbone_path, "LPIPS backbone").items():
        if _SLICE_KEY.match(key):
            backbone["features." + key.split(".", 2)[2]] = value  # net.slice2.3.weight -> features.3.weight
        elif key.startswith("features."):
            backbone[key] = value
        elif not key.startswith(("classifier.", "scaling_layer.", "lins.")) and not _LIN_KEY.match(key):
            backbone[key] = value  # unknown: reported as unexpected below
    lins = {
        key: value
        for key, value in read_state_dict(lin_path, "LPIPS linear-layer").items()
        if not key.startswith(("net.", "scaling_layer.", "lins."))
    }
    # Each file is checked strictly against its own part of the model, keys named as in the file.
    load_weights(nn.ModuleDict({"features": model.features}), backbone, backbone_path)
    lin_modules = nn.ModuleDict({f"lin{i}": getattr(model, f"lin{i}") for i in range(len(TAP_CHANNELS))})
    load_weights(lin_modules, lins, lin_path)
    return model.eval().requires_grad_(False)


def lpips_distance(model: LPIPS, a: Tensor, b: Tensor) -> Tensor:
    """LPIPS between images ``(B, C, H, W)`` in [0, 1] (``C`` = 1 or 3; grey is repeated to RGB) -> ``(B,)``.

    Maps ``x -> 2x - 1`` (the reference's ``normalize=True``) and runs ``model`` on its device; the
    result is float32 on ``a``'s device. Not wrapped in ``no_grad``: usable as a perceptual loss.

    Raises:
        ValueError: wrong or differing shapes, images smaller than ``MIN_SIZE``, values outside [0, 1].
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
            what = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be float images (B, C, H, W) with C = 1 or 3, got {what}")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.numel() == 0:
        raise ValueError(f"empty images of shape {tuple(a.shape)}")
    low, high = min(a.min().item(), b.min().item()), max(a.max().item(), b.max().item())
    if low < 0 or high > 1:
        raise ValueError(f"expected images in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    param = next(model.parameters())
    x0 = (2 * a.to(param) - 1).expand(-1, 3, -1, -1)  # (B, 3, H, W) in [-1, 1]
    x1 = (2 * b.to(param) - 1).expand(-1, 3, -1, -1)
    return model(x0, x1).float().to(a.device)  # (B,)


@torch.no_grad()
def lpips_video(model: LPIPS, a: Tensor, b: Tensor, batch_size: int = 64) -> Tensor:
    """Per-video LPIPS, the mean over frames of :func:`lpips_distance`: ``(B, T, C, H, W)`` x2 -> ``(B,)``.

    Frames go through the model ``batch_size`` pairs at a time, so memory is bounded by one chunk.
    """
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor) or x.dim() != 5:
            what = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a (B, T, C, H, W) video tensor, got {what}")
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    B, T = a.shape[:2]
    frames_a, frames_b = a.flatten(0, 1), b.flatten(0, 1)  # (B*T, C, H, W)
    dist = [
        lpips_distance(model, fa, fb)
        for fa, fb in zip(frames_a.split(batch_size), frames_b.split(batch_size))
    ]
    return torch.cat(dist).view(B, T).mean(1)  # (B,)
