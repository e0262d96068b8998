"""The frame autoencoder method, its codec, and flow matching in its latent space."""

from __future__ import annotations

import json

import pytest
import torch

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.errors import CheckpointError, ConfigError, DataError
from tempoflow.methods.base import SamplingOptions
from tempoflow.runs import build_codec, build_method, train

from .conftest import TINY, overfit_l1

AE = ["method=autoencoder", "autoencoder.width=8", "autoencoder.multipliers=[1, 2]", "autoencoder.z_channels=2"]


@pytest.fixture
def ae_run(tmp_path):
    cfg = load_config(None, [*TINY, *AE, f"out_dir={tmp_path / 'ae'}"])
    train(cfg)
    return tmp_path / "ae"


def test_autoencoder_shapes_and_factor_check():
    cfg = load_config(None, [*TINY, *AE])
    ae = build_method(cfg)
    assert ae.latent_shape == (2, 8, 8)  # 16x16 frames, one downsampling level
    video = torch.rand(2, 4, 3, 16, 16)
    assert ae.reconstruct(video).shape == video.shape
    with pytest.raises(ConfigError, match="do not divide"):
        build_method(load_config(None, [*TINY, *AE, "autoencoder.multipliers=[1, 1, 1, 1, 1, 1]"]))


def test_autoencoder_learns_and_tracks_latent_std():
    """Reconstruction L1 must fall well below its start when overfitting one batch."""
    cfg = load_config(None, [*TINY, *AE])
    ae = build_method(cfg)
    from tempoflow.data import load_dataset

    batch = {"video": load_dataset(cfg.data, "train").videos[:2]}
    first, last = overfit_l1(ae, batch, steps=60)
    assert last < 0.5 * first
    assert ae.latent_std.item() != 1.0  # the running estimate moved in training mode...
    before = ae.latent_std.clone()
    ae.eval()
    ae.loss(batch)
    assert torch.equal(ae.latent_std, before)  # ...and not in eval mode


def test_codec_round_trip_chunking_and_scaling(ae_run):
    codec = build_codec("autoencoder", str(ae_run))
    video = torch.rand(2, 4, 3, 16, 16)
    z = codec.encode(video)
    assert z.shape == (2, 4, 2, 8, 8)
    assert codec.decode(z).shape == video.shape
    codec.chunk = 3  # 8 frames in chunks of 3 must give the same latents
    assert torch.allclose(codec.encode(video), z, atol=1e-6)
    mean, _ = codec.ae.encode_frames(video.flatten(0, 1))
    assert torch.allclose(z.flatten(0, 1), mean * codec.scaling, atol=1e-5)  # scaled by 1 / latent std
    assert not any(p.requires_grad for p in codec.parameters())


def test_codec_refuses_bad_sources(tmp_path, ae_run):
    with pytest.raises(ConfigError, match="needs flow.codec_path"):
        build_codec("autoencoder", "", "flow.codec_path")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        build_codec("autoencoder", str(tmp_path / "nowhere"))
    flow_run = tmp_path / "flow"
    train(load_config(None, [*TINY, f"out_dir={flow_run}", "train.steps=1"]))
    with pytest.raises(ConfigError, match="flow.codec_path .* is a 'flow' run, not an autoencoder"):
        build_codec("autoencoder", str(flow_run), "flow.codec_path")


def test_flow_in_autoencoder_latent_space_end_to_end(tmp_path, ae_run):
    run = tmp_path / "flow"
    latent = [*TINY, f"out_dir={run}", "flow.codec=autoencoder", f"flow.codec_path={ae_run}", "model.patch_hw=2"]
    before = {k: v.clone() for k, v in build_codec("autoencoder", str(ae_run)).state_dict().items()}
    assert main(["train", "demo", *latent]) == 0
    from tempoflow.runs import load_run

    method, _, _ = load_run(run, device="cpu")
    after = method.codec.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the codec stayed frozen
    out = method.sample(["a red circle moves left"], generator=torch.Generator().manual_seed(0), options=SamplingOptions(steps=2))
    assert out.latents.shape == (1, 4, 2, 8, 8) and out.video.shape == (1, 4, 3, 16, 16)
    assert main(["eval", str(run), "--out", str(tmp_path / "ev"), "--device", "cpu", "sample.steps=1"]) == 0


def test_autoencoder_eval_reports_reconstruction(tmp_path, ae_run):
    assert main(["eval", str(ae_run), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    m = record["metrics"]
    assert set(m) == {"test", "heldout"} and m["test"]["psnr_db"] > 0 and -1 <= m["test"]["ssim"] <= 1
    assert 0 <= m["heldout"]["reconstruction_caption_accuracy"] <= 1
    assert record["latent_shape"] == [2, 8, 8]


def test_latent_cache_reuse_and_refusal(tmp_path, ae_run):
    """`data encode` then training from the cache; the cached latents equal a fresh encode (the
    reference), and a cache made by another codec or from other data is refused by name."""
    cache = tmp_path / "cache"
    latent = [*TINY, "flow.codec=autoencoder", f"flow.codec_path={ae_run}", "model.patch_hw=2"]
    assert main(["data", "encode", "demo", *latent, "--out", str(cache), "--splits", "train", "test"]) == 0
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["codec"] == "autoencoder" and manifest["latent_shape"] == [2, 8, 8]

    from tempoflow.data import load_dataset
    from tempoflow.data.latent_cache import load_latents
    from tempoflow.runs import data_dict

    cfg = load_config("demo", latent)
    codec = build_codec("autoencoder", str(ae_run))
    cached = load_latents(cache, codec, data_dict(cfg.data), "test")
    test = load_dataset(cfg.data, "test")
    assert cached.captions == test.captions
    assert torch.allclose(cached.latents, codec.encode(test.videos), atol=1e-5)

    run = tmp_path / "from_cache"
    assert main(["train", "demo", *latent, f"data.latent_cache={cache}", f"out_dir={run}"]) == 0
    assert (run / "checkpoints" / "latest").exists()

    with pytest.raises(ConfigError, match="made by codec 'autoencoder'.*uses 'pixel'"):
        load_latents(cache, build_codec("pixel"), data_dict(cfg.data), "train")
    with pytest.raises(ConfigError, match="other data settings"):
        other = load_config("demo", [*latent, "data.shapes.seed=7"])
        load_latents(cache, codec, data_dict(other.data), "train")
    with pytest.raises(ConfigError, match="no 'heldout' split"):
        load_latents(cache, codec, data_dict(cfg.data), "heldout")
    with pytest.raises(ConfigError, match="no latent cache"):
        load_latents(tmp_path / "empty", codec, data_dict(cfg.data), "train")
    (cache / "train-00000.safetensors").write_bytes(b"garbage")
    with pytest.raises(DataError, match="corrupt"):
        load_latents(cache, codec, data_dict(cfg.data), "train")
    with pytest.raises(ConfigError, match="has no codec"):  # the autoencoder itself is not a latent method
        train(load_config(None, [*TINY, *AE, f"data.latent_cache={cache}", f"out_dir={tmp_path / 'x'}"]))


def test_checkpoints_leave_out_the_codec_and_pin_its_fingerprint(tmp_path, ae_run):
    """The codec is rebuilt from its own run: not saved, not averaged, and a changed codec is refused."""
    from safetensors.torch import load_file

    from tempoflow.runs import load_run

    run = tmp_path / "flow"
    latent = [*TINY, f"out_dir={run}", "flow.codec=autoencoder", f"flow.codec_path={ae_run}", "model.patch_hw=2"]
    assert main(["train", "demo", *latent]) == 0
    latest = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    for name in ("model.safetensors", "ema.safetensors"):
        keys = load_file(str(latest / name)).keys()
        assert keys and not any(k.startswith("codec.") for k in keys)
    load_run(run, device="cpu")  # loads: the codec run is unchanged
    # retrain the codec in place: the flow checkpoint now points at another latent space
    import shutil

    shutil.rmtree(ae_run)
    train(load_config(None, [*TINY, *AE, f"out_dir={ae_run}", "train.seed=5"]))
    with pytest.raises(CheckpointError, match="another latent space"):
        load_run(run, device="cpu")


def test_autoencoder_on_physics_fields_is_not_clamped(tmp_path):
    """Signed fields pass through unclamped (DESIGN §1) and eval scores them over their own range."""
    physics = ["data.name=sde", "data.physics.n_trajectories=4", "data.physics.size=16", "data.physics.n_times=4",
               f"data.physics.cache_dir={tmp_path / 'cache'}", "data.physics.test_fraction=0.5"]
    cfg = load_config(None, [*TINY, *AE, *physics, f"out_dir={tmp_path / 'ae'}"])
    ae = build_method(cfg)
    assert ae.fields
    z = torch.randn(3, *ae.latent_shape)
    with torch.no_grad():
        assert torch.equal(ae.decode_frames(z), ae.decoder(z))  # no [0, 1] mapping, no clamp
        ae.decoder.net[-1].bias.fill_(-5.0)
        assert ae.decode_frames(z).max() < 0  # negative values survive
    train(cfg)
    assert main(["eval", str(tmp_path / "ae"), "--out", str(tmp_path / "ev"), "--device", "cpu"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]
    assert set(m) == {"test"} and m["test"]["data_range"] > 0 and "reconstruction_caption_accuracy" not in m["test"]
