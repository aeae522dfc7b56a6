"""The report's sample view of a retrieval run: held-out captions used as text queries, with the images they rank
first (green: the caption's own image) and, per query, the rank its own image got among the split's images. The
split's image embeddings are computed batch by batch; only the pictures shown are decoded for the grid."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modelforge.tasks.base import ReportSamples, Splits

TOP = 5


@torch.no_grad()
def retrieval_samples(task: Any, model: nn.Module, splits: Splits, count: int) -> ReportSamples:
    from modelforge.render import plots, samples

    name, dataset = samples.held_out(splits)
    if dataset is None:
        return ReportSamples(note="the recipe has no test or validation split")
    was_training = model.training
    model.eval()
    try:
        chunks = (dataset.get_batch(range(i, min(i + 256, len(dataset)))) for i in range(0, len(dataset), 256))
        image_emb, _, _, _ = task.embed(model, chunks)
        picks = samples.spread(len(dataset), min(count, 8))
        _, ids, lengths = dataset.get_batch(picks)[:3]
        queries = [task.tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
                   for row, n in zip(ids[:, 0], lengths[:, 0])]
        text_emb = task.encode_texts(model, queries)
    finally:
        model.train(was_training)
    sims = (text_emb @ image_emb.T).cpu()  # (queries, images)
    order = sims.argsort(dim=1, descending=True)
    top = min(TOP, len(dataset))
    shown, titles, right, rows = [], [], [], []
    for q, (own, query) in enumerate(zip(picks, queries)):
        rank = int((order[q] == own).nonzero()[0, 0]) + 1
        rows.append((q + 1, query, rank))
        for place, index in enumerate(order[q, :top].tolist()):
            shown.append(index)
            titles.append(f"query {q + 1}: #{place + 1}")
            right.append(index == own)
    grid = dataset.pixels(shown).numpy()  # only the pictures shown are decoded (the split may be read from disk)
    note = (f"{name} captions as text queries against its {len(dataset)} images: the top {top} of each "
            "(green = the caption's own image)")
    html = samples.table(["query", "caption", f"rank of its image (of {len(dataset)})"], rows,
                         [rank == 1 for _, _, rank in rows])
    return ReportSamples(png=plots.image_grid(grid, titles, right, columns=top), html=html, note=note)
