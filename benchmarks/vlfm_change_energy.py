"""Where the VLFM change target lives in time: ``‖μ̄'(t)/fps‖²`` of the projected training videos over
``[0, T]``, split into before the first frame, the frames' span, and the last interval (DESIGN §4).

    python benchmarks/vlfm_change_energy.py                       # the packaged shapes_vlfm config
    python benchmarks/vlfm_change_energy.py data.shapes.resolution=16 vlfm.order=4

Prints the mean ``‖μ̄'/fps‖²`` per element and each interval's share of its integral, with the
Legendre fit extrapolated before frame 1 (the paper's path) and held there (``hold_first_frame``),
next to the true frame-to-frame change ``‖u_{k+1} − u_k‖²``. With ``--runs``, also how much of that
target each trained data-prediction run's change head explains (R² over the training videos at the
frame times and half-way between them, inside the frames' span). Nothing is asserted.

    python benchmarks/vlfm_change_energy.py --runs runs/hold10k/base runs/paper10k/extrapolated_start
"""

from __future__ import annotations

import argparse

import torch

from tempoflow.config import load_config
from tempoflow.data import frame_rate, load_dataset
from tempoflow.flows.legendre import projection_matrix
from tempoflow.flows.video_path import trajectory
from tempoflow.methods.conditioning import encode_captions
from tempoflow.runs import build_codec, load_run


@torch.no_grad()
def change_head_r2(run: str, videos: int, seed: int = 0) -> list[float]:
    """R² of a data-prediction run's change head against ``μ̄'/fps`` (its own path's, held or not) at
    t = k/fps and (k + ½)/fps, k = 1..N−1, over the first ``videos`` training videos."""
    method, cfg, _ = load_run(run, device="cpu")
    if cfg.vlfm.prediction != "data" or cfg.vlfm.objective != "flow":
        raise SystemExit(f"{run}: not a data-prediction flow run")
    data = load_dataset(cfg.data, "train")
    H = method.project(method.codec.encode(data.videos[:videos]))  # (B, d, s)
    B, d, _ = H.shape
    T, N, fps = method.duration, method.num_frames, method.fps
    cond = encode_captions(method.text, list(data.captions[:videos]), H.device)
    gen = torch.Generator().manual_seed(seed)
    r2 = []
    for k in range(1, N):
        for frac in (0.0, 0.5):
            t = torch.full((B,), (k + frac) / fps)
            psi = method.path.sample(H, torch.randn(B, d, generator=gen), t, T, N).psi_t
            change = trajectory(H, t[:, None], T, method.path.hold_until(T, N))[1][:, 0] / fps  # (B, d)
            out = method.net(psi.view(B, 1, *method.latent_shape), t, drop=torch.zeros(B, dtype=torch.bool), **cond)
            predicted = out.flatten(2).view(B, 2, d)[:, 1]
            r2.append(1.0 - float((predicted - change).square().sum() / change.square().sum()))
    return r2


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="shapes_vlfm")
    p.add_argument("--videos", type=int, default=128)
    p.add_argument("--runs", nargs="*", default=[], help="trained vlfm runs whose change head to score")
    p.add_argument("override", nargs="*")
    args = p.parse_args()
    cfg = load_config(args.config, args.override)
    v, fps = cfg.vlfm, frame_rate(cfg.data)
    data = load_dataset(cfg.data, "train")
    with torch.no_grad():
        latents = build_codec(v.codec, v.codec_path).encode(data.videos[: args.videos]).flatten(2)  # (B, N, d)
    N = latents.shape[1]
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
    for run in args.runs:
        r2 = change_head_r2(run, args.videos)
        print(f"{run}: change-head R² inside the frames' span {sum(r2) / len(r2):.3f} "
              f"(min {min(r2):.3f}, max {max(r2):.3f})")


if __name__ == "__main__":
    main()
