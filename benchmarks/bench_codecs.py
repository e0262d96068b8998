"""Encode/decode throughput of every codec, in frames per second, with the hardware named.

    python benchmarks/bench_codecs.py                                  # CPU, and the GPU when there is one
    python benchmarks/bench_codecs.py --autoencoder runs/shapes_autoencoder --sd-vae /models/sd-vae-ft-mse
    python benchmarks/bench_codecs.py --json docs/results/bench_codecs_cpu.json

Trained/pretrained codecs are measured from the paths given; without a path a codec is built with
RANDOM weights from its architecture (speed depends on the architecture, not on the weights):
  pixel                     identity
  autoencoder               the shapes_autoencoder config's frame autoencoder, 32x32 frames
  diffusers_vae             the Stable Diffusion VAE architecture (128-256-512-512, 4 latent channels)
  ddim_inversion            a small diffusers UNet2DModel + the SD VAE architecture, --ddim-steps steps
Nothing is asserted (this is not a test).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tempoflow.codecs import Codec, PixelCodec
from tempoflow.evaluate.record import hardware
from tempoflow.runs import build_codec

SD_VAE = {  # the architecture of Stable Diffusion's KL-f8 VAE (its config.json), random weights
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "scaling_factor": 0.18215,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def throughput(codec: Codec, video: torch.Tensor, repeats: int, dtype: torch.dtype) -> tuple[float, float]:
    """Frames per second of ``encode`` and of ``decode`` on ``video (B, T, C, H, W)`` (after a warm-up)."""
    device = video.device
    frames = video.shape[0] * video.shape[1]
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        z = codec.encode(video)
        codec.decode(z)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(repeats):
            z = codec.encode(video)
        _sync(device)
        t1 = time.perf_counter()
        for _ in range(repeats):
            codec.decode(z)
        _sync(device)
        t2 = time.perf_counter()
    return frames * repeats / (t1 - t0), frames * repeats / (t2 - t1)


def build_codecs(args) -> dict[str, tuple[Codec, int]]:
    """name -> (codec, frame side it is measured at)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel

    from tempoflow.codecs.ddim_inversion import DDIMInversionCodec, DiffusionParts
    from tempoflow.codecs.diffusers_vae import DiffusersVAECodec

    codecs: dict[str, tuple[Codec, int]] = {"pixel": (PixelCodec(), args.size)}
    if args.autoencoder:
        codecs["autoencoder"] = (build_codec("autoencoder", args.autoencoder), 32)
    else:
        from tempoflow.codecs.autoencoder import AutoencoderCodec
        from tempoflow.config import load_config
        from tempoflow.runs import build_method

        ae = build_method(load_config("shapes_autoencoder", ["text.encoder=hashing"]))
        codecs["autoencoder (random)"] = (AutoencoderCodec(ae), 32)
    torch.manual_seed(0)
    sd_vae = (DiffusersVAECodec(args.sd_vae, chunk=8) if args.sd_vae
              else DiffusersVAECodec(AutoencoderKL(**SD_VAE), chunk=8))
    codecs["diffusers_vae" + ("" if args.sd_vae else " (SD arch, random)")] = (sd_vae, args.size)
    unet = UNet2DModel(sample_size=args.size // 8, in_channels=4, out_channels=4, block_out_channels=(64, 128),
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    parts = DiffusionParts(vae=sd_vae.vae, unet=unet, scheduler=DDIMScheduler(timestep_spacing="trailing"))
    codecs[f"ddim_inversion ({args.ddim_steps} steps, small UNet, random)"] = (
        DDIMInversionCodec(parts, steps=args.ddim_steps, chunk=8), args.size)
    return codecs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--autoencoder", default="", help="a trained autoencoder run (else random weights)")
    p.add_argument("--sd-vae", default="", help="a local diffusers AutoencoderKL folder or hub id")
    p.add_argument("--size", type=int, default=64, help="frame side for the diffusers codecs and pixel")
    p.add_argument("--frames", type=int, default=8, help="frames per measured call (one video)")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    rows = []
    for device in devices:
        dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])
        for name, (codec, side) in build_codecs(args).items():
            codec = codec.to(device)
            video = torch.rand(1, args.frames, 3, side, side, device=device)
            for dtype in dtypes:
                enc, dec = throughput(codec, video, args.repeats, dtype)
                rows.append({"device": device.type, "dtype": str(dtype).removeprefix("torch."), "codec": name,
                             "frame": f"{side}x{side}", "encode_fps": enc, "decode_fps": dec})
    print(f"hardware: {hardware()}")
    print("| device | dtype | codec | frame | encode frames/s | decode frames/s |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['dtype']} | {r['codec']} | {r['frame']} | {r['encode_fps']:.1f} | "
              f"{r['decode_fps']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"hardware": hardware(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
