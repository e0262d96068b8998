"""DeepMind's TF I3D checkpoint (``kinetics-i3d``) converted to the PyTorch module of
``tempoflow.metrics.i3d``: variable names mapped unit by unit, kernels transposed, saved as a
state dict that :func:`tempoflow.metrics.i3d.load_i3d` reads (no TensorFlow needed at run time).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tempoflow.errors import CheckpointError
from tempoflow.nets.i3d import NUM_CLASSES, InceptionI3d
from tempoflow.weights import load_weights

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
