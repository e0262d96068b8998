"""VLFM (DESIGN §4): the sampler against the path's closed form, dense output, and end to end."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.errors import ConfigError
from tempoflow.flows.legendre import legs_projection
from tempoflow.flows.video_path import trajectory
from tempoflow.methods.base import SamplingOptions
from tempoflow.runs import build_method

from .conftest import TINY

VLFM = ["method=vlfm", "vlfm.order=3", "vlfm.steps_per_frame=4", "sample.guidance=1.0"]


class OracleNet(nn.Module):
    """Stands in for F_θ with the exact answer for ONE known video with coefficients H ``(1, d, s)``."""

    def __init__(self, method, H: torch.Tensor):
        super().__init__()
        self.method, self.H = method, H
        self.anchor = nn.Parameter(torch.zeros(()))  # so next(parameters()) works

    def forward(self, x, t, drop=None, **cond):
        m, T, N = self.method, self.method.duration, self.method.num_frames
        B, shape = x.shape[0], x.shape[2:]
        t = t.expand(B) if t.ndim == 0 else t
        H = self.H.expand(B, -1, -1)
        if m.cfg.prediction == "data":
            mean, change = trajectory(H, t[:, None], T, m.path.hold_until(T, N))
            mean, change = mean[:, 0].view(B, *shape), change[:, 0].view(B, *shape) / m.fps
            return torch.cat([mean, change], 1)[:, None]
        # velocity: the conditional field that carries ψ_0 = z along σ_t z + μ_t (Theorem 3.1)
        psi = x.flatten(1)
        mu = m.path.mean(H, t[:, None], T, N)[:, 0]
        d_mu = m.path.d_mean(H, t[:, None], T, N)[:, 0]
        ratio = (m.path.d_sigma(t, T, N) / m.path.sigma(t, T, N))[:, None]
        return (ratio * (psi - mu) + d_mu).view(B, 1, *shape)


def _method_with_oracle(prediction: str, schedule: str, degree: int, extra: list[str] = ()):
    cfg = load_config(None, [*TINY, *VLFM, f"vlfm.prediction={prediction}", f"vlfm.schedule={schedule}", *extra])
    method = build_method(cfg)
    d = int(torch.tensor(method.latent_shape).prod())
    t = method.frame_times.double()
    coeffs = torch.randn(degree + 1, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    frames = sum(c * (t[:, None] / method.duration) ** k for k, c in enumerate(coeffs))  # (N, d) polynomial
    H = legs_projection(frames[None].float(), method.cfg.order, "lstsq")  # (1, d, s)
    method.net = OracleNet(method, H)
    return method, H


@pytest.mark.parametrize("rising_noise", ["fresh", "ode"])
def test_data_prediction_sampler_steps_the_path_exactly(rising_noise):
    """Reference: the closed-form mean μ̄(t) of the path. With an exact network and a trajectory linear
    in t, the exact step ψ_{t+h} = σ_{t+h} ẑ + μ_{t+h} is exact, so frames read at ANY times equal μ̄."""
    method, H = _method_with_oracle("data", "renoise", degree=1, extra=[f"vlfm.rising_noise={rising_noise}"])
    times = torch.tensor([0.05, 0.25, 0.3, 0.61, 1.0, 1.7])  # between frames and past T = 1 s
    out = method.sample(["x"], generator=torch.Generator().manual_seed(1), times=times)
    hold = method.path.hold_until(method.duration, method.num_frames)  # μ̄ held before the first frame
    truth = trajectory(H, times, method.duration, hold)[0]  # (1, M, d)
    assert torch.allclose(out.latents.flatten(2), truth, atol=1e-4)


class NoisyRecorder(nn.Module):
    """Wraps an oracle: adds an independent error of std ``err`` to its μ̄ each call and records the
    state ``(t, ψ_t)`` it is called with."""

    def __init__(self, oracle: nn.Module, channels: int, err: float):
        super().__init__()
        self.oracle, self.C, self.err, self.seen = oracle, channels, err, []
        self.gen = torch.Generator().manual_seed(3)

    def forward(self, x, t, drop=None, **cond):
        self.seen.append((float(t.flatten()[0]), x.clone()))
        out = self.oracle(x, t, drop=drop, **cond)
        noise = self.err * torch.randn(out[:, :, : self.C].shape, generator=self.gen)
        return torch.cat([out[:, :, : self.C] + noise, out[:, :, self.C :]], 2)


@pytest.mark.parametrize("rising_noise", ["fresh", "ode"])
def test_rising_noise_keeps_states_on_the_path(rising_noise):
    """Reference: the path's marginal ψ_t = σ_t z + μ_t, z ~ N(0, I) (closed form). With a network whose
    μ̄ is off by a small random error (std 0.05, fresh each call), the ancestral step ("fresh") keeps
    (ψ_t − μ_t)/σ_t at unit scale at every step; the deterministic step ("ode") multiplies the error
    made next to a frame (σ ≈ σ_min) by σ_{t+h}/σ_t and leaves the path: the reason "fresh" is default.
    Measured between frames (σ_t > 0.2)."""
    method, H = _method_with_oracle("data", "renoise", degree=1, extra=[f"vlfm.rising_noise={rising_noise}"])
    method.net = rec = NoisyRecorder(method.net, method.latent_shape[0], err=0.05)
    method.sample(["x"] * 64, generator=torch.Generator().manual_seed(4))
    T, N = method.duration, method.num_frames
    scale = []
    for t, x in rec.seen[1:]:
        tt = torch.tensor([t])
        sigma = float(method.path.sigma(tt, T, N))
        if sigma > 0.2:  # between frames; next to one the network's own error (0.05) dominates σ_t
            mu = method.path.mean(H, tt, T, N)[0, 0]  # (d,)
            scale.append(float(((x.flatten(1) - mu) / sigma).std()))
    if rising_noise == "fresh":
        assert len(scale) >= 6 and max(scale) < 1.3 and min(scale) > 0.8, str([round(x, 2) for x in scale])
    else:
        assert max(scale) > 2.0


@pytest.mark.parametrize("schedule", ["renoise", "decay"])
def test_velocity_sampler_follows_the_conditional_path(schedule):
    """Reference: ψ_t = σ_t z + μ_t in closed form (VideoLatentPath). Integrating the exact conditional
    velocity from ψ_0 = z with RK4 must land on it at the frame times."""
    method, H = _method_with_oracle("velocity", schedule, degree=2)
    z = torch.randn((1, 1, *method.latent_shape), generator=torch.Generator().manual_seed(2))
    out = method.sample(["x"], generator=torch.Generator().manual_seed(2), steps_per_frame=64, options=SamplingOptions(solver="rk4"))
    t = method.frame_times
    d = H.shape[1]
    expected = method.path.sigma(t, method.duration, method.num_frames)[:, None] * z.view(1, d) + \
        method.path.mean(H, t, method.duration, method.num_frames)[0]
    assert torch.allclose(out.latents.flatten(2)[0], expected, atol=2e-3)


def test_one_solve_serves_any_frame_rate():
    """Dense output: 48 fps costs the same network calls as the training frame rate (Euler)."""
    cfg = load_config(None, [*TINY, *VLFM])
    method = build_method(cfg)
    gen = torch.Generator().manual_seed(0)
    slow = method.sample(["a red circle moves left"], generator=gen, options=SamplingOptions(solver="euler"))
    fast = method.sample(["a red circle moves left"], generator=gen,
                         times=torch.arange(1, 25) / 48.0, options=SamplingOptions(solver="euler"))  # the same 0.5 s at 48 fps
    assert fast.video.shape[1] == 24 and slow.video.shape[1] == method.num_frames
    # the training frames end at T = N / fps; the same span at 48 fps needs no extra step
    assert fast.nfe == slow.nfe == method.num_frames * cfg.vlfm.steps_per_frame


def test_bad_times_and_orders_are_refused():
    method = build_method(load_config(None, [*TINY, *VLFM]))
    with pytest.raises(ValueError, match="increasing"):
        method.sample(["x"], times=[0.5, 0.25])
    with pytest.raises(ValueError, match="> 0"):
        method.sample(["x"], times=[0.0, 0.5])
    with pytest.raises(ConfigError, match="vlfm.order=9"):
        build_method(load_config(None, [*TINY, *VLFM, "vlfm.order=9"]))
    with pytest.raises(ConfigError, match="vlfm.prediction"):
        load_config(None, [*TINY, *VLFM, "vlfm.prediction=noise"])


UNET = ["vlfm.backbone=unet", "vlfm.unet.base_width=8", "vlfm.unet.groups=4", "vlfm.unet.cond_dim=16"]


@pytest.mark.parametrize("variant", [["vlfm.prediction=data"], ["vlfm.objective=direct"], ["vlfm.projection=legs"],
                                     ["vlfm.prediction=data", *UNET], UNET])
def test_variants_train_and_sample(variant):
    cfg = load_config(None, [*TINY, *VLFM, *variant])
    method = build_method(cfg)
    video = torch.rand(2, 4, 3, 16, 16)
    loss = method.loss({"video": video, "caption": ["a red circle moves left"] * 2}, torch.Generator().manual_seed(0))
    loss["loss"].backward()
    assert torch.isfinite(loss["loss"])
    out = method.sample(["a red circle moves left"], times=[0.1, 0.7, 1.3])
    assert out.video.shape == (1, 3, 3, 16, 16) and out.times.tolist() == pytest.approx([0.1, 0.7, 1.3])


def test_vlfm_end_to_end_through_the_cli(tmp_path):
    run = tmp_path / "vlfm"
    assert main(["train", "shapes_vlfm", *TINY, *VLFM, "vlfm.prediction=data", f"out_dir={run}"]) == 0
    video = tmp_path / "s.mp4"
    assert main(["sample", str(run), "--prompt", "a red circle moves left", "--fps", "24", "--duration", "2",
                 "--out", str(video), "--device", "cpu"]) == 0
    from tempoflow.data.video_reader import read_video

    clip = read_video(video)
    assert clip.frames.shape[0] == 48 and clip.fps == 24
    for flag, value in (("--fps", "nan"), ("--fps", "inf"), ("--fps", "0"), ("--duration", "0"), ("--duration", "-1"),
                        ("--fps", "1e-9"), ("--scale", "0")):  # 1e-9: no frame inside the duration
        assert main(["sample", str(run), "--prompt", "a red circle", flag, value, "--device", "cpu",
                     "--out", str(tmp_path / "bad.mp4")]) == 2, (flag, value)  # one line, no traceback
    assert main(["sample", str(run), "--prompt", "a red circle", "--duration", "1e9", "--device", "cpu",
                 "--out", str(tmp_path / "huge.mp4")]) == 2  # refused before allocating
    ev = tmp_path / "ev"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", "--config", "eval_vlfm",
                 "eval.time_rate=2", "eval.time_extent=2", "eval.num_prompts=2", "sample.num_per_prompt=1"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    for key in ("time_psnr_train_frames_db", "time_psnr_between_frames_db", "time_psnr_extrapolated_db",
                "time_baseline_hold_last_psnr_extrapolated_db"):
        assert key in m["train"]
    assert m["time_grid_fps"] == 16 and "PSNR at any time" in (ev / "report.html").read_text()


class ZeroNet(nn.Module):
    """F_θ ≡ 0: the data-prediction loss is then the mean square of each target half."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, drop=None, **cond):
        C = x.shape[2]
        return torch.zeros(x.shape[0], 1, 2 * C, *x.shape[3:]) + 0 * self.anchor


@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_change_weight_scales_the_change_half_of_the_data_loss(weight):
    # Reference: frames linear in time, u(t) = a + b t, are reproduced exactly by lstsq (degree 1 < s),
    # so with F ≡ 0 the change half is mean((b / fps)²) whatever t, and the mean half is > 0.
    cfg = load_config(None, [*TINY, *VLFM, "vlfm.prediction=data", f"vlfm.change_weight={weight}",
                             "vlfm.hold_first_frame=false"])
    method = build_method(cfg)
    method.net = ZeroNet()
    N = method.num_frames
    a = torch.rand(1, 1, 3, 16, 16) * 0.5
    b = torch.rand(1, 1, 3, 16, 16) * 0.4  # per second
    video = a + b * method.frame_times.view(1, N, 1, 1, 1)  # (1, N, 3, 16, 16) in [0, 1]
    terms = method.loss({"video": video, "caption": ["a red circle moves left"]}, torch.Generator().manual_seed(0))
    latents = method.codec.encode(video)  # (1, N, *latent): affine in the frames, so still linear in t
    change = (latents[:, 1] - latents[:, 0])  # one frame's change = b_latent / fps
    assert float(terms["change_error"]) == pytest.approx(float(change.square().mean()), rel=1e-4)
    assert float(terms["mean_error"]) > 0
    want = (terms["mean_error"] + weight * terms["change_error"]) / 2
    assert float(terms["loss"].detach()) == pytest.approx(float(want), rel=1e-6)
