"""Padding for variable-length rows (token ids, waveforms): a padded batch and the true lengths; the speech batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_rows(rows: Sequence[Sequence[int] | torch.Tensor], value: float = 0, *, dtype: torch.dtype | None = None,
             min_width: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths → ``(len(rows), longest)`` filled with ``value`` after each row, and the lengths
    ``(len(rows),)``. Lists become ``dtype`` (default int64); tensors keep theirs. ``min_width`` sets the width of a
    batch with no (or only empty) rows."""
    tensors = [row if isinstance(row, torch.Tensor) else torch.tensor(list(row), dtype=dtype or torch.long)
               for row in rows]
    lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)
    width = max(int(lengths.max()) if tensors else 0, min_width)
    out_dtype = tensors[0].dtype if tensors else (dtype or torch.long)
    out = torch.full((len(tensors), width), value, dtype=out_dtype)
    for i, row in enumerate(tensors):
        out[i, : len(row)] = row
    return out, lengths


def collate_speech(items: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """(waveform, target) items → (waves, wave_lengths, targets[, target_lengths]): sequences padded, labels stacked."""
    waves, wave_lengths = pad_rows([item[0] for item in items])
    targets = [item[1] for item in items]
    if targets[0].dim() == 0:
        return waves, wave_lengths, torch.stack(targets)
    return (waves, wave_lengths, *pad_rows(targets))
