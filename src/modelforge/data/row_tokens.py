"""Row token files: the texts of a table (one id sequence per row) tokenized once into a memory-mapped token file.

Beside the flat ids of ``K.tokens`` (``data/token_file.py``: uint16/uint32, sidecar ``K.json``, atomic renames,
``build_lock``) a row file has ``K.rows``: little-endian int64 offsets, row ``r`` being ``ids[offsets[r]:
offsets[r + 1]]`` — one array for all splits, each split a ``[start, end)`` range of rows in the sidecar with its
widest row, its number of truncated texts and its mean length. Every row holds at least one id (an empty encoding is
one [UNK]). ``TokenRows`` reads a split as the in-memory padded tensor did: item ``i`` is (ids padded to the split's
widest row, length, label), and ``get_batch`` gathers a batch with one index operation on the maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from modelforge.data.text_encoding import encode_rows
from modelforge.data.token_file import (
    BATCH_CHARS,
    ArrayWriter,
    TokenFile,
    TokenSpan,
    TokenWriter,
    open_token_file,
    progress_bar,
)

KIND = "rows"
OFFSET_DTYPE = "<i8"
BATCH_ROWS = 8192  # texts handed to the batch encoder at once, at most (and at most BATCH_CHARS characters)


def offsets_path(path: Path) -> Path:
    return path.with_suffix(".rows")


def _text_batches(texts: Sequence[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_CHARS or len(batch) >= BATCH_ROWS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _write_split(tok: Any, texts: Sequence[str], max_length: int, pad_id: int, ids: TokenWriter,
                 offsets: ArrayWriter, advance: Any) -> dict[str, Any]:
    """Encode one split's texts into the two writers; returns the split's sidecar entry."""
    first_row, truncated, lengths = offsets.count - 1, 0, []
    for batch in _text_batches(texts):
        rows, cut = encode_rows(tok, batch, max_length, pad_id)
        sizes = np.fromiter((len(row) for row in rows), dtype=np.int64, count=len(rows))
        before = ids.count
        ids.write(np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(sizes.sum())))
        offsets.write(before + sizes.cumsum())  # where every row ends
        truncated, lengths = truncated + cut, [*lengths, sizes]
        advance(len(batch))
    counts = torch.from_numpy(np.concatenate(lengths)) if lengths else torch.zeros(0, dtype=torch.long)
    # the mean as the padded tensor's lengths gave it (float32), so the run summary stays the same
    return {"rows": [first_row, offsets.count - 1], "width": max(int(counts.max()) if len(counts) else 0, 1),
            "truncated": truncated, "mean_tokens": round(float(counts.float().mean()), 1)}


def write_row_tokens(path: Path, tok: Any, splits: Mapping[str, Sequence[str]], max_length: int, pad_id: int,
                     meta: dict[str, Any]) -> TokenFile:
    """Tokenize every split's texts (truncated to ``max_length``) into ``path`` and its offsets, with a progress
    bar; the sidecar (``meta`` plus the splits) is written last."""
    ids, offsets = TokenWriter(path, tok.get_vocab_size()), ArrayWriter(offsets_path(path), OFFSET_DTYPE)
    try:
        offsets.write(np.zeros(1, dtype=np.int64))
        entries = {}
        with progress_bar("tokenizing the texts", sum(map(len, splits.values())), "rows") as advance:
            for name, texts in splits.items():
                entries[name] = _write_split(tok, texts, max_length, pad_id, ids, offsets, advance)
        offsets.finish()
        return ids.commit({**meta, "kind": KIND, "max_length": max_length, "row_count": offsets.count - 1,
                           "splits": entries})
    except BaseException:
        ids.discard()
        offsets.discard()
        raise


def open_row_tokens(path: Path) -> TokenFile | None:
    """The row token file at ``path``, or None when it, its offsets or its sidecar is missing or incomplete."""
    found = open_token_file(path)
    if found is None or found.meta.get("kind") != KIND:
        return None
    try:
        expected = (int(found.meta["row_count"]) + 1) * np.dtype(OFFSET_DTYPE).itemsize
        if offsets_path(path).stat().st_size != expected:
            return None
    except (OSError, KeyError, TypeError, ValueError):
        return None
    return found


class TokenRows(Dataset):
    """One split of a row token file with its labels: item ``i`` is (ids padded to the split's widest row with
    ``pad_id``, length, label), all int64 — what a TensorDataset of the padded ids gave. Only the rows a batch takes
    are read; pickling (DataLoader workers) carries the paths, not the ids."""

    def __init__(self, tokens: TokenFile, split: str, labels: torch.Tensor, pad_id: int,
                 rows: np.ndarray | None = None):
        entry = tokens.meta["splits"][split]
        start, end = entry["rows"]
        self.ids = TokenSpan(tokens.path, tokens.meta["dtype"], 0, int(tokens.meta["tokens"]))
        self.offsets = TokenSpan(offsets_path(tokens.path), OFFSET_DTYPE, start, end + 1)
        self.tokens, self.split, self.pad_id, self.width = tokens, split, pad_id, int(entry["width"])
        self.rows = rows  # which rows of the split, in order (a subset); None: all of them
        self.targets = torch.as_tensor(labels, dtype=torch.long)
        if len(self.targets) != (end - start if rows is None else len(rows)):
            raise ValueError(f"{len(self.targets)} labels for {end - start} rows of split {split!r}")
        self._columns = np.arange(self.width)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, lengths, labels = self.get_batch([index])
        return ids[0], lengths[0], labels[0]

    def get_batch(self, indices: Sequence[int] | torch.Tensor | np.ndarray
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        local = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(local) and (local.min() < -len(self) or local.max() >= len(self)):
            raise IndexError(f"row index out of range for a split of {len(self)} rows")
        local = local % max(len(self), 1)
        rows = local if self.rows is None else self.rows[local]
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        inside = self._columns < lengths[:, None]
        ids = self.ids[np.where(inside, starts[:, None] + self._columns, 0)].astype(np.int64)
        ids[~inside] = self.pad_id
        return torch.from_numpy(ids), torch.from_numpy(lengths), self.targets[torch.from_numpy(local)]

    def subset(self, indices: Sequence[int] | np.ndarray) -> TokenRows:
        """The rows at ``indices`` (the same width: items stay what they were)."""
        local = np.asarray(indices, dtype=np.int64).reshape(-1)
        rows = local if self.rows is None else self.rows[local]
        return TokenRows(self.tokens, self.split, self.targets[torch.from_numpy(local)], self.pad_id, rows)
