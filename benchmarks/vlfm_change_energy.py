"""Where the VLFM change target lives in time: ``‖μ̄'(t)/fps‖²`` of the projected training videos over
``[0, T]``, split into before the first frame, the frames' span, and the last interval (DESIGN §4).

    python benchmarks/vlfm_change_energy.py                       # configs/shapes_vlfm.yaml
    python benchmarks/vlfm_change_energy.py data.shapes.resolution=16 vlfm.order=4

Prints the mean ``‖μ̄'/fps‖²`` per element and each interval's share of its integral, with the
Legendre fit extrapolated before frame 1 (the paper's path) and held there (``hold_first_frame``),
next to the true frame-to-frame change ``‖u_{k+1} − u_k‖²``. Nothing is asserted.
"""

from __future__ import annotations

import argparse

import torch

from tempoflow.codecs import make_codec
from tempoflow.config import load_config
from tempoflow.data import frame_rate, load_dataset
from tempoflow.flows.legendre import projection_matrix
from tempoflow.flows.video_path import trajectory


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/shapes_vlfm.yaml")
    p.add_argument("--videos", type=int, default=128)
    p.add_argument("override", nargs="*")
    args = p.parse_args()
    cfg = load_config(args.config, args.override)
    v, fps = cfg.vlfm, frame_rate(cfg.data)
    data = load_dataset(cfg.data, "train")
    with torch.no_grad():
        latents = make_codec(v.codec, v.codec_path).encode(data.videos[: args.videos]).flatten(2)  # (B, N, d)
    B, N, _ = latents.shape
    T = N / fps
    H = latents.mT @ projection_matrix(N, v.order, v.projection).float()  # (B, d, s)
    t = torch.linspace(0.0, T, 64 * N + 1)
    spans = {"before frame 1": t < 1 / fps, "frames 1..N-1": (t >= 1 / fps) & (t < (N - 1) / fps),
             "last interval": t >= (N - 1) / fps}
    true = (latents[:, 1:] - latents[:, :-1]).square().mean()
    print(f"{args.config} {' '.join(args.override)}: N={N}, s={v.order}, {v.projection}, codec {v.codec}")
    print(f"true frame-to-frame change ‖u_(k+1) − u_k‖² per element: {true:.4f}")
    for name, hold in (("extrapolated (paper)", 0.0), ("held at frame 1", 1 / fps)):
        change = trajectory(H, t, T, hold)[1] / fps  # (B, M, d)
        energy = change.square().mean(dim=(0, 2))  # (M,)
        shares = ", ".join(f"{k} {float(energy[m].sum() / energy.sum()):.2f}" for k, m in spans.items())
        print(f"{name:22s} mean ‖μ̄'/fps‖² {energy.mean():.4f}; share of its integral: {shares}")


if __name__ == "__main__":
    main()
