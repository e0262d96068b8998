"""Alignment scores and latent-space figures of an ``align`` run, for ``tempoflow eval`` (seed 002 §4.1,
appendices C.1 and C.2; DESIGN §6, §7).

``tempoflow.evaluate`` samples a few prompts and scores them like any text-to-video method; for a
method whose task is "alignment" it then calls :func:`evaluate_alignment`, which adds, for the training
captions and for the held-out combinations, over EVERY caption of the split:

- ``b_psnr_db`` / ``b_ssim``: bucket metrics, one generated video per caption against the best
  match in its bucket (the method is deterministic: more samples per caption would be copies);
- ``fd_wae`` / ``mmd_wae``: Fréchet distance and polynomial-kernel MMD² between the video WAE codes
  ``E_v(v)`` of generated and real videos — one generated video per real video, from its caption, so
  a bucket without diversity is penalised. The offline feature extractor is the run's own video WAE
  encoder: these are NOT FVD/KVD (those need I3D, ``eval.i3d_path``);
- ``caption_accuracy`` (+ per attribute) from the data set's oracle (shapes, digits or camera);
- ``recall_at_1`` / ``recall_at_5``: text → video retrieval in the alignment space: each caption's
  ``M(E_t(t))`` ranks the ``E_s(E_v(v))`` of every video of the data set (train, test and held-out
  splits) by cosine; a hit when one of the top k is a video of the caption's bucket.

Figures (appendix C.1): PCA and t-SNE (PCA to 32 components, perplexity 40, 600 iterations, seed 42)
of the text space ``z_t``, the alignment space (``M(z_t)`` and ``E_s(z_v)``) and the video space
(``z_v``, ``G_s(M(z_t))`` and ``G_s(E_s(z_v))``) of training pairs, coloured by bucket. They need the
``plots`` extra (matplotlib, scikit-learn); without it the scores are written and one warning says so.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tempoflow.config import ExperimentConfig
from tempoflow.data import load_dataset
from tempoflow.errors import MissingExtraError, needs_extra
from tempoflow.evaluate.scores import oracle_scores
from tempoflow.methods.align import Align, AlignSpaces
from tempoflow.methods.contrastive import cosine_matrix
from tempoflow.metrics.distribution import frechet_distance_features, polynomial_mmd
from tempoflow.metrics.video import nearest_in_bucket
from tempoflow.report.html import VideoCell

__all__ = ["evaluate_alignment", "latent_figures", "oracle_accuracy", "retrieval_recall", "split_scores"]

RECALL_KS = (1, 5)
SAMPLE_CHUNK = 128  # captions generated at once
PLOT_POINTS = 300  # training pairs drawn in the figures (evenly spread through the split)
TSNE_PCA_COMPONENTS = 32  # appendix C.1
TSNE_PERPLEXITY = 40.0
TSNE_ITERATIONS = 600
TSNE_SEED = 42
MMD_SUBSETS = 10


def retrieval_recall(
    queries: Tensor, query_buckets: Tensor, keys: Tensor, key_buckets: Tensor, ks: tuple[int, ...] = RECALL_KS
) -> dict[int, float]:
    """Text → video recall at k in a shared space, one-to-many: a query is a hit at k when one of its
    k nearest keys by cosine belongs to its bucket.

    Args:
        queries: ``(Q, D)`` caption embeddings; ``query_buckets`` ``(Q,)`` their bucket ids.
        keys: ``(K, D)`` video embeddings; ``key_buckets`` ``(K,)`` their bucket ids.
        ks: the cut-offs (each ``>= 1``; a cut-off past ``K`` counts all keys).

    Returns:
        ``{k: fraction of queries hit at k}``.
    """
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries (Q, D) and keys (K, D) must share D, got {tuple(queries.shape)} and {tuple(keys.shape)}"
        )
    if query_buckets.shape != queries.shape[:1] or key_buckets.shape != keys.shape[:1]:
        raise ValueError("need one bucket id per query and per key")
    if min(ks) < 1:
        raise ValueError(f"recall cut-offs must be >= 1, got {ks}")
    order = cosine_matrix(queries.float(), keys.float()).argsort(dim=1, descending=True)  # (Q, K)
    hit = key_buckets[order] == query_buckets[:, None]  # (Q, K) ranked
    return {k: float(hit[:, :k].any(dim=1).float().mean()) for k in ks}


def oracle_accuracy(cfg: ExperimentConfig, videos: Tensor, captions: list[str]) -> dict:
    """Caption accuracy of ``videos`` ``(B, T, C, H, W)`` by the data set's oracle."""
    return oracle_scores(videos, captions, cfg.data)


def generate(method: Align, captions: list[str]) -> Tensor:
    """One video per caption ``(P, T, C, H, W)`` on the CPU."""
    return torch.cat(
        [
            method.sample(captions[i : i + SAMPLE_CHUNK]).video.float().cpu()
            for i in range(0, len(captions), SAMPLE_CHUNK)
        ]
    )


def split_scores(
    method: Align,
    cfg: ExperimentConfig,
    split: str,
    gallery: tuple[Tensor, Tensor],
    bucket_index: dict[str, int],
) -> dict:
    """The module's per-split scores over every caption of ``split`` (see the module doc).

    Args:
        gallery: alignment-space embeddings ``(K, d_a)`` of every video of the data set and their
            bucket ids ``(K,)``, the retrieval keys.
        bucket_index: caption -> bucket id over all splits.
    """
    data = load_dataset(cfg.data, split)
    buckets = data.buckets()  # caption -> indices, first-appearance order
    captions = list(buckets)
    samples = generate(method, captions)  # (P, T, C, H, W)
    refs = [data.videos[idx] for idx in buckets.values()]
    row: dict = {"captions": len(captions), "videos": len(data)}
    row["b_psnr_db"] = float(nearest_in_bucket(samples, refs, metric="psnr").score.mean())
    row["b_ssim"] = float(nearest_in_bucket(samples, refs, metric="ssim").score.mean())
    # Features: E_v of one generated video per real video (its caption's), against E_v of the real ones.
    device = next(method.mapping.parameters()).device
    row_of = {c: i for i, c in enumerate(captions)}
    which = torch.tensor([row_of[c] for c in data.captions])  # (N,) caption of each video
    f_fake = method.encode_videos(samples.to(device)).double().cpu()[which]  # (N, d_z)
    f_real = method.encode_videos(data.videos.to(device)).double().cpu()  # (N, d_z)
    if len(data) >= 2:
        row["fd_wae"] = float(frechet_distance_features(f_fake, f_real))
        row["mmd_wae"] = float(polynomial_mmd(f_fake, f_real, num_subsets=MMD_SUBSETS).mean)
    row.update(oracle_accuracy(cfg, samples, captions))
    queries = method.mapping(method.caption_vectors(captions, device)).cpu()  # (P, d_a)
    query_buckets = torch.tensor([bucket_index[c] for c in captions])
    recall = retrieval_recall(queries, query_buckets, *gallery)
    row.update({f"recall_at_{k}": v for k, v in recall.items()})
    return row


def _reduce(points: np.ndarray, how: str) -> np.ndarray:
    """``(N, D)`` -> ``(N, 2)`` by PCA, or t-SNE on the first PCA components (appendix C.1).

    Raises:
        MissingExtraError: scikit-learn is not installed.
    """
    with needs_extra("sklearn", "plots", "the latent-space plots"):
        from sklearn.decomposition import PCA
        from sklearn.manifold import TSNE

    n, d = points.shape
    if how == "pca":
        out = PCA(n_components=min(2, n, d), random_state=TSNE_SEED).fit_transform(points)
    else:
        reduced = PCA(n_components=min(TSNE_PCA_COMPONENTS, n, d), random_state=TSNE_SEED).fit_transform(
            points
        )
        perplexity = min(TSNE_PERPLEXITY, (n - 1) / 3)  # t-SNE needs perplexity < n
        out = TSNE(
            n_components=2,
            perplexity=perplexity,
            max_iter=TSNE_ITERATIONS,
            init="pca",
            random_state=TSNE_SEED,
        ).fit_transform(reduced)
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1])))  # one-dimensional data: a flat second axis


def _space_sets(spaces: AlignSpaces) -> dict[str, dict[str, Tensor]]:
    """The point sets drawn in each panel: ``{space: {set label: (N, D)}}``."""
    return {
        "text space z_t": {"E_t(t)": spaces.text},
        "alignment space": {"M(z_t)": spaces.text_shared, "E_s(z_v)": spaces.video_shared},
        "video space z_v": {
            "E_v(v)": spaces.video,
            "G_s(M(z_t))": spaces.generated,
            "G_s(E_s(z_v))": spaces.reconstructed,
        },
    }


def latent_figures(spaces: AlignSpaces, buckets: Tensor, out: Path, title: str) -> list[Path]:
    """Write ``latent_pca.png`` and ``latent_tsne.png`` into ``out``: a panel per space, every set of
    the space reduced jointly (so they share coordinates), colour = bucket, marker = set.

    Raises:
        MissingExtraError: matplotlib or scikit-learn is not installed.
    """
    with needs_extra("matplotlib", "plots", "the latent-space plots"):
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt

    markers = ("o", "x", "+")
    colours = plt.get_cmap("tab20" if int(buckets.max()) < 20 else "turbo")
    shade = (
        buckets.numpy() % 20 / 19 if int(buckets.max()) < 20 else buckets.numpy() / max(int(buckets.max()), 1)
    )
    paths = []
    for how, label in (("pca", "PCA"), ("tsne", "t-SNE")):
        sets_of = _space_sets(spaces)
        fig, axes = plt.subplots(1, len(sets_of), figsize=(5 * len(sets_of), 4.6))
        for ax, (space, sets) in zip(axes, sets_of.items()):
            joint = _reduce(torch.cat(list(sets.values())).double().cpu().numpy(), how)  # (S N, 2)
            for k, (name, xy) in enumerate(zip(sets, np.split(joint, len(sets)))):
                ax.scatter(
                    xy[:, 0],
                    xy[:, 1],
                    c=colours(shade),
                    marker=markers[k],
                    s=14,
                    linewidths=0.8,
                    label=name,
                    alpha=0.8,
                )
            ax.set_title(f"{space} ({label})", fontsize=10)
            for handle in ax.legend(fontsize=8, loc="best").legend_handles:
                handle.set_color("0.3")  # the marker names the set; colours are buckets
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"{title}: colour = bucket (caption)", fontsize=10)
        fig.tight_layout()
        path = out / f"latent_{how}.png"
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths.append(path)
    return paths


def _spread_indices(n: int, k: int) -> Tensor:
    """``min(n, k)`` indices evenly spread over ``range(n)``."""
    return torch.linspace(0, n - 1, min(n, k)).round().long()


def evaluate_alignment(method: Align, cfg: ExperimentConfig, out: str | Path) -> tuple[dict, list[VideoCell]]:
    """Scores and figures of the module doc: ``({"align_train": {...}, "align_heldout": {...}}, cells)``;
    the figures go to ``out/latent_pca.png`` and ``out/latent_tsne.png`` (skipped with a warning when the
    ``plots`` extra is not installed)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: load_dataset(cfg.data, s) for s in ("train", "test", "heldout")}
    bucket_index: dict[str, int] = {}
    for data in splits.values():
        for c in data.captions:
            bucket_index.setdefault(c, len(bucket_index))
    all_captions = [c for d in splits.values() for c in d.captions]
    all_videos = torch.cat([d.videos for d in splits.values()])
    gallery = (
        method.embed(all_captions, all_videos).video_shared.cpu(),
        torch.tensor([bucket_index[c] for c in all_captions]),
    )
    metrics = {
        "align_gallery_videos": len(all_captions),
        "align_buckets": len(bucket_index),
        "align_objective": method.cfg.objective,
    }
    for split in ("train", "heldout"):
        if len(splits[split]):
            metrics[f"align_{split}"] = split_scores(method, cfg, split, gallery, bucket_index)
    train = splits["train"]
    pick = _spread_indices(len(train), PLOT_POINTS)
    captions = [train.captions[i] for i in pick]
    spaces = method.embed(captions, train.videos[pick])
    buckets = torch.tensor([bucket_index[c] for c in captions])
    try:
        paths = latent_figures(spaces, buckets, out, f"{method.cfg.objective}, {len(pick)} training pairs")
    except MissingExtraError as err:  # the scores stand without the figures: say so, in one line
        warnings.warn(f"latent-space figures skipped: {err}", stacklevel=2)
        paths = []
    cells = [VideoCell(f"latent spaces ({p.stem.removeprefix('latent_')}), training pairs", p) for p in paths]
    return metrics, cells
