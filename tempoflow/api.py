"""The Python API: load a trained run (or a saved pipeline) and sample it in three lines.

    import tempoflow
    pipe = tempoflow.load("runs/demo")
    video = pipe("a red circle moves left", seed=0)     # (1, T, 3, H, W) in [0, 1]

``pipe.save(folder)`` writes one self-contained folder (weights, config, the codec's run and the text
model it needs) that ``tempoflow.load`` reads in another process.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from tempoflow.config import ExperimentConfig, SampleConfig
from tempoflow.configio import from_dict, to_dict
from tempoflow.data.video_reader import require_memory
from tempoflow.errors import ConfigError
from tempoflow.methods import Method, Samples
from tempoflow.runs import load_run, rollout_starts, save_pipeline
from tempoflow.train.checkpoint import Checkpoint


class Pipeline:
    """A trained method with its config, ready to sample (``tempoflow.load``).

    Attributes:
        method: the ``Method`` (eval mode, on its device).
        config: the experiment config it was trained with (its ``sample`` section is the default).
        checkpoint: where it was loaded from.
    """

    def __init__(self, method: Method, config: ExperimentConfig, checkpoint: Checkpoint):
        self.method, self.config, self.checkpoint = method, config, checkpoint

    @property
    def fps(self) -> float:
        """Frames per second of the training videos (frame k, 1-based, at k / fps seconds)."""
        return self.checkpoint.fps

    @property
    def device(self) -> torch.device:
        return next(self.method.parameters()).device

    def __repr__(self) -> str:
        return f"Pipeline({self.method.name!r}, task={self.method.task!r}, from={str(self.checkpoint.path)!r})"

    def __call__(self, prompt: str | list[str] | None = None, **settings: object) -> Tensor:
        """Videos ``(B, T, C, H, W)`` on the CPU, ``B = num × len(prompts)`` (prompt-major), in [0, 1]
        (physics fields unclamped). The keyword settings are :meth:`generate`'s."""
        return self.generate(prompt, **settings).video

    @torch.no_grad()
    def generate(
        self,
        prompt: str | list[str] | None = None,
        *,
        num: int = 1,
        seed: int | None = None,
        frames: int | None = None,
        fps: float | None = None,
        duration: float | None = None,
        guidance: float | None = None,
        steps: int | None = None,
        solver: str | None = None,
        initial: Tensor | None = None,
        progress: bool = False,
        view_scale: int = 1,
    ) -> Samples:
        """:class:`~tempoflow.methods.base.Samples` (video on the CPU, NFE, frame times, settings used).

        Args:
            prompt: a caption or a list (text-to-video methods); not used by trajectory methods.
            num: samples per prompt (trajectories for trajectory methods).
            seed: the noise (default the run's ``sample.seed``); the same seed gives the same videos.
            frames: frames per video (a flow with the DiT, trajectory methods); default the training length.
            fps, duration: continuous-time methods (vlfm): frames at ``k / fps`` seconds up to ``duration``
                (defaults: the training rate and length; past it extrapolates).
            guidance, steps, solver: override the run's ``sample`` section (only those the method uses).
            initial: trajectory methods: ``(N, k, C, H, W)`` frames to roll out from (default: the test
                split's first frames, or those a saved pipeline carries, cycled to ``num``).
            progress: a progress bar.
            view_scale: the memory check also counts a copy upscaled this much (what ``tempoflow sample``
                writes).

        Raises:
            ConfigError: a setting the method cannot take (e.g. ``fps`` on a fixed-frame method).
            DataError: an empty caption, or videos too large for memory. SolverError: the solve failed
                or a sample is not finite.
        """
        if not isinstance(num, int) or num < 1:
            raise ConfigError(f"num must be an integer >= 1, got {num!r}")
        if frames is not None and (not isinstance(frames, int) or frames < 1):
            raise ConfigError(f"frames must be an integer >= 1, got {frames!r}")
        method = self.method
        changes = {k: v for k, v in (("guidance", guidance), ("steps", steps), ("solver", solver)) if v is not None}
        ignored = sorted(set(changes) - set(method.sampling_knobs))
        if ignored:
            knobs = ", ".join(method.sampling_knobs) or "none"
            raise ConfigError(f"method '{method.name}' does not use {', '.join(ignored)} when sampling "
                              f"(its sampling settings: {knobs}; the rest are in its own config section)")
        options = from_dict(SampleConfig, {**to_dict(self.config.sample), **changes}, prefix="sample")
        generator = torch.Generator(device=self.device).manual_seed(options.seed if seed is None else seed)
        if method.task == "reconstruction":
            raise ConfigError(f"method '{method.name}' reconstructs videos (method.reconstruct), it does not sample")
        if method.task == "trajectory":
            if prompt is not None or fps is not None or duration is not None:
                raise ConfigError(f"method '{method.name}' rolls out trajectories: it takes num and frames, "
                                  "not a prompt, fps or duration")
            self._require_memory(num, frames, view_scale)
            starts = rollout_starts(self.config, self.checkpoint, num) if initial is None else initial
            if frames is not None and frames <= starts.shape[1]:
                raise ConfigError(f"frames must exceed the {starts.shape[1]} given frames a roll-out starts "
                                  f"from (frames counts them), got {frames}")
            return self._on_cpu(method.sample(starts, generator=generator, options=options, num_frames=frames,
                                              progress=progress))
        prompts = [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else None
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise ConfigError(f"method '{method.name}' needs a prompt (a caption or a list of captions), got {prompt!r}")
        captions = [p for p in prompts for _ in range(num)]
        if fps is not None or duration is not None:
            if not method.continuous_time:
                raise ConfigError(f"fps/duration need a continuous-time method (vlfm), not '{method.name}'")
            fps = self.fps if fps is None else float(fps)
            duration = method.num_frames / method.fps if duration is None else float(duration)
            if not (math.isfinite(fps) and fps > 0 and math.isfinite(duration) and duration > 0):
                raise ConfigError(f"fps and duration must be finite and > 0, got {fps:g} and {duration:g}")
            count = round(duration * fps)
            if count < 1:
                raise ConfigError(f"fps {fps:g} over duration {duration:g} s gives no frame (frame k is at k / fps "
                                  "seconds): raise fps or duration")
            self._require_memory(len(captions), count, view_scale)
            times = torch.arange(1, count + 1, dtype=torch.float64) / fps
            out = method.sample(captions, generator=generator, options=options, times=times.float(), progress=progress)
        elif frames is not None:
            if method.continuous_time:
                raise ConfigError("a continuous-time method (vlfm) takes fps and duration, not frames")
            self._require_memory(len(captions), frames, view_scale)
            out = method.sample(captions, generator=generator, options=options, num_frames=frames, progress=progress)
        else:
            self._require_memory(len(captions), None, view_scale)
            out = method.sample(captions, generator=generator, options=options, progress=progress)
        return self._on_cpu(out)

    @staticmethod
    def _on_cpu(out: Samples) -> Samples:
        out.video = out.video.float().cpu()
        return out

    def _require_memory(self, num: int, frames: int | None, view_scale: int) -> None:
        """Refuse, before sampling, videos whose float frames (with the latents, and a copy upscaled
        ``view_scale`` times) cannot fit in host memory."""
        T, C, H, W = self.checkpoint.meta["video_shape"]
        frames = frames or T
        require_memory(num * frames * C * H * W * 4 * (1 + view_scale * view_scale),
                       f"{num} samples of {frames} frames at {H}x{W}" + (f" (x{view_scale} for viewing)"
                                                                          if view_scale > 1 else ""),
                       "fewer samples, frames, a shorter duration, a lower fps or scale")

    def save(self, folder: str | Path) -> Path:
        """Write this pipeline as one self-contained folder (``tempoflow.runs.save_pipeline``).

        Raises:
            ConfigError: ``folder`` exists and is not empty.
        """
        return save_pipeline(self.method, self.config, self.checkpoint, folder)


def load(path: str | Path, device: str = "auto", weights: str = "ema", **sample: object) -> Pipeline:
    """A trained run, checkpoint or saved pipeline, ready to sample (eval mode).

    Args:
        path: a run folder (its latest checkpoint), a checkpoint folder or a folder ``Pipeline.save`` wrote.
        device: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N".
        weights: "ema" (the EMA weights, ``ema.safetensors``) or "raw" (the trained ones,
            ``model.safetensors``); a saved pipeline holds the one it was loaded with.
        sample: defaults for sampling, as the ``sample`` section's keys (``guidance=3``, ``steps=32``...).

    Raises:
        CheckpointError: nothing loadable there, a damaged or missing file (named; no EMA weights: pass
            ``weights="raw"``), or a saved pipeline holding the other weights. ConfigError: a bad setting.
    """
    method, cfg, ckpt = load_run(path, device=device, weights=weights,
                                 overrides={"sample": sample} if sample else None)
    return Pipeline(method, cfg, ckpt)
