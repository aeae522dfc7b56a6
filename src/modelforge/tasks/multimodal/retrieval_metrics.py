"""Recall@K of image–text retrieval in both directions, from normalised embeddings.

Every image has one or more captions. Image→text: an image is a hit at K when any of its own captions is among the
K captions most similar to it. Text→image: a caption is a hit at K when its image is among the K images most
similar to it. Both are the figures CLIP and the Flickr30k/COCO retrieval benchmarks report.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

RECALL_KS = (1, 5, 10)


def recall_at_k(image_emb: torch.Tensor, text_emb: torch.Tensor, text_image: torch.Tensor,
                ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """``image_emb`` (I, E), ``text_emb`` (T, E), ``text_image`` (T,): the image index of each caption.
    Returns ``i2t_r@K`` and ``t2i_r@K`` for each K (shares in [0, 1]) and ``mean_recall`` (their mean)."""
    sims = image_emb @ text_emb.T  # (I, T)
    metrics: dict[str, float] = {}
    own = text_image[None, :] == torch.arange(len(image_emb))[:, None]  # (I, T): caption t belongs to image i
    # rank of an image's best own caption = how many captions score above it
    best_own = sims.masked_fill(~own, float("-inf")).max(dim=1).values
    i2t_rank = (sims > best_own[:, None]).sum(dim=1)
    own_score = sims[text_image, torch.arange(len(text_emb))]  # (T,): each caption with its own image
    t2i_rank = (sims.T > own_score[:, None]).sum(dim=1)
    for k in ks:
        metrics[f"i2t_r@{k}"] = float((i2t_rank < k).float().mean())
        metrics[f"t2i_r@{k}"] = float((t2i_rank < k).float().mean())
    metrics["mean_recall"] = sum(metrics.values()) / len(metrics)
    return metrics
