"""Ensemble scores of trajectory methods in ``tempoflow eval`` (issue 17 item 2): the per-step assembly
against the metric functions applied by hand, a reliable synthetic ensemble, ensembles shared by equal
starts, and a tiny run whose trajectories start from distinct frames through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.errors import ConfigError
from tempoflow.evaluate.ensembles import distinct_starts, ensemble_scores
from tempoflow.metrics.probabilistic import crps_ensemble, vrmse

from .test_lifting import TINY_PHYSICS


def test_distinct_starts_group_equal_first_frames_in_order_of_appearance():
    a, b, c = torch.zeros(1, 2, 3, 3), torch.ones(1, 2, 3, 3), -torch.ones(1, 2, 3, 3)
    starts, which = distinct_starts(torch.stack([b, a, b, c, a]))  # (5, 1, 2, 3, 3)
    assert starts.shape == (3, 1, 2, 3, 3) and which.tolist() == [0, 1, 0, 2, 1]
    assert torch.equal(starts[which], torch.stack([b, a, b, c, a]))


def test_ensemble_scores_match_the_metrics_step_by_step():
    # Reference: the metric functions applied to each verifying trajectory's own ensemble by hand.
    g = torch.Generator().manual_seed(0)
    ensembles = torch.randn(2, 5, 4, 1, 8, 8, generator=g)  # (U, M, S, C, H, W)
    truth = torch.randn(3, 4, 1, 8, 8, generator=g)  # (K, S, C, H, W)
    which = torch.tensor([1, 0, 1])
    scores = ensemble_scores(ensembles, truth, which, windows=(0, 2, 4))
    summary, per = scores.summary, scores.curves["per_step"]
    for s in range(4):
        crps = torch.stack([crps_ensemble(ensembles[which[k], :, s].double(), truth[k, s].double()).mean()
                            for k in range(3)]).mean()
        assert math.isclose(per["crps"][s], float(crps), rel_tol=1e-9)
        member = torch.stack([vrmse(ensembles[which[k], :, s].double(), truth[k, s].double()).mean()
                              for k in range(3)]).mean()
        assert math.isclose(per["vrmse"][s], float(member), rel_tol=1e-9)
    assert math.isclose(summary["crps"], sum(per["crps"]) / 4, rel_tol=1e-12)
    assert summary["vrmse_windows"] == pytest.approx({"0:2": sum(per["vrmse"][:2]) / 2,
                                                      "2:4": sum(per["vrmse"][2:]) / 2})
    assert summary["members"] == 5 and summary["verifying_trajectories"] == 3
    with pytest.raises(ValueError, match="disagree"):
        ensemble_scores(ensembles, truth[:, :3], which)


def test_a_reliable_ensemble_scores_as_the_truth_does():
    # Members and truth exchangeable (one distribution per pixel): corrected spread/skill -> 1, the
    # spectra agree (error -> 0) and the fair CRPS of the members equals the truth's expected one.
    g = torch.Generator().manual_seed(1)
    centre = torch.randn(1, 1, 2, 1, 16, 16, generator=g)
    ensembles = centre + torch.randn(1, 64, 2, 1, 16, 16, generator=g)
    truth = centre[0] + torch.randn(40, 2, 1, 16, 16, generator=g)
    summary = ensemble_scores(ensembles, truth, torch.zeros(40, dtype=torch.long)).summary
    assert abs(summary["spread_skill_ratio_corrected"] - 1) < 0.03
    assert summary["spectrum_error"] < 0.1
    # member − truth has variance 2 per pixel; the truth's spatial variance is var(centre) + 1 ≈ 2: VRMSE ≈ 1
    assert summary["vrmse"] == pytest.approx(1.0, rel=0.1)


def test_eval_of_trajectories_from_distinct_starts(tmp_path):
    # Without the fixed initial state every test trajectory starts from its own first frames: one ensemble
    # each, and no floor (a single true continuation per start).
    run = tmp_path / "run"
    common = [*TINY_PHYSICS, "data.name=sde", f"data.physics.cache_dir={tmp_path / 'cache'}",
              "data.physics.include_initial=false"]
    assert main(["train", "sde_lifting", *common, f"out_dir={run}"]) == 0
    ev = tmp_path / "eval"
    assert main(["eval", str(run), "--out", str(ev), "--device", "cpu", "eval.ensemble_size=3",
                 "eval.ensemble_starts=2", "eval.rollout_windows=[0, 1, 4]"]) == 0
    ens = json.loads((ev / "metrics.json").read_text())["metrics"]["ensemble"]
    assert ens["initial_conditions"] == 2 and ens["verifying_trajectories"] == 2 and ens["members"] == 3
    assert ens["reference_train_vs_test"].startswith("n/a")
    assert set(ens["vrmse_windows"]) == {"0:1", "1:4"} and math.isfinite(ens["crps_fair"])


@pytest.mark.parametrize(("override", "message"), [
    ("eval.ensemble_size=1", "eval.ensemble_size must be >= 2, got 1"),
    ("eval.ensemble_starts=0", "eval.ensemble_starts must be >= 1, got 0"),
    ("eval.rollout_windows=[0, 4, 2]", "eval.rollout_windows must be empty or >= 2 increasing steps"),
])
def test_bad_ensemble_settings_are_one_line(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])
