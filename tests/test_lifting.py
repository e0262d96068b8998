"""Stochastic Lifting and its ARDM baseline (seed 001; DESIGN §5): fixed labels, training pairs, one call
per frame, the CFM target, physics data wiring, and tiny train -> eval -> sample runs through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.data import load_dataset, physics_initial_state, video_shape
from tempoflow.data.physics import simulate
from tempoflow.data.video_reader import read_video
from tempoflow.errors import ConfigError
from tempoflow.methods.lifting import pair_labels
from tempoflow.methods.rollout import Step, pad_window, rollout, training_pairs
from tempoflow.runs import build_method, initial_frames, train

# Tiny physics runs: 12 trajectories (9 train, 3 test) of 8x8 with 6 stored times + the initial state.
TINY_PHYSICS = [
    "text.encoder=hashing",
    "text.dim=8",
    "data.physics.n_trajectories=12",
    "data.physics.size=8",
    "data.physics.n_times=6",
    "lifting.window=2",
    "lifting.label_dim=4",
    "lifting.pairs_per_video=2",
    "lifting.eval_trajectories=4",
    "lifting.unet.base_width=8",
    "lifting.unet.channel_mults=[1, 2]",
    "lifting.unet.blocks_per_level=1",
    "lifting.unet.groups=4",
    "lifting.unet.cond_dim=16",
    "lifting.unet.time_freq_dim=16",
    "ardm.steps=2",
    "train.batch_size=4",
    "train.steps=4",
    "train.warmup_steps=1",
    "train.log_every=2",
    "train.checkpoint_every=2",
    "device=cpu",
]


@pytest.fixture
def physics_cfg(tmp_path):
    """A tiny lifting/ardm experiment on a physics kind, data cached in the test's folder."""

    def make(*overrides: str, kind: str = "sde", method: str = "lifting"):
        return load_config(
            None,
            [
                *TINY_PHYSICS,
                f"method={method}",
                f"data.name={kind}",
                f"data.physics.cache_dir={tmp_path / 'cache'}",
                f"out_dir={tmp_path / 'run'}",
                *overrides,
            ],
        )

    return make


def randomise(module: torch.nn.Module, seed: int = 0) -> None:
    """Non-zero weights everywhere (the UNet starts with zero output and zero FiLM, label-blind)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))


def count_calls(net: torch.nn.Module) -> list[int]:
    """A counter of the network's forward calls."""
    calls = [0]
    net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


# ---------------------------------------------------------------------------------------------- labels


def test_pair_labels_are_a_pure_function_of_the_pair():
    """The label of pair (i, j) is the same in every call, batch order and batch company; pairs differ."""
    index, frame = torch.tensor([3, 5, 3, 7]), torch.tensor([1, 2, 4, 2])
    first = pair_labels(11, index, frame, 8)
    again = pair_labels(11, index.flip(0), frame.flip(0), 8).flip(0)  # other order
    alone = pair_labels(11, index[2:3], frame[2:3], 8)  # other company
    assert torch.equal(first, again) and torch.equal(first[2:3], alone)
    assert first.shape == (4, 8) and first.dtype == torch.float32
    # All distinct: different trajectory, different frame, different seed.
    assert torch.cdist(first, first).add(torch.eye(4)).min() > 1e-3
    assert not torch.allclose(pair_labels(12, index, frame, 8), first)


def test_pair_labels_are_standard_normal():
    """Reference: scipy's N(0, 1) CDF (Kolmogorov–Smirnov), and independence by sample correlations."""
    n, d = 4000, 16
    index = torch.arange(n) // 40
    frame = torch.arange(n) % 40
    xi = pair_labels(0, index, frame, d).double()
    values = xi.flatten().numpy()
    assert stats.kstest(values, "norm").pvalue > 1e-3
    assert abs(values.mean()) < 4 / math.sqrt(values.size)
    assert abs(values.var() - 1) < 4 * math.sqrt(2 / values.size)
    corr = np.corrcoef(xi.T.numpy())  # components of one label
    assert np.abs(corr - np.eye(d)).max() < 4 / math.sqrt(n)
    neighbours = np.corrcoef(xi[:-1].flatten().numpy(), xi[1:].flatten().numpy())[0, 1]  # consecutive pairs
    assert abs(neighbours) < 4 / math.sqrt(values.size)


def test_labels_seen_by_the_network_are_fixed_per_pair(physics_cfg):
    """Across loss calls with different generator states and batches, every pair (i, j) reaches the UNet
    with one label; a freshly built method (as after a resume) gives the same labels."""
    seen: dict[tuple[int, int], torch.Tensor] = {}
    videos = load_dataset(physics_cfg().data, "train").videos

    def record(method, gen_seed: int, rows: list[int]) -> None:
        captured = {}
        hook = method.net.register_forward_hook(
            lambda m, args, kwargs, out: captured.update(kwargs), with_kwargs=True
        )
        gen = torch.Generator().manual_seed(gen_seed)
        index = torch.tensor(rows)
        pairs = training_pairs(
            videos[index], index, method.window, 2, torch.Generator().manual_seed(gen_seed)
        )
        method.loss({"video": videos[index], "index": index}, gen)
        hook.remove()
        for i, j, label in zip(pairs.index.tolist(), pairs.frame.tolist(), captured["label"]):
            if (i, j) in seen:
                assert torch.equal(seen[(i, j)], label), (i, j)
            seen[(i, j)] = label

    for step, rows in enumerate([[0, 1, 2, 3], [3, 2, 1, 0], [0, 0, 5, 2], [1, 3, 3, 3]] * 3):
        record(build_method(physics_cfg()), step % 4, rows)
    labels = torch.stack(list(seen.values()))
    assert len(seen) > 8 and torch.cdist(labels, labels).add(torch.eye(len(seen))).min() > 1e-3


def test_lifting_resume_is_exact(physics_cfg, tmp_path):
    """4 steps straight == 2 steps + resume + 2 steps (weights bit-identical): nothing about the labels or
    pairs lives outside the checkpointed generators."""
    a = train(physics_cfg(f"out_dir={tmp_path / 'a'}"))
    train(physics_cfg(f"out_dir={tmp_path / 'b'}"), until=2)
    b = train(physics_cfg(f"out_dir={tmp_path / 'b'}"), resume=True)
    wa, wb = (
        load_file(str(a.checkpoint / "model.safetensors")),
        load_file(str(b.checkpoint / "model.safetensors")),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    fresh = build_method(physics_cfg()).state_dict()
    assert any(not torch.equal(fresh[k], wa[k]) for k in wa)


# ------------------------------------------------------------------------------------ pairs and roll-out


def test_training_pairs_match_a_loop():
    """Reference: windows cut out frame by frame, frames before 0 repeating frame 0."""
    videos = torch.randn(3, 5, 2, 4, 4)
    index = torch.tensor([7, 8, 9])
    pairs = training_pairs(videos, index, window=3, per_video=4, generator=torch.Generator().manual_seed(0))
    assert pairs.window.shape == (12, 6, 4, 4) and pairs.target.shape == (12, 2, 4, 4)
    assert pairs.frame.min() >= 1 and pairs.frame.max() <= 4
    for n in range(12):
        b, j = n // 4, int(pairs.frame[n])
        expected = torch.cat([videos[b, max(j - 3 + q, 0)] for q in range(3)])  # (3·C, H, W), oldest first
        assert torch.equal(pairs.window[n], expected)
        assert torch.equal(pairs.target[n], videos[b, j]) and torch.equal(pairs.previous[n], videos[b, j - 1])
        assert int(pairs.index[n]) == int(index[b])


def test_rollout_calls_once_per_frame_and_keeps_given_frames():
    """A counting next-frame map: one call per generated frame, batched over all samples."""
    calls = []

    def next_frame(window, generator):  # the mean of the window's frames plus one
        calls.append(window.shape[0])
        return Step(window.view(window.shape[0], 3, 2, 4, 4).mean(1) + 1, 1)

    initial = torch.rand(2, 1, 2, 4, 4)
    out = rollout(next_frame, initial, window=3, steps=5, n_samples=3)
    assert out.frames.shape == (6, 6, 2, 4, 4) and out.nfe == 5 and calls == [6] * 5
    assert torch.equal(out.frames[:3, 0], initial[0].expand(3, -1, -1, -1))  # sample-major per condition
    # First step sees the initial frame three times (padding): the mean is that frame.
    assert torch.allclose(out.frames[:, 1], out.frames[:, 0] + 1)
    assert torch.equal(pad_window(initial, 3)[:, 0], initial[:, 0])
    with pytest.raises(ValueError, match="initial_frames"):
        rollout(next_frame, initial[:, 0], window=3, steps=1)


@pytest.mark.parametrize("method", ["lifting", "ardm"])
def test_network_calls_per_frame_and_shapes(physics_cfg, method):
    """lifting: exactly 1 UNet call per frame; ardm with Euler: s calls, with Heun: 2 s."""
    cfg = physics_cfg(method=method)
    m = build_method(cfg)
    calls = count_calls(m.net)
    T, C, H, W = video_shape(cfg.data)
    frames = m.rollout(
        torch.rand(2, 1, C, H, W), steps=5, n_samples=3, generator=torch.Generator().manual_seed(0)
    )
    per_frame = 1 if method == "lifting" else 2  # ardm.steps=2, euler
    assert frames.shape == (6, 6, C, H, W) and calls[0] == 5 * per_frame
    out = m.sample(initial_frames(cfg, 3), generator=torch.Generator().manual_seed(0))
    assert out.video.shape == (3, T, C, H, W) and out.nfe == (T - 1) * per_frame
    assert out.times.tolist() == pytest.approx([k * 2.0 / 6 for k in range(T)])  # sde t_end = 2 s, 6 times
    if method == "ardm":
        calls[0] = 0
        out = m.sample(
            initial_frames(cfg, 2), generator=torch.Generator().manual_seed(0), solver_steps=3, solver="heun"
        )
        assert calls[0] == out.nfe == (T - 1) * 2 * 3


def test_different_labels_give_different_samples(physics_cfg):
    m = build_method(physics_cfg())
    randomise(m.net)
    window = torch.rand(4, m.window, 8, 8).expand(4, -1, -1, -1)  # four identical windows
    frame = m.next_frame(window, torch.Generator().manual_seed(0)).frame
    assert (frame[0] - frame[1]).abs().max() > 1e-3  # same window, fresh labels: different frames
    again = m.next_frame(window, torch.Generator().manual_seed(0)).frame
    assert torch.equal(frame, again)  # same generator seed: the same labels and frames


def test_lifting_losses_match_their_formulas(physics_cfg):
    """Reference: eq. 6 (mean squared error) and BCE written out in numpy."""
    cfg = physics_cfg()
    m = build_method(cfg)
    randomise(m.net)
    videos = load_dataset(cfg.data, "train").videos[:3]
    batch = {"video": videos, "index": torch.arange(3)}
    pairs = training_pairs(videos, batch["index"], m.window, 2, torch.Generator().manual_seed(4))
    out = m.net(pairs.window, label=pair_labels(0, pairs.index, pairs.frame, 4)).detach().double().numpy()
    y = pairs.target.double().numpy()
    l2 = m.loss(batch, torch.Generator().manual_seed(4))["loss"].item()
    assert l2 == pytest.approx(((out - y) ** 2).mean(), rel=1e-5)
    m.loss_kind = "bce"
    p = 1 / (1 + np.exp(-out))
    bce = m.loss(batch, torch.Generator().manual_seed(4))["loss"].item()
    assert bce == pytest.approx(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(), rel=1e-5)


def test_pushforward_feeds_the_networks_own_prediction_of_the_last_window_frame(physics_cfg):
    """Reference: a loop over pairs. With lifting.pushforward=1 every pair with j >= 2 sees, as the last
    frame of its window, F_θ of the window before it with that frame's own fixed label; j = 1 keeps x_0;
    the earlier window frames and the target stay the data's. With 0 the pairs are untouched."""
    cfg = physics_cfg("lifting.pushforward=1.0", "lifting.window=2")
    m = build_method(cfg)
    randomise(m.net)
    videos = load_dataset(cfg.data, "train").videos[:3]
    index = torch.tensor([4, 5, 6])
    pairs = training_pairs(videos, index, m.window, 4, torch.Generator().manual_seed(2))
    pushed = m.pushforward(videos, pairs, torch.Generator().manual_seed(3))
    C = m.channels
    assert (pairs.frame >= 2).any() and (pairs.frame == 1).any()  # both kinds drawn with this seed
    for n in range(len(pairs.frame)):
        b, j = n // 4, int(pairs.frame[n])
        assert torch.equal(pushed.window[n, :-C], pairs.window[n, :-C]) and torch.equal(pushed.target[n], pairs.target[n])
        if j == 1:
            assert torch.equal(pushed.window[n, -C:], videos[b, 0])
            continue
        before = torch.cat([videos[b, max(j - 1 - 2 + q, 0)] for q in range(2)])[None]  # frames j-3, j-2
        label = pair_labels(cfg.lifting.label_seed, torch.tensor([int(index[b])]), torch.tensor([j - 1]), 4)
        with torch.no_grad():
            own = m.predict(before, label)[0]
        torch.testing.assert_close(pushed.window[n, -C:], own)
        torch.testing.assert_close(pushed.previous[n], own)
        assert not torch.equal(own, videos[b, j - 1])  # an untrained net: its prediction is not the data
    m.cfg = physics_cfg().lifting  # pushforward 0: the loss sees the plain pairs
    batch = {"video": videos, "index": index}
    plain = m.loss(batch, torch.Generator().manual_seed(2))["loss"]
    pairs = training_pairs(videos, index, m.window, m.cfg.pairs_per_video, torch.Generator().manual_seed(2))
    out = m.net(pairs.window, label=pair_labels(0, pairs.index, pairs.frame, 4))
    assert plain.item() == pytest.approx((out - pairs.target).square().mean().item(), rel=1e-5)


def test_window_noise_corrupts_the_window_not_the_target(physics_cfg):
    """Reference: eq. 6 written out with the window plus sigma times the generator's next normals (drawn after
    the pairs, from the same stream), the target clean; sigma = 0 is the paper's loss; bad values refused."""
    cfg = physics_cfg("lifting.window_noise=0.3")
    m = build_method(cfg)
    randomise(m.net)
    videos = load_dataset(cfg.data, "train").videos[:3]
    batch = {"video": videos, "index": torch.arange(3)}
    g = torch.Generator().manual_seed(4)
    pairs = training_pairs(videos, batch["index"], m.window, 2, g)
    noisy = pairs.window + 0.3 * torch.randn(pairs.window.shape, generator=g)
    label = pair_labels(0, pairs.index, pairs.frame, 4)
    with torch.no_grad():
        expected = (m.net(noisy, label=label) - pairs.target).square().mean().item()
        clean = (m.net(pairs.window, label=label) - pairs.target).square().mean().item()
    got = m.loss(batch, torch.Generator().manual_seed(4))["loss"].item()
    assert got == pytest.approx(expected, rel=1e-5) and got != pytest.approx(clean, rel=1e-3)
    m.cfg = physics_cfg().lifting
    assert m.loss(batch, torch.Generator().manual_seed(4))["loss"].item() == pytest.approx(clean, rel=1e-5)
    for bad in ("-0.1", "nan"):
        with pytest.raises(ConfigError, match="window_noise"):
            physics_cfg(f"lifting.window_noise={bad}")


def test_ardm_flow_matching_target_is_the_condot_closed_form(physics_cfg):
    """Reference: x_t = t x_1 + (1 − (1 − σ_min) t) x_0 and target x_1 − (1 − σ_min) x_0 (DESIGN §3),
    with the generator's draws replayed in the loss's order (frames, x_0, t)."""
    cfg = physics_cfg("ardm.sigma_min=0.1", method="ardm")
    m = build_method(cfg)
    randomise(m.net)
    videos = load_dataset(cfg.data, "train").videos[:3]
    captured = {}
    m.net.register_forward_hook(
        lambda mod, args, kwargs, out: captured.update(x=args[0], t=kwargs["t"], v=out), with_kwargs=True
    )
    loss = m.loss({"video": videos, "index": torch.arange(3)}, torch.Generator().manual_seed(9))[
        "loss"
    ].item()
    replay = torch.Generator().manual_seed(9)
    pairs = training_pairs(videos, torch.arange(3), m.window, 2, replay)
    x_1 = pairs.target
    x_0 = torch.randn(x_1.shape, generator=replay)
    t = torch.rand(6, generator=replay)
    tt = t[:, None, None, None]
    x_t = tt * x_1 + (1 - 0.9 * tt) * x_0
    target = x_1 - 0.9 * x_0
    assert torch.equal(captured["t"], t)
    assert torch.allclose(captured["x"], torch.cat([pairs.window, x_t], dim=1), atol=1e-6)
    assert loss == pytest.approx((captured["v"] - target).square().mean().item(), rel=1e-5)


# ------------------------------------------------------------------------------------------------- data


@pytest.mark.parametrize("kind", ["wave", "sde", "porous"])
def test_physics_data_starts_from_the_fixed_initial_state(physics_cfg, kind):
    """Frame 0 is u(0) for every trajectory; reference: the simulator's own first step over a tiny time,
    which must be close to it. Train and test are disjoint trajectories."""
    size = 16 if kind == "wave" else 8  # the wave's media need a grid that resolves |k| <= 6
    cfg = physics_cfg(f"data.physics.size={size}", kind=kind)
    train_set, test_set = load_dataset(cfg.data, "train"), load_dataset(cfg.data, "test")
    assert (len(train_set), *train_set.videos.shape[1:]) == (9, *video_shape(cfg.data))
    assert test_set.videos.shape[1:] == train_set.videos.shape[1:]
    assert len(train_set) + len(test_set) == 12 and not set(train_set.indices.tolist()) & set(
        test_set.indices.tolist()
    )
    assert torch.equal(
        train_set.videos[:, 0], physics_initial_state(cfg.data).expand(len(train_set), -1, -1, -1)
    )
    assert train_set.times[0] == 0 and train_set.captions is None
    assert train_set.times[1:].tolist() == pytest.approx((torch.arange(1, 7) / train_set.fps).tolist())
    # The porous injector cell fills at rate 1 per cell volume 1/64: 0.0064 after 1e-4.
    t_tiny, atol = {"wave": (1e-3, 1e-3), "sde": (1e-6, 1e-3), "porous": (1e-4, 1e-2)}[kind]
    first = simulate(kind, 1, size, 1, 0, t_end=t_tiny)[0, 0]  # (C, H, W)
    assert torch.allclose(first, physics_initial_state(cfg.data), atol=atol)
    with pytest.raises(ConfigError, match="splits train, test"):
        load_dataset(cfg.data, "heldout")


def test_trainer_batches_carry_their_rows(physics_cfg, tmp_path):
    from tempoflow.train.trainer import Trainer

    cfg = physics_cfg()
    videos = load_dataset(cfg.data, "train").videos
    trainer = Trainer(build_method(cfg), videos, None, cfg.train, tmp_path / "t", {}, {}, "cpu")
    batch = trainer.batch()
    assert torch.equal(batch["video"], videos[batch["index"]]) and "caption" not in batch


# ------------------------------------------------------------------------------------------ end to end


@pytest.mark.parametrize(("method", "kind"), [("lifting", "sde"), ("ardm", "sde"), ("lifting", "wave")])
def test_train_eval_sample_through_the_cli(tmp_path, method, kind):
    run = tmp_path / "run"
    overrides = [
        *TINY_PHYSICS,
        f"data.name={kind}",
        f"data.physics.cache_dir={tmp_path / 'cache'}",
        f"out_dir={run}",
        f"data.physics.size={16 if kind == 'wave' else 8}",
    ]
    config = {"lifting": "sde_lifting", "ardm": "wave_ardm"}[method]
    assert main(["train", config, *overrides, f"method={method}"]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", "--config", "eval_trajectories",
                 "eval.ensemble_size=4"]) == 0
    record = json.loads((ev / "metrics.json").read_text())
    m = record["metrics"]
    assert m["trajectories"] == 4 and m["frames"] == 7 and m["given_frames"] == 1
    assert m["nfe_per_frame"] == (1 if method == "lifting" else 2)
    assert math.isfinite(m["wct"]) and m["wim"] >= 0 and 0 <= m["crossed_generated"] <= 1
    assert {"wct", "wim"} <= set(m["reference_train_vs_test"]) and m["memorisation"]["sample_median"] > 0
    assert record["checkpoint_sha256"] and record["hardware"] and record["config"]["method"] == method
    # the probabilistic scores (issue 17): one ensemble of 4 from the fixed initial state, verified against
    # the 3 held-out simulations; the 9 training simulations give the floor
    ens = m["ensemble"]
    assert ens["members"] == 4 and ens["initial_conditions"] == 1 and ens["verifying_trajectories"] == 3
    for key in ("crps", "crps_fair", "spread", "skill", "spread_skill_ratio", "spectrum_error", "vrmse",
                "vrmse_ensemble_mean"):
        assert math.isfinite(ens[key]) and ens[key] >= 0, key
        assert math.isfinite(ens["reference_train_vs_test"][key]), key
    assert list(ens["vrmse_windows"]) == ["0:1", "1:2", "2:3", "3:6"]  # The Well's log-spaced windows of 6 steps
    assert len(record["ensemble_curves"]["per_step"]["crps"]) == 6 == len(record["ensemble_curves"]["time"])
    html = (ev / "report.html").read_text()
    assert "data:image/gif;base64," in html and 'class="histogram"' in html and "Crossing time" in html
    assert "CRPS per frame" in html and "Radially averaged energy spectrum" in html
    size = 16 if kind == "wave" else 8
    assert load_file(str(ev / "samples.safetensors"))["trajectories"].shape == (4, 7, 1, size, size)

    if method == "ardm":  # several checkpoints: one side-by-side report
        assert main(["eval", str(run), str(run), "--out", str(tmp_path / "cmp"), "--device", "cpu"]) == 0
        table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
        assert len(table) == 2 and table[0]["wct"] == table[1]["wct"]  # same checkpoint, same seed

    out = tmp_path / "s.gif"
    assert (
        main(
            [
                "sample",
                str(run),
                "--num",
                "3",
                "--frames",
                "9",
                "--out",
                str(out),
                "--scale",
                "1",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert read_video(out).frames.shape[0] == 9  # rolled out past the 7 training frames


def test_bad_settings_fail_with_one_line(tmp_path, capsys):
    assert (
        main(
            ["train", "sde_lifting", *TINY_PHYSICS, "lifting.window=0", f"out_dir={tmp_path}/x"]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lifting.window must be >= 1, got 0" in err[0]
    assert (
        main(
            [
                "train",
                "sde_lifting",
                *TINY_PHYSICS,
                "ardm.solver=dopri5",
                f"out_dir={tmp_path}/y",
            ]
        )
        == 2
    )
    assert "ardm.solver must be a fixed-step solver" in capsys.readouterr().err
