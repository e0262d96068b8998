"""Text encoders: shipped MiniLM (default, offline) and a weight-free hashing encoder."""

from tempoflow.text.encoders import (
    HashingEncoder,
    SentenceTransformerEncoder,
    TextConfig,
    TextEmbedding,
    TextEncoder,
    make_text_encoder,
)

__all__ = ["HashingEncoder", "SentenceTransformerEncoder", "TextConfig", "TextEmbedding", "TextEncoder", "make_text_encoder"]
