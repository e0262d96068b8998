"""Codecs on diffusers models: a pretrained VAE, and DDIM inversion of an image diffusion model.

Every model is a tiny random one built from a config (weights cannot be downloaded here). References:
direct diffusers calls (``AutoencoderKL.encode/decode``), diffusers' own ``DDIMScheduler.step`` and
``DDIMInverseScheduler.step`` loops, and the first-order convergence of DDIM inversion.
"""

from __future__ import annotations

import itertools
import json
import string

import pytest
import torch
from diffusers import AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, UNet2DConditionModel, UNet2DModel

from tempoflow.codecs.ddim_inversion import DDIMInversionCodec, DiffusionParts, ddim_step
from tempoflow.codecs.diffusers_vae import DiffusersVAECodec
from tempoflow.errors import ConfigError
from tempoflow.runs import build_codec

EMBED_DIM = 8  # the tiny UNet's cross-attention width
# Stable Diffusion 1.5's schedule; clip_sample off because clipping x̂_0 breaks invertibility.
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "clip_sample": False,
}


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    """16x16 RGB frames -> (4, 8, 8); scaling_factor set so latents have unit std, as SD's 0.18215 was."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    with torch.no_grad():
        z = vae.encode(torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    vae.register_to_config(scaling_factor=float(1 / z.latent_dist.mean.std()))
    return vae


def tiny_unet(
    conditional: bool, seed: int = 0, output_scale: float = 0.1
) -> UNet2DModel | UNet2DConditionModel:
    """A random ε-model on (4, 8, 8) latents. Its output conv is scaled by ``output_scale``: a random
    UNet's ε is rough in x, and inversion's error grows with that roughness (measured: the relative round-trip
    error at 32 steps is 0.52 at scale 1 and 0.026 at scale 0.1, 0.014 at 64 steps)."""
    torch.manual_seed(seed)
    common = {
        "sample_size": 8,
        "in_channels": 4,
        "out_channels": 4,
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
    }
    if conditional:
        unet = UNet2DConditionModel(
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=EMBED_DIM,
            attention_head_dim=2,
            norm_num_groups=4,
            **common,
        )
    else:
        unet = UNet2DModel(
            down_block_types=("DownBlock2D",) * 2,
            up_block_types=("UpBlock2D",) * 2,
            norm_num_groups=4,
            **common,
        )
    with torch.no_grad():
        unet.conv_out.weight.mul_(output_scale)
        unet.conv_out.bias.mul_(output_scale)
    return unet


def video(b: int = 2, t: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, t, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def embedding(seed: int) -> torch.Tensor:
    return torch.randn(1, 5, EMBED_DIM, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- diffusers VAE codec


def test_vae_codec_equals_direct_diffusers_calls():
    """Reference: AutoencoderKL.encode(2x − 1).latent_dist.mean · scaling_factor, and its inverse."""
    vae = tiny_vae()
    codec = DiffusersVAECodec(vae)
    x = video()
    z = codec.encode(x)
    assert z.shape == (2, 3, 4, 8, 8) and z.dtype == torch.float32
    assert codec.latent_shape(3, 16, 16) == (4, 8, 8)
    assert codec.scaling == vae.config.scaling_factor != 1.0
    with torch.no_grad():
        expected = vae.encode(x.flatten(0, 1) * 2 - 1).latent_dist.mean * vae.config.scaling_factor
        decoded = (vae.decode(z.flatten(0, 1) / vae.config.scaling_factor).sample + 1) / 2
    torch.testing.assert_close(z.flatten(0, 1), expected, atol=1e-5, rtol=1e-5)
    out = codec.decode(z)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out.flatten(0, 1), decoded.clamp(0, 1), atol=1e-5, rtol=1e-5)


def test_vae_codec_applies_shift_factor():
    """SD3/Flux convention: z = (mean − shift) · scaling; decode inverts it (reference: direct calls)."""
    vae = tiny_vae()
    vae.register_to_config(shift_factor=0.3)
    codec, x = DiffusersVAECodec(vae), video(1, 2)
    with torch.no_grad():
        mean = vae.encode(x.flatten(0, 1) * 2 - 1).latent_dist.mean
        z = (mean - 0.3) * vae.config.scaling_factor
        decoded = ((vae.decode(mean).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(codec.encode(x).flatten(0, 1), z, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        codec.decode(z.unflatten(0, (1, 2))).flatten(0, 1), decoded, atol=1e-5, rtol=1e-5
    )
    assert codec.fingerprint() != DiffusersVAECodec(tiny_vae()).fingerprint()  # the shift is in it


def test_vae_codec_chunking_and_dtype_do_not_change_results():
    vae, x = tiny_vae(), video(2, 5)
    one = DiffusersVAECodec(vae, chunk=100).encode(x)
    torch.testing.assert_close(DiffusersVAECodec(vae, chunk=3).encode(x), one, atol=1e-6, rtol=1e-6)
    wide = DiffusersVAECodec(tiny_vae(), dtype=torch.float64)  # a second computation in float64
    assert next(wide.vae.parameters()).dtype == torch.float64
    z = wide.encode(x)
    assert z.dtype == torch.float32  # outputs follow the input's dtype, not the weights'
    torch.testing.assert_close(z, one, atol=1e-4, rtol=1e-4)
    assert wide.decode(z).dtype == torch.float32


def test_vae_codec_sample_posterior_needs_a_generator():
    codec, x = DiffusersVAECodec(tiny_vae(), sample_posterior=True), video(1, 2)
    with pytest.raises(ValueError, match="Generator"):
        codec.encode(x)
    a = codec.encode(x, torch.Generator().manual_seed(3))
    b = codec.encode(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.allclose(a, DiffusersVAECodec(codec.vae).encode(x))  # a sample, not the mean


def test_vae_codec_rejects_bad_shapes():
    codec = DiffusersVAECodec(tiny_vae())
    with pytest.raises(ValueError, match="15x16 is not divisible by .* 2"):
        codec.latent_shape(3, 15, 16)
    with pytest.raises(ValueError, match="3-channel"):
        codec.encode(torch.rand(1, 2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        codec.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="latents"):
        codec.decode(torch.rand(1, 2, 3, 8, 8))


def test_vae_codec_loads_from_disk_and_fails_clearly(tmp_path, monkeypatch):
    vae, x = tiny_vae(), video(1, 2)
    vae.save_pretrained(tmp_path / "bare")
    vae.save_pretrained(tmp_path / "pipe" / "vae")  # a whole pipeline's layout
    expected = DiffusersVAECodec(vae).encode(x)
    for source in (tmp_path / "bare", tmp_path / "pipe"):
        codec = build_codec("diffusers_vae", str(source))
        assert isinstance(codec, DiffusersVAECodec)
        torch.testing.assert_close(codec.encode(x), expected)
        assert codec.fingerprint() == DiffusersVAECodec(vae).fingerprint()
    missing = str(tmp_path / "no" / "such" / "vae")
    with pytest.raises(ConfigError, match=f"path not found: {missing}"):
        DiffusersVAECodec(missing)
    with pytest.raises(ConfigError, match="no config.json|does not appear|config.json"):
        DiffusersVAECodec(tmp_path)  # exists but holds no VAE
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="nobody/no-such-vae.*HF_HUB_OFFLINE"):
        DiffusersVAECodec("nobody/no-such-vae")
    with pytest.raises(ConfigError, match="flow.codec_path"):
        build_codec("diffusers_vae", "")


def test_build_codec_lists_every_name():
    assert type(build_codec("pixel")).__name__ == "PixelCodec"  # the existing names still work
    with pytest.raises(ConfigError, match="pixel, autoencoder, video_wae, diffusers_vae, ddim_inversion"):
        build_codec("nope")


# --------------------------------------------------------------------------- DDIM inversion codec


def cond_parts(prediction_type: str = "epsilon", spacing: str = "leading") -> DiffusionParts:
    offset = 1 if spacing == "leading" else 0  # SD's steps_offset; trailing spacing ends at τ = 999 itself
    scheduler = DDIMScheduler(
        **SD_SCHEDULE, prediction_type=prediction_type, timestep_spacing=spacing, steps_offset=offset
    )
    return DiffusionParts(tiny_vae(), tiny_unet(conditional=True), scheduler)


def guided_eps(unet, x, t, cond, uncond, w):
    """Reference guidance: two separate UNet calls (the codec batches them)."""
    e_c = unet(x, t, encoder_hidden_states=cond.expand(len(x), -1, -1)).sample
    e_u = unet(x, t, encoder_hidden_states=uncond.expand(len(x), -1, -1)).sample
    return e_u + w * (e_c - e_u)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@torch.no_grad()
def test_ddim_sampling_equals_diffusers_scheduler(prediction_type):
    """Reference: diffusers' DDIMScheduler.step (η = 0) in a plain loop, with guidance w = 3."""
    parts, cond, uncond = cond_parts(prediction_type), embedding(0), embedding(1)
    codec = DDIMInversionCodec(
        parts, steps=6, guidance_scale=3.0, prompt_embeds=cond, negative_prompt_embeds=uncond
    )
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    scheduler = DDIMScheduler.from_config(parts.scheduler.config)
    scheduler.set_timesteps(6)
    x = noise
    for t in scheduler.timesteps:
        x = scheduler.step(guided_eps(parts.unet, x, t, cond, uncond, 3.0), t, x, eta=0.0).prev_sample
    torch.testing.assert_close(codec.sample(noise), x, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_ddim_inversion_equals_diffusers_inverse_scheduler():
    """Reference: diffusers' DDIMInverseScheduler.step loop (Mokady et al.'s inversion), w = 3."""
    parts, cond, uncond = cond_parts(), embedding(0), embedding(1)
    codec = DDIMInversionCodec(
        parts, steps=6, guidance_scale=3.0, prompt_embeds=cond, negative_prompt_embeds=uncond
    )
    z_0 = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    inverse = DDIMInverseScheduler.from_config(parts.scheduler.config)
    inverse.set_timesteps(6)
    x = z_0
    for t in inverse.timesteps:
        x = inverse.step(guided_eps(parts.unet, x, t, cond, uncond, 3.0), t, x).prev_sample
    torch.testing.assert_close(codec.invert(z_0), x, atol=1e-5, rtol=1e-5)


def test_ddim_step_is_exactly_invertible_for_a_fixed_noise():
    """Closed form: with ε̂ held fixed, a step a -> a' then a' -> a returns x exactly."""
    x, eps = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(ddim_step(ddim_step(x, eps, 0.9, 0.2), eps, 0.2, 0.9), x)


def test_ddim_round_trip_converges_at_first_order():
    """Inversion is exact only as steps shrink: the relative error of sample(invert(z)) should halve
    when the steps double (first order; trailing spacing keeps τ_max = 999 for every step count).
    Measured with this tiny model: 0.191, 0.103, 0.052, 0.026 (4, 8, 16, 32 steps)."""
    vae, unet = tiny_vae(), tiny_unet(conditional=False)
    scheduler = DDIMScheduler(**SD_SCHEDULE, timestep_spacing="trailing")
    z_0 = DiffusersVAECodec(vae).encode(video(1, 4)).flatten(0, 1)  # (4, 4, 8, 8), unit std
    errors = []
    for steps in (4, 8, 16, 32):
        codec = DDIMInversionCodec(DiffusionParts(vae, unet, scheduler), steps=steps)
        noise = codec.invert(z_0)
        errors.append(((codec.sample(noise) - z_0).norm() / z_0.norm()).item())
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert all(1.6 < r < 2.6 for r in ratios), (errors, ratios)
    assert errors[-1] < 0.04, errors


def test_ddim_codec_shapes_determinism_and_chunking():
    parts = DiffusionParts(
        tiny_vae(), tiny_unet(conditional=False), DDIMScheduler(**SD_SCHEDULE, steps_offset=1)
    )
    x = video(2, 3)
    codec = DDIMInversionCodec(parts, steps=4, chunk=100)
    u = codec.encode(x)
    assert u.shape == (2, 3, 4, 8, 8) and codec.latent_shape(3, 16, 16) == (4, 8, 8) and codec.scaling == 1.0
    assert torch.equal(codec.encode(x), u)  # deterministic
    torch.testing.assert_close(DDIMInversionCodec(parts, steps=4, chunk=2).encode(x), u, atol=1e-5, rtol=1e-5)
    out = codec.decode(u)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    vae_path = DiffusersVAECodec(parts.vae)  # decode = VAE decode of the DDIM sample
    torch.testing.assert_close(out, vae_path.decode(codec.sample(u.flatten(0, 1)).unflatten(0, (2, 3))))
    assert codec.fingerprint() != DDIMInversionCodec(parts, steps=5).fingerprint()


def write_tiny_text_model(folder) -> None:
    """A character-level CLIP tokenizer and a one-layer CLIP text model, saved like SD's subfolders."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in string.ascii_lowercase:
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8).save_pretrained(
        folder / "tokenizer"
    )
    torch.manual_seed(0)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=EMBED_DIM,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    CLIPTextModel(config).save_pretrained(folder / "text_encoder")


def test_ddim_codec_loads_a_pipeline_folder(tmp_path):
    """An unconditional pipeline (vae/ unet/ scheduler/) and a text-conditioned one (plus
    text_encoder/ tokenizer/) load by path and give what the same parts give when passed built."""
    x = video(1, 1)
    for conditional in (False, True):
        folder = tmp_path / f"pipe{int(conditional)}"
        parts = DiffusionParts(
            tiny_vae(), tiny_unet(conditional), DDIMScheduler(**SD_SCHEDULE, steps_offset=1)
        )
        parts.vae.save_pretrained(folder / "vae")
        parts.unet.save_pretrained(folder / "unet")
        parts.scheduler.save_pretrained(folder / "scheduler")
        if conditional:
            write_tiny_text_model(folder)
            loaded = DDIMInversionCodec(folder, steps=3, prompt="a red cat")
            assert loaded.prompt_embeds.shape == (1, 8, EMBED_DIM)
            built = DDIMInversionCodec(parts, steps=3, prompt_embeds=loaded.prompt_embeds)
            torch.testing.assert_close(loaded.encode(x), built.encode(x))
        else:  # build_codec's default is 50 steps: equal fingerprints (weights, schedule) mean equal latents
            loaded = build_codec("ddim_inversion", str(folder))
            assert isinstance(loaded, DDIMInversionCodec) and len(loaded.timesteps) == 50
            assert loaded.fingerprint() == DDIMInversionCodec(parts, steps=50).fingerprint()


def test_ddim_codec_fails_clearly():
    uncond = DiffusionParts(tiny_vae(), tiny_unet(conditional=False), DDIMScheduler(**SD_SCHEDULE))
    with pytest.raises(ValueError, match="steps must be"):
        DDIMInversionCodec(uncond, steps=0)
    with pytest.raises(ValueError, match="unconditional"):
        DDIMInversionCodec(uncond, guidance_scale=2.0)
    cond = cond_parts()
    with pytest.raises(ValueError, match="needs prompt_embeds"):
        DDIMInversionCodec(cond)
    with pytest.raises(ValueError, match=r"shape \(1, L, 8\), got \(5, 8\)"):
        DDIMInversionCodec(cond, prompt_embeds=torch.zeros(5, 8))
    with pytest.raises(ValueError, match="needs negative_prompt_embeds"):
        DDIMInversionCodec(cond, prompt_embeds=embedding(0), guidance_scale=2.0)
    with pytest.raises(ConfigError, match="path not found: ./no/such/pipeline"):
        build_codec("ddim_inversion", "./no/such/pipeline")
