"""Method ``align`` (seed 002 §3): its networks, noise words, buckets, every objective, generation,
retrieval, and ``tempoflow train`` + ``tempoflow eval`` end to end.

References: Table C.1's parameter counts and a hand count of Linear/LayerNorm weights; the bucket loss
of ``tempoflow.methods.contrastive`` recomputed from hand-written bucket ids; the identity eq. (2) must
satisfy when ``E_s = G_s = identity``; autograd for which parameters a term reaches; Python loops as the
brute-force oracle of recall at k.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tempoflow.cli import main
from tempoflow.config import load_config
from tempoflow.errors import ConfigError
from tempoflow.evaluate.alignment import retrieval_recall
from tempoflow.methods.align import ALIGN_OBJECTIVES, MappingMLP, bucket_ids_of
from tempoflow.methods.contrastive import bucket_loss
from tempoflow.runs import build_method, caption_vocabulary, train
from tempoflow.text.augment import vocabulary_of

from .conftest import TINY
from .conftest import TINY_VIDEO_WAE as VW

SMALL_ALIGN = ["method=align", "align.hidden=32", "align.shared_dim=8", "align.disc_width=16"]


@pytest.fixture(scope="module")
def wae_run(tmp_path_factory):
    """A tiny trained video WAE: the frozen video space of every test here."""
    out = tmp_path_factory.mktemp("wae") / "run"
    train(load_config(None, [*TINY, *VW, f"out_dir={out}", "train.steps=2"]))
    return out


def _align(wae_run, *overrides: str):
    return build_method(load_config(None, [*TINY, *SMALL_ALIGN, f"align.video_path={wae_run}", *overrides]))


def _batch(method, n: int = 6) -> dict:
    from tempoflow.data import load_dataset

    data = load_dataset(load_config(None, TINY).data, "train")
    rows = [0, 0, 1, 2, 2, 3][:n]  # repeated rows: buckets of two within the batch
    return {"video": data.videos[rows], "caption": [data.captions[i] for i in rows]}


def test_mapping_architecture_matches_appendix_c3():
    """Reference: appendix C.3.3 (4 layers, LayerNorm + Swish after all but the last, dropout after the
    2nd and 3rd) and Table C.1 (M with d_zt = 512, d_zs = 64: 824k weights; E_s + G_s at 64/64: 1.2M)."""
    m = MappingMLP(512, 64, hidden=512, dropout=0.1)
    kinds = [type(layer).__name__ for layer in m.net]
    assert kinds == [
        "Linear",
        "LayerNorm",
        "SiLU",
        "Linear",
        "LayerNorm",
        "SiLU",
        "Dropout",
        "Linear",
        "LayerNorm",
        "SiLU",
        "Dropout",
        "Linear",
    ]
    assert [layer.p for layer in m.net if isinstance(layer, nn.Dropout)] == [0.1, 0.1]
    hand = lambda i, o: (i * 512 + 512) + 2 * (512 * 512 + 512) + 3 * 2 * 512 + (512 * o + o)
    n_m = sum(p.numel() for p in m.parameters())
    assert n_m == hand(512, 64) and round(n_m / 1e3) == 824
    n_shared = sum(p.numel() for p in [*MappingMLP(64, 64).parameters(), *MappingMLP(64, 64).parameters()])
    assert n_shared == 2 * hand(64, 64) and round(n_shared / 1e5) == 12
    m.eval()
    x = torch.randn(3, 512)
    assert torch.equal(m(x), m(x))  # no dropout in eval mode


def test_bucket_ids_from_captions():
    """Equal caption = same bucket, ids in order of first appearance."""
    assert bucket_ids_of(["a", "b", "a", "c", "b"]).tolist() == [0, 1, 0, 2, 1]
    assert bucket_ids_of(["x"]).dtype == torch.long


def test_config_errors_name_the_bad_value(wae_run):
    with pytest.raises(ConfigError, match="align.objective.*'contrastive'"):
        load_config(None, ["align.objective=contrastive"])
    with pytest.raises(ConfigError, match="align.video_path"):
        build_method(load_config(None, [*TINY, *SMALL_ALIGN]))
    with pytest.raises(ConfigError, match=r"\(4, 3, 16, 16\).*\(4, 3, 32, 32\)"):
        _align(wae_run, "data.shapes.resolution=32")
    with pytest.raises(ConfigError, match="captioned data"):
        _align(wae_run, "data.name=wave")


def test_noise_words_only_in_training_and_outside_the_vocabulary(wae_run):
    """The augmentation runs in train mode only; its words avoid every caption's words (all splits);
    augmented captions stay out of the text encoder's cache."""
    method = _align(wae_run, "align.noise_p=1.0")
    cfg = load_config(None, TINY)
    assert not set(method.noise.words) & vocabulary_of(caption_vocabulary(cfg.data))
    calls = []

    class Spy:
        def batch(self, captions, rng):
            calls.append(list(captions))
            return [f"{c} banana" for c in captions]

    real, method.noise = method.noise, Spy()
    batch = _batch(method)
    method.eval()
    method.loss(batch)
    assert calls == []
    method.train()
    cached = len(method.text._cache)
    method.loss(batch, torch.Generator().manual_seed(0))
    assert calls == [batch["caption"]] and len(method.text._cache) == cached
    # The augmented embedding is the encoder's embedding of the augmented caption.
    device = torch.device("cpu")
    noisy = [f"{c} banana" for c in batch["caption"]]
    z_hat = method.noisy_caption_vectors(batch["caption"], noisy, device)
    assert torch.allclose(z_hat, method.text.encode(noisy).pooled)
    method.noise = real
    rng = np.random.default_rng(0)
    assert all(a != b for a, b in zip(real.batch(batch["caption"], rng), batch["caption"]))  # p = 1


def test_bucket_term_uses_the_batch_captions(wae_run):
    """Reference: ``contrastive.bucket_loss`` on the method's own shared codes with hand-written ids."""
    method = _align(wae_run).eval()
    batch = _batch(method)
    out = method.loss(batch)
    with torch.no_grad():
        z_v = method.encode_videos(batch["video"])
        z_1 = method.shared_encoder(z_v)
        z_2 = method.mapping(method.caption_vectors(batch["caption"], torch.device("cpu")))
    ids = torch.tensor([0, 0, 1, 2, 2, 3])  # rows [0, 0, 1, 2, 2, 3] of the training split
    assert torch.allclose(out["bucket"], bucket_loss(z_2, z_1, ids, alpha=2.0))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_direct_cost_is_eq2_with_identity_shared_autoencoder(wae_run, reduction):
    """With ``E_s = G_s = identity`` eq. (2)'s video-code terms are ``2 ‖z_v − M(z_t)‖₁`` exactly; "sum"
    is the paper's norm per sample (then averaged over the batch), "mean" averages over elements."""
    method = _align(wae_run, "align.objective=direct_bucket", f"align.reduction={reduction}").eval()
    batch = _batch(method)
    with torch.no_grad():
        z_v = method.encode_videos(batch["video"])
        z_2 = method.mapping(method.caption_vectors(batch["caption"], torch.device("cpu")))
        terms = method.cost(method.shared_encoder(z_v), z_2, z_v, batch["video"])
        x = batch["video"].transpose(1, 2) * 2 - 1
        y_1, y_2 = method.decode_raw(z_v), method.decode_raw(z_2)
    B = z_v.shape[0]
    norm = (lambda e: e.reshape(B, -1).sum(1).mean()) if reduction == "sum" else (lambda e: e.mean())
    assert torch.allclose(terms["feature"], 2 * norm((z_v - z_2).abs()))
    assert torch.allclose(terms["shared"], norm((z_v - z_2).abs()))
    assert torch.allclose(terms["pixel"], norm((y_1 - x).abs()) + norm((y_2 - x).abs()), rtol=1e-5)


def test_discriminator_terms_reach_disjoint_parameters(wae_run):
    """Reference: autograd. D_s's BCE moves D_s only; the divergence never moves D_s (the real shared
    codes enter D_s detached, so E_s plays no game against it)."""
    method = _align(wae_run).train()
    batch = _batch(method)
    z_v = method.encode_videos(batch["video"])
    z_1 = method.shared_encoder(z_v)
    z_2 = method.mapping(method.caption_vectors(batch["caption"], torch.device("cpu")))
    terms = method.alignment(z_1, z_2, bucket_ids_of(batch["caption"]))
    disc = list(method.shared_disc.parameters())
    others = [*method.mapping.parameters(), *method.shared_encoder.parameters()]

    def grads(loss, params):
        return torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)

    assert all(g is None or not g.any() for g in grads(terms["divergence"], disc))
    assert all(g is None or not g.any() for g in grads(terms["disc_loss"], others))
    assert any(g is not None and g.any() for g in grads(terms["disc_loss"], disc))


@pytest.mark.parametrize("objective", ALIGN_OBJECTIVES)
def test_every_objective_trains_with_a_frozen_video_space(wae_run, objective):
    """A few AdamW steps: every loss term finite, the mapping moves, the video WAE does not."""
    method = _align(wae_run, f"align.objective={objective}").train()
    batch = _batch(method)
    params = [p for p in method.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in method.codec.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    codec_before = {k: v.clone() for k, v in method.codec.state_dict().items()}
    mapping_before = [p.detach().clone() for p in method.mapping.parameters()]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        out = method.loss(batch, gen)
        assert all(torch.isfinite(v).all() for v in out.values()), out
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(mapping_before, method.mapping.parameters()))
    assert all(torch.equal(v, method.codec.state_dict()[k]) for k, v in codec_before.items())


def test_generation_shapes_range_and_determinism(wae_run):
    method = _align(wae_run).eval()
    captions = ["a red circle moves left", "a blue square moves up", "a red circle moves left"]
    out = method.sample(captions, generator=torch.Generator().manual_seed(1))
    assert out.video.shape == (3, 4, 3, 16, 16) and out.latents.shape == (3, 1, 16) and out.nfe == 1
    assert out.video.min() >= 0 and out.video.max() <= 1
    assert torch.equal(out.video[0], out.video[2])  # same caption, same video (deterministic)
    again = method.sample(captions, generator=torch.Generator().manual_seed(2))
    assert torch.equal(out.video, again.video)
    codes = method.text_to_video_code(captions)  # the decoded code is G_s(M(E_t(t)))
    assert torch.allclose(out.latents[:, 0], codes)


def test_retrieval_recall_perfect_and_against_brute_force():
    """Perfect alignment gives R@1 = 1; random embeddings match a Python double loop."""
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(12, 5, generator=g)
    key_buckets = torch.arange(12) // 3  # 4 buckets of 3 videos
    queries = keys[::3].clone()  # each caption embedded exactly at one of its videos
    assert retrieval_recall(queries, torch.arange(4), keys, key_buckets) == {1: 1.0, 5: 1.0}
    queries = torch.randn(7, 5, generator=g)
    query_buckets = torch.randint(4, (7,), generator=g)
    got = retrieval_recall(queries, query_buckets, keys, key_buckets, ks=(1, 2, 5, 20))
    for k in (1, 2, 5, 20):
        hits = 0
        for q, b in zip(queries, query_buckets):
            sims = [float(torch.nn.functional.cosine_similarity(q, key, dim=0)) for key in keys]
            top = sorted(range(len(keys)), key=lambda j: -sims[j])[:k]
            hits += any(int(key_buckets[j]) == int(b) for j in top)
        assert got[k] == pytest.approx(hits / len(queries))
    with pytest.raises(ValueError, match="share D"):
        retrieval_recall(torch.randn(2, 3), torch.zeros(2), torch.randn(2, 4), torch.zeros(2))


def test_train_and_eval_end_to_end(tmp_path, wae_run, capsys):
    """``tempoflow train shapes_align`` (tiny) then ``tempoflow eval``: metrics with the
    alignment scores, and the PCA / t-SNE figures written and embedded in the report."""
    run = tmp_path / "align"
    args = [*TINY, f"align.video_path={wae_run}", f"out_dir={run}", "train.steps=2", "align.hidden=32"]
    assert main(["train", "shapes_align", *args]) == 0
    assert main(["eval", str(run), "--out", str(tmp_path / "eval"), "--config", "eval_align",
                 "eval.num_prompts=2"]) == 0
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    metrics = record["metrics"]
    for split in ("align_train", "align_heldout"):
        row = metrics[split]
        for key in (
            "b_psnr_db",
            "b_ssim",
            "fd_wae",
            "mmd_wae",
            "caption_accuracy",
            "recall_at_1",
            "recall_at_5",
        ):
            assert isinstance(row[key], float), (split, key)
        assert 0 <= row["recall_at_1"] <= row["recall_at_5"] <= 1
    assert "fd_wae" in capsys.readouterr().out  # printed by the CLI
    report = (tmp_path / "eval" / "report.html").read_text()
    for name in ("latent_pca.png", "latent_tsne.png"):
        png = tmp_path / "eval" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.count("iVBORw0KGgo") == 2  # two base64 PNGs embedded


def _tiny_clip(folder):
    """A random CLIP text model and a character-level CLIP tokenizer (no merges), saved to ``folder``."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    chars = "abcdefghijklmnopqrstuvwxyz0123456789-"
    vocab = {
        t: i for i, t in enumerate(["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)])
    }
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        projection_dim=8,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    torch.manual_seed(0)
    CLIPTextModelWithProjection(config).eval().save_pretrained(folder)


def test_clip_text_encoder_on_a_tiny_random_model(tmp_path):
    """The paper's text encoder through transformers. Reference: the transformers model called on each
    caption alone (no padding): pooled = ``text_embeds``, tokens = projected hidden states."""
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    from tempoflow.text import make_text_encoder

    _tiny_clip(tmp_path)
    encoder = make_text_encoder("clip", path=str(tmp_path))
    captions = ["a red circle moves left", "digit 3 moves top to bottom"]
    emb = encoder.encode(captions)
    assert encoder.dim == 8 and emb.pooled.shape == (2, 8) and emb.tokens.shape[-1] == 8
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    model = CLIPTextModelWithProjection.from_pretrained(tmp_path).eval()
    for i, caption in enumerate(captions):
        with torch.no_grad():
            ids = tokenizer([caption], return_tensors="pt")
            out = model(**ids)
        n = ids["input_ids"].shape[1]
        assert int(emb.mask[i].sum()) == n
        assert torch.allclose(emb.pooled[i], out.text_embeds[0], atol=1e-5)
        assert torch.allclose(emb.tokens[i, :n], model.text_projection(out.last_hidden_state)[0], atol=1e-5)
    with pytest.raises(ConfigError, match="needs text.path"):
        make_text_encoder("clip")
