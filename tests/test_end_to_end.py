"""Tiny end-to-end runs of the whole tool: train -> sample -> eval -> demo, through the CLI."""

from __future__ import annotations

import json

from tempoflow.cli import main
from tempoflow.data.video_reader import read_video

from .conftest import TINY


def test_train_sample_eval_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "demo", *TINY, f"out_dir={run}"]) == 0
    assert (run / "checkpoints" / "latest").is_file() and (run / "log.jsonl").is_file()
    assert (run / "config.yaml").is_file() and (run / "tb").is_dir()

    out = tmp_path / "s.mp4"
    assert main(["sample", str(run), "--prompt", "a red circle moves left", "--prompt", "a blue square moves up",
                 "--num", "2", "--out", str(out), "--scale", "2", "sample.steps=2", "--device", "cpu"]) == 0
    clip = read_video(out)
    # 2 prompts (rows) x 2 samples (columns) of 16x16 with a 1-pixel gutter, upscaled x2
    assert clip.frames.shape == (4, 3, 2 * 2 * 18, 2 * 2 * 18)

    # the demo's UNet is built for the training length: another --frames is one line, exit 2
    assert main(["sample", str(run), "--prompt", "a red circle moves left", "--frames", "8", "--out",
                 str(tmp_path / "f.mp4"), "--device", "cpu"]) == 2
    assert "built for 4 frames" in capsys.readouterr().err

    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", "sample.num_per_prompt=2",
                 "eval.num_prompts=4"]) == 0
    record = json.loads((ev / "metrics.json").read_text())
    m = record["metrics"]
    assert set(m) >= {"train", "heldout", "nfe", "frames_per_second"}
    assert 0.0 <= m["train"]["caption_accuracy"] <= 1.0 and m["nfe"] == 2 * 2  # heun x 2 steps, guided
    assert m["train"]["samples"] == 4
    assert record["checkpoint_sha256"] and record["hardware"] and record["config"]["method"] == "flow"
    assert {"nearest_bucket_ssim", "fd_thumb", "kd_thumb"} <= set(m["train"])
    curve = record["psnr_vs_time"]["train"]  # (seconds, dB) per frame: frame k at k / fps
    assert [t for t, _ in curve] == [k / 8.0 for k in range(1, 5)]
    html = (ev / "report.html").read_text()
    assert "data:image/gif;base64," in html and "Training loss" in html and "PSNR vs time" in html
    assert read_video(ev / "samples.mp4").frames.shape[0] == 4


def test_dit_flow_samples_other_lengths_with_frames(tmp_path):
    run = tmp_path / "dit"
    assert main(["train", "demo", *TINY, "flow.backbone=dit", "train.steps=2", f"out_dir={run}"]) == 0
    out = tmp_path / "long.mp4"
    assert main(["sample", str(run), "--prompt", "a red circle moves left", "--frames", "8", "--out", str(out),
                 "--scale", "1", "sample.steps=2", "--device", "cpu"]) == 0
    assert read_video(out).frames.shape[0] == 8
    assert main(["sample", str(run), "--prompt", "a red circle moves left", "--frames", "3", "--out", str(out),
                 "--device", "cpu"]) == 2  # 3 frames do not tile into patches of 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"tempoflow: error: checkpoint not found: {tmp_path / 'missing'}"]
    assert main(["train", "demo", *TINY, f"out_dir={tmp_path}/x", "model.dim=30",
                 "model.heads=4"]) == 2  # 30 channels do not split into 4 heads
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.dim (30) must be divisible by model.heads (4)" in err[0]


def test_demo_runs_end_to_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the packaged demo config, from a directory without configs
    assert main(["demo", *TINY, f"out_dir={tmp_path / 'demo'}"]) == 0
    printed = capsys.readouterr().out
    for name in ("samples.mp4", "metrics.json", "report.html"):
        assert (tmp_path / "demo" / "eval" / name).is_file()
        assert name in printed
    assert (tmp_path / "demo" / "eval" / "samples.gif").is_file()


def test_eval_compares_several_checkpoints(tmp_path, capsys):
    runs = []
    for i, steps in enumerate((2, 4)):
        run = tmp_path / f"run{i}"
        assert main(["train", "demo", *TINY, f"out_dir={run}", f"train.steps={steps}"]) == 0
        runs.append(str(run))
    out = tmp_path / "cmp"
    assert main(["eval", runs[0], "--out", str(out), runs[1], "--config", "eval_flow",
                 "sample.steps=1", "eval.num_prompts=2", "sample.num_per_prompt=1", "--device", "cpu"]) == 0
    table = json.loads((out / "comparison.json").read_text())
    assert [r["step"] for r in table] == [2, 4]
    # the eval config (heun, guidance 2) and the command-line overrides (1 step) reached both runs
    assert all(r["nfe"] == 2 and r["guidance"] == 2.0 for r in table)
    html = (out / "report.html").read_text()
    assert html.count("<tr>") == 3 and "0_run0" in html and "1_run1" in html
    assert html.count("data:image/gif;base64,") == 2 * 2  # 2 prompts x 2 runs


def test_eval_computes_fvd_with_i3d_weights_given_by_path(tmp_path):
    """FVD/KVD run end to end from a local I3D file (random weights here: the number is not
    meaningful, the path through preprocessing, features and the Fréchet formula is)."""
    import torch
    from safetensors.torch import save_file

    from tempoflow.nets.i3d import InceptionI3d

    weights = tmp_path / "i3d.safetensors"
    save_file({k: v.contiguous() for k, v in InceptionI3d().state_dict().items()}, str(weights))
    run = tmp_path / "run"
    long = [*TINY, f"out_dir={run}", "data.shapes.num_frames=16", "data.shapes.fps=16"]
    assert main(["train", "demo", *long, "train.steps=2"]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", f"eval.i3d_path={weights}",
                 "sample.num_per_prompt=2", "sample.steps=1", "eval.num_prompts=4"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    assert isinstance(m["train"]["fvd"], float) and m["train"]["fvd"] >= 0 and "kvd" in m["train"]
    torch.testing.assert_close(torch.tensor(m["train"]["fvd"]).isfinite(), torch.tensor(True))
    # without weights, the metrics say why there is no FVD instead of leaving it out silently
    assert main(["eval", str(run), "--out", str(tmp_path / "e2"), "--device", "cpu", "sample.steps=1"]) == 0
    m2 = json.loads((tmp_path / "e2" / "metrics.json").read_text())["metrics"]
    assert m2["train"]["fvd"].startswith("n/a: no I3D weights")


def test_eval_with_free_text_prompts(tmp_path):
    """Prompts outside the shapes grammar still sample and report; the oracle says n/a instead of failing."""
    run = tmp_path / "run"
    assert main(["train", "demo", *TINY, f"out_dir={run}"]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu",
                 "eval.prompts=[a dog runs on the beach, a red circle moves left]"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    assert m["custom"]["caption_accuracy"].startswith("n/a") and m["custom"]["samples"] == 2


def test_eval_computes_bucket_lpips_with_weights_given_by_path(tmp_path):
    """B-LPIPS runs end to end from local AlexNet + linear-layer files (random weights here)."""
    import torch

    from tempoflow.metrics.lpips import LPIPS

    sd = LPIPS().state_dict()
    backbone, lin = tmp_path / "alexnet.pth", tmp_path / "alex_lin.pth"
    torch.save({k: v for k, v in sd.items() if k.startswith("features.")}, backbone)
    torch.save({k: v.abs() for k, v in sd.items() if k.startswith("lin")}, lin)
    run = tmp_path / "run"
    assert main(["train", "demo", *TINY, f"out_dir={run}", "data.shapes.resolution=32"]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", f"eval.lpips_backbone={backbone}",
                 f"eval.lpips_lin={lin}", "sample.steps=1"]) == 0
    m = json.loads((ev / "metrics.json").read_text())["metrics"]
    assert isinstance(m["train"]["nearest_bucket_lpips"], float) and m["train"]["nearest_bucket_lpips"] >= 0
    # 16-pixel frames are too small for AlexNet: the reason is reported, not a traceback
    small = tmp_path / "small"
    assert main(["train", "demo", *TINY, f"out_dir={small}"]) == 0
    assert main(["eval", str(small), "--out", str(tmp_path / "e2"), "--device", "cpu", "sample.steps=1",
                 f"eval.lpips_backbone={backbone}", f"eval.lpips_lin={lin}"]) == 0
    m2 = json.loads((tmp_path / "e2" / "metrics.json").read_text())["metrics"]
    assert "at least 31 pixels" in m2["train"]["nearest_bucket_lpips"]


def test_data_render_writes_videos_and_an_open_sora_manifest(tmp_path):
    import csv

    from tempoflow.data.video_reader import read_video

    out = tmp_path / "data"
    assert main(["data", "render", "demo", *TINY, "--out", str(out), "--splits", "test"]) == 0
    rows = list(csv.DictReader((out / "manifest.csv").read_text().splitlines()))
    assert rows and set(rows[0]) >= {"path", "text", "num_frames", "fps", "height", "width"}
    video = read_video(out / rows[0]["path"]).frames
    assert video.shape == (int(rows[0]["num_frames"]), 3, int(rows[0]["height"]), int(rows[0]["width"]))
    assert (out / "preview_test.png").is_file()
